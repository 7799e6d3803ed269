"""How commands print tables: a Rich table on a terminal, tab-separated lines when piped.

Piped, every value is whole (``keys revoke`` needs the id ``keys list`` shows), one row a line, the
columns split by a tab, with a header line first: ``voicemon keys list | cut -f1`` gives the ids.
On a terminal, the first column (what names the row: a key id, a job) is never broken, and a value too
wide for another column folds onto the next line instead of being cut.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence

import typer
from rich.console import Console
from rich.table import Table


def to_terminal() -> bool:
    """True when stdout is a terminal (a person reads it), False when piped or redirected."""
    return sys.stdout.isatty()


def print_table(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """Rows under a header; see the module docstring for the two forms."""
    if not to_terminal():
        for line in (columns, *rows):
            typer.echo("\t".join(line))
        return
    table = Table()
    for i, name in enumerate(columns):
        table.add_column(name, no_wrap=i == 0, overflow="fold")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def print_fields(fields: Iterable[tuple[str, str]]) -> None:
    """One ``label value`` pair a line: aligned on a terminal, ``label<TAB>value`` when piped."""
    if not to_terminal():
        for label, value in fields:
            typer.echo(f"{label}\t{value}")
        return
    table = Table.grid(padding=(0, 2))
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    for label, value in fields:
        table.add_row(label, value)
    Console().print(table)
