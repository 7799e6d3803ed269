"""The ``voicemon`` command line (Typer)."""

from voicemon.cli.main import app, main

__all__ = ["app", "main"]
