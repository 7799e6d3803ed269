"""``voicemon export``: an export file (SPEC 17) from the configured database, with progress on stderr.

The file is exactly what ``GET /v1/exports/{kind}`` gives (the same use cases and encoders). Written to
``-o FILE``, it goes to a temporary file beside FILE first and takes FILE's name only once the last row
is in: a failed export leaves no FILE, never a short one. To stdout, a failure ends the command with exit
code 1 after what was written (so a pipeline's ``set -o pipefail`` sees it).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from voicemon.domain.exports import ExportFormat
from voicemon.service.exports import Export


def write_export(export: Export, fmt: ExportFormat, output: Path | None, err: Console) -> int:
    """Write the file; returns its row count. Raises what the read raises, with ``output`` untouched."""
    total = export.count()
    progress = Progress(
        TextColumn(f"exporting {export.kind.value}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )
    task = progress.add_task("rows", total=total)
    rows = 0

    def counted(n: int) -> None:
        nonlocal rows
        rows += n
        progress.update(task, completed=rows)

    with progress, _destination(output) as out:
        for chunk in export.chunks(fmt, counted):
            out.write(chunk)
    return rows


def _mode_for(output: Path) -> int:
    """The permissions FILE would get from a plain ``open`` (its own if it exists), not mkstemp's 0600."""
    try:
        return output.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextmanager
def _destination(output: Path | None) -> Iterator[IO[bytes]]:
    if output is None:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    directory = output.resolve().parent
    handle, partial = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".partial", dir=directory)
    try:
        os.fchmod(handle, _mode_for(output))
        with os.fdopen(handle, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, output)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
