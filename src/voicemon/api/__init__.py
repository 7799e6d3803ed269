"""The HTTP API: app factory, routers, auth dependencies, error mapping."""

from voicemon.api.app import create_app

__all__ = ["create_app"]
