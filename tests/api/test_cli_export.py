"""``voicemon export`` (SPEC 17): the same file as the HTTP export, a progress bar on stderr, a whole file
or none, and usage errors that name the option."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from rich.console import Console

from tests.api.cli_runner import Cli
from tests.conftest import STAFF
from tests.helpers import ev
from voicemon.cli.export import write_export
from voicemon.domain.access import SYSTEM
from voicemon.domain.exports import ExportFormat, ExportKind, Row
from voicemon.domain.records import EventFilter
from voicemon.domain.timeutil import MINUTE_MS
from voicemon.errors import StorageError
from voicemon.service.exports import Export


@pytest.fixture
def cli(tmp_path: Path, db_url: str) -> Cli:
    cli = Cli(tmp_path, db_url)
    svc = cli.services()
    svc.start(migrate_schema=False)
    try:
        items = []
        now_ms = int(time.time() * 1000)  # the command runs on the real clock
        for i in range(30):
            org = "org-a" if i % 2 else "org-b"
            t = now_ms - 50 * MINUTE_MS + i * 60_000
            items += [
                ev("artifact_received", f"c-{i}", t, organization_id=org),
                ev("transcription_completed", f"c-{i}", t + 2000, organization_id=org, duration_ms=1800),
            ]
        assert svc.ingest_blocking(items, STAFF).accepted == 60
    finally:
        svc.stop()
    return cli


def _http_file(cli: Cli, fmt: ExportFormat, f: EventFilter) -> bytes:
    """What ``GET /v1/exports/events`` sends for the same filter (the same use case and encoder)."""
    svc = cli.services()
    try:
        return b"".join(svc.exports.events(SYSTEM, f).chunks(fmt))
    finally:
        svc.db.dispose()


def test_an_export_to_a_file_is_the_http_file_and_says_how_many_rows(cli: Cli) -> None:
    done = cli.run("export", "events", "--format", "csv", "--org", "org-a", "-o", "events.csv")
    assert done.returncode == 0, done.stderr
    written = (cli.cwd / "events.csv").read_bytes()
    assert written == _http_file(cli, ExportFormat.CSV, EventFilter(organization_id="org-a"))
    assert written.count(b"\r\n") == 31
    assert "exported 30 events rows to events.csv" in done.stderr
    assert [p.name for p in cli.cwd.iterdir() if p.name.endswith(".partial")] == []


def test_an_export_to_stdout_keeps_the_filters(cli: Cli) -> None:
    done = cli.run("export", "artifacts", "--format", "jsonl", "--org", "org-b", "--status", "transcribed")
    assert done.returncode == 0, done.stderr
    lines = [orjson.loads(line) for line in done.stdout.splitlines()]
    assert len(lines) == 15
    assert {(r["organization_id"], r["status"]) for r in lines} == {("org-b", "transcribed")}
    history = cli.run("export", "history", "--format", "csv", "--period", "hourly", "--org", "org-a")
    assert history.returncode == 0, history.stderr
    assert history.stdout.startswith("period_type,period_start,period_end,organization_id,")


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (("orgs", "--format", "csv", "--org", "org-a"), "--org"),
        (("artifacts", "--format", "csv", "--start", "2026-12-01T00:00:00Z"), "--start"),
        (("events", "--format", "csv", "--type", "nope"), "--type"),
        (("events", "--format", "csv", "--start", "yesterday"), "--start"),
        (("artifacts", "--format", "csv", "--failed-stage", "lunch"), "--failed-stage"),
        (("events", "--format", "xlsx"), "--format"),
    ],
)
def test_a_wrong_option_is_a_usage_error_naming_it(cli: Cli, args: tuple[str, ...], option: str) -> None:
    done = cli.run("export", *args, "-o", "out.file")
    assert done.returncode == 2, done.stderr
    assert option in done.stderr
    assert not (cli.cwd / "out.file").exists()


def _failing(after: int) -> Export:
    def rows() -> Iterator[Row]:
        for i in range(after):
            yield (f"e-{i}", "artifact_received", *([None] * 21))
        raise StorageError("database read failed: OperationalError")

    return Export(ExportKind.EVENTS, rows, lambda: after + 1)


def test_a_failed_export_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    target = tmp_path / "events.csv"
    target.write_text("yesterday's file\n")
    with pytest.raises(StorageError):
        write_export(_failing(1500), ExportFormat.CSV, target, Console(file=io.StringIO()))
    assert target.read_text() == "yesterday's file\n"
    assert [p.name for p in tmp_path.iterdir()] == ["events.csv"]


def test_the_progress_bar_goes_to_a_terminal_on_stderr(tmp_path: Path) -> None:
    screen = io.StringIO()
    rows = write_export(
        _whole(2500), ExportFormat.JSONL, tmp_path / "e.jsonl", Console(file=screen, force_terminal=True)
    )
    assert rows == 2500
    assert "exporting events" in screen.getvalue()
    assert len((tmp_path / "e.jsonl").read_bytes().splitlines()) == 2500


def _whole(count: int) -> Export:
    def rows() -> Iterator[Row]:
        for i in range(count):
            yield (f"e-{i}", "artifact_received", *([None] * 21))

    return Export(ExportKind.EVENTS, rows, lambda: count)


def test_the_file_gets_the_usual_permissions_and_a_missing_folder_is_a_clean_error(cli: Cli) -> None:
    done = cli.run("export", "events", "--format", "jsonl", "-o", "new.jsonl")
    assert done.returncode == 0, done.stderr
    assert (cli.cwd / "new.jsonl").stat().st_mode & 0o777 == 0o666 & ~_umask()
    missing = cli.run("export", "events", "--format", "csv", "-o", "no/such/folder/out.csv")
    assert missing.returncode == 1
    assert "the export failed" in missing.stderr
    assert "Traceback" not in missing.stderr


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
