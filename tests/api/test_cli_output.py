"""What the commands print: whole values when piped (SPEC 12), and ``voicemon watch``, whose every figure
belongs to a window it names, piped or on a terminal, and whose errors are the server's own (SPEC 5, 7).

"On a terminal" runs the command on a pseudo-terminal of a given width.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from tests.api.cli_runner import Cli, one_line
from tests.helpers import VOICEMON, ServerProcess, ev
from voicemon.cli.watch import line as watch_line
from voicemon.cli.watch import render, window
from voicemon.domain.access import SYSTEM
from voicemon.domain.timeutil import format_time
from voicemon.jobs import build_runner


def in_terminal(cli: Cli, *args: str, columns: int, timeout_s: float = 60) -> tuple[int, str]:
    """Run ``voicemon`` with a pseudo-terminal of ``columns`` as stdin, stdout and stderr."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    proc = subprocess.Popen(
        [str(VOICEMON), *args],
        cwd=cli.cwd,
        env={**cli.env, "COLUMNS": str(columns)},
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    out = b""
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal closed with the process (EIO)
                break
            if not chunk:
                break
            out += chunk
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(controller)
    return code, out.decode(errors="replace").replace("\r\n", "\n")


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    made = Cli(tmp_path)
    made.upgrade()
    return made


# --- tables -------------------------------------------------------------------------------------------

LONG_ORG = "org-" + "o" * 124  # the longest organization id a key may carry
LONG_NAME = "a key whose label is long enough to be cut in any table " * 3


def test_keys_list_piped_is_tab_separated_with_whole_values(cli: Cli) -> None:
    svc = cli.services()
    try:
        scoped = svc.keys.create(SYSTEM, "viewer", LONG_ORG, LONG_NAME).record
        revoked = svc.keys.create(SYSTEM, "ingest", None, None).record
        svc.keys.revoke(SYSTEM, revoked.key_id)
        [revoked] = [k for k in svc.keys.list(SYSTEM) if k.key_id == revoked.key_id]
    finally:
        svc.db.dispose()
    assert revoked.revoked_ms is not None

    listed = cli.run("keys", "list", COLUMNS="40")
    assert listed.returncode == 0, listed.stderr
    header, *lines = listed.stdout.splitlines()
    assert header == "key_id\trole\torganization\tname\tcreated\trevoked"
    rows = {line.split("\t")[0]: line.split("\t") for line in lines}
    assert rows == {
        scoped.key_id: [
            scoped.key_id,
            "viewer",
            LONG_ORG,
            LONG_NAME,
            format_time(scoped.created_ms),
            "",
        ],
        revoked.key_id: [
            revoked.key_id,
            "ingest",
            "(all)",
            "",
            format_time(revoked.created_ms),
            format_time(revoked.revoked_ms),
        ],
    }
    # The first column is what keys revoke takes.
    ids = subprocess.run(["cut", "-f1"], input=listed.stdout, capture_output=True, text=True, check=True)
    assert cli.run("keys", "revoke", ids.stdout.splitlines()[1]).returncode == 0


def test_jobs_list_and_jobs_run_piped_are_tab_separated(cli: Cli) -> None:
    ran = cli.run("jobs", "run", "cleanup-events", COLUMNS="30")
    assert ran.returncode == 0, ran.stderr
    *fields, summary = ran.stdout.splitlines()
    values = dict(line.split("\t") for line in fields)
    assert list(values) == ["job", "run", "status", "target", "started", "finished"]
    assert re.fullmatch(r"[0-9a-f]{32}", values["run"]), values
    assert summary.startswith("{")

    listed = cli.run("jobs", "list", COLUMNS="30")
    assert listed.returncode == 0, listed.stderr
    header, *lines = listed.stdout.splitlines()
    assert header == "job\tschedule (UTC)\tnext run\tlast run\tstatus"
    rows = {line.split("\t")[0]: line.split("\t") for line in lines}
    svc = cli.services()
    try:
        runner = build_runner(svc)
        assert set(rows) == set(runner.jobs)
        for name, job in runner.jobs.items():
            assert rows[name][1] == job.schedule
    finally:
        svc.db.dispose()
    assert rows["cleanup-events"][3] == values["started"]
    assert rows["cleanup-events"][4] == "succeeded"
    assert rows["aggregate-hourly"][3:] == ["never", ""]


def test_keys_list_on_a_narrow_terminal_folds_instead_of_cutting(cli: Cli) -> None:
    svc = cli.services()
    try:
        key_id = svc.keys.create(SYSTEM, "viewer", LONG_ORG, LONG_NAME).record.key_id
    finally:
        svc.db.dispose()
    code, screen = in_terminal(cli, "keys", "list", columns=60)
    assert code == 0, screen
    assert "…" not in screen, screen
    assert "\t" not in screen, "a terminal gets the table"
    # The id, which names the row, is never broken; the other values fold.
    assert key_id in screen, screen
    assert LONG_ORG not in screen


# --- watch --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cli, str, dict[str, str]]]:
    """A server with a little traffic of the last minutes: one artifact through transcription to its
    end, one failed; keys by role."""
    cli = Cli(tmp_path_factory.mktemp("watch"))
    process = ServerProcess(cli.env, cli.cwd / "serve.log")
    process.start()
    try:
        svc = cli.services()
        try:
            keys = {
                "staff": svc.keys.create(SYSTEM, "staff", None, "watch").secret,
                "scoped": svc.keys.create(SYSTEM, "viewer", "org-a", "watch-scoped").secret,
            }
        finally:
            svc.db.dispose()
        now = int(time.time() * 1000)
        start = now - 2 * 1000
        events = [
            ev("artifact_received", "w1", start, organization_id="org-a"),
            ev("transcription_started", "w1", start + 100, organization_id="org-a"),
            ev("transcription_completed", "w1", start + 600, organization_id="org-a", duration_ms=500),
            ev("artifact_completed", "w1", start + 900, organization_id="org-a"),
            ev("artifact_received", "w2", start, organization_id="org-a"),
            ev("artifact_failed", "w2", start + 500, organization_id="org-a"),
        ]
        reply = httpx.post(
            f"{process.url}/v1/events",
            json={"events": events},
            headers={"Authorization": f"Bearer {keys['staff']}"},
            timeout=30,
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["accepted"] == len(events), reply.text
        yield cli, process.url, keys
    finally:
        process.stop()


WATCH_LINE = re.compile(
    r"last 60 minutes \((?P<rt_start>\S+ \S+) to (?P<rt_end>(?:\S+ )?\S+) UTC\): (?P<live>[^|]+)"
    r" \| hour in progress \((?P<h_start>\S+ \S+) to (?P<h_end>(?:\S+ )?\S+) UTC\): (?P<hour>[^|]+)"
    r" \| stuck now: (?P<stuck>\d+\+?)"
    r" \| open alerts: (?P<alerts>\d+\+?)(?: \((?P<worst>[^)]+)\))?"
)


def _utc(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)


def _end(start: str, end: str) -> datetime:
    """A window's end names its date only when it differs from the start's (a window across midnight)."""
    return _utc(end if " " in end else f"{start[:10]} {end}")


def check_watch_line(line: str) -> None:
    found = WATCH_LINE.fullmatch(line)
    assert found, line
    rt_start = _utc(found["rt_start"])
    rt_end = _end(found["rt_start"], found["rt_end"])
    minutes = (rt_end - rt_start).total_seconds() / 60
    # The 60 minutes ending now, at minute granularity: from the start of the minute 59 minutes ago.
    assert rt_start.second == 0, line
    assert 59 <= minutes <= 60, line
    assert found["live"] == "received 2, completed 1, failed 1, failure rate 50.0%, AI cost $0.00", line
    hour_start = _utc(found["h_start"])
    hour_end = _end(found["h_start"], found["h_end"])
    # The hour in progress: from its start to now.
    assert (hour_start.minute, hour_start.second) == (0, 0), line
    assert 0 <= (hour_end - hour_start).total_seconds() < 3600, line
    assert found["hour"].startswith("end to end p50 "), line
    assert found["stuck"] == "0"
    assert (found["alerts"], found["worst"]) == ("0", None)


def test_watch_piped_once_prints_one_line_naming_both_windows(
    server: tuple[Cli, str, dict[str, str]],
) -> None:
    cli, url, keys = server
    result = cli.run("watch", "--url", url, "--key", keys["staff"], "--once")
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()
    check_watch_line(line)


def test_watch_piped_prints_a_line_per_refresh(server: tuple[Cli, str, dict[str, str]]) -> None:
    cli, url, keys = server
    with subprocess.Popen(
        [str(VOICEMON), "watch", "--url", url, "--key", keys["staff"]],
        cwd=cli.cwd,
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            lines = []
            deadline = time.monotonic() + 20
            while len(lines) < 2 and time.monotonic() < deadline:
                ready, _, _ = select.select([proc.stdout], [], [], 0.5)
                if ready:
                    lines.append(proc.stdout.readline().rstrip("\n"))
            assert len(lines) == 2, lines
            assert all(WATCH_LINE.fullmatch(line) for line in lines), lines
            proc.send_signal(signal.SIGINT)
            assert proc.wait(10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


def test_watch_on_a_terminal_labels_each_section_with_its_window(
    server: tuple[Cli, str, dict[str, str]],
) -> None:
    cli, url, keys = server
    code, screen = in_terminal(cli, "watch", "--url", url, "--key", keys["staff"], "--once", columns=160)
    assert code == 0, screen
    assert re.search(
        r"last 60 minutes, \d{4}-\d\d-\d\d \d\d:\d\d:00 to (\d{4}-\d\d-\d\d )?\d\d:\d\d:\d\d UTC", screen
    ), screen
    assert re.search(r"hour in progress, \d{4}-\d\d-\d\d \d\d:00:00 to \d\d:\d\d:\d\d UTC", screen), screen
    for text in (
        "received 2",
        "completed 1",
        "failed 1",
        "end to end",
        "recent failures",
        "stuck now: 0",
        "open alerts: 0",
    ):
        assert text in screen, (text, screen)
    # No column carries a window of its own that differs from its section's.
    for mixed in ("(60 min)", "(hour)", "figures run through"):
        assert mixed not in screen, screen


@pytest.mark.parametrize(
    ("key", "args", "says"),
    [
        ("vm_0123456789abcdef_wrong", [], "401 invalid_key: the API key is not valid"),
        (
            "scoped",
            [],
            "403 forbidden_organization: an organization-scoped key must ask for its own organization_id",
        ),
    ],
    ids=["wrong-key", "scoped-key-without-its-org"],
)
def test_watch_shows_the_servers_own_error(
    server: tuple[Cli, str, dict[str, str]], key: str, args: list[str], says: str
) -> None:
    cli, url, keys = server
    result = cli.run("watch", "--url", url, "--key", keys.get(key, key), "--once", *args)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert f"error: {url}: {says}" in one_line(result.stderr), result.stderr
    assert "Client error" not in result.stderr
    assert "Traceback" not in result.stderr


def test_watch_of_a_scoped_key_for_its_own_org(server: tuple[Cli, str, dict[str, str]]) -> None:
    cli, url, keys = server
    result = cli.run("watch", "--url", url, "--key", keys["scoped"], "--org", "org-a", "--once")
    assert result.returncode == 0, result.stderr
    assert "received 2" in result.stdout


def test_watch_without_a_key_is_a_usage_error(server: tuple[Cli, str, dict[str, str]]) -> None:
    cli, url, _ = server
    result = cli.run("watch", "--url", url, "--once")
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Invalid value for '--key'" in one_line(result.stderr)


def test_a_window_across_midnight_names_the_date_of_its_end() -> None:
    assert (
        window("2026-12-02T14:03:00.000Z", "2026-12-02T15:02:13.000Z")
        == "2026-12-02 14:03:00 to 15:02:13 UTC"
    )
    assert (
        window("2026-12-02T23:24:00.000Z", "2026-12-03T00:23:55.000Z")
        == "2026-12-02 23:24:00 to 2026-12-03 00:23:55 UTC"
    )
    check_watch_line(
        "last 60 minutes (2026-12-02 23:24:00 to 2026-12-03 00:23:51 UTC): received 2, completed 1, failed 1,"
        " failure rate 50.0%, AI cost $0.00 | hour in progress (2026-12-03 00:00:00 to 00:23:51 UTC):"
        " end to end p50 907 ms | stuck now: 0 | open alerts: 0"
    )


def test_watch_names_the_open_alerts_worst_first() -> None:
    """What a frame with open alerts prints, from the API's own bodies."""
    frame = {
        "realtime": {
            "window_start": "2026-12-07T01:41:00.000Z",
            "window_end": "2026-12-07T02:40:00.000Z",
            "counts": dict.fromkeys(
                (
                    "artifacts_received",
                    "artifacts_completed",
                    "artifacts_failed",
                    "transcriptions_completed",
                    "claims_extracted",
                    "entities_resolved",
                    "drafts_generated",
                    "failures",
                ),
                0,
            )
            | {"ai_cost_usd": 0.0},
            "failure_rate": 0.0,
        },
        "current": {
            "period_start": "2026-12-07T02:00:00.000Z",
            "period_end": "2026-12-07T02:40:00.000Z",
            "stages": [],
            "end_to_end_latency_ms": {"count": 0, "p50": None, "p95": None, "p99": None},
        },
        "failed": {"items": [], "next_cursor": None},
        "stuck": {"items": [], "next_cursor": None},
        "alerts": {
            "items": [
                {
                    "severity": "high",
                    "rule": "stage_failure_rate",
                    "stage": "transcription",
                    "state": "firing",
                    "started_at": "2026-12-07T02:35:00.000Z",
                    "message": "Transcription failure rate 40.0 %",
                    "organization_id": "org-a",
                    "organization_name": "Acme",
                    "acknowledged_by": None,
                },
                {
                    "severity": "critical",
                    "rule": "failure_rate",
                    "stage": None,
                    "state": "acknowledged",
                    "started_at": "2026-12-07T02:30:00.000Z",
                    "message": "Failure rate 31.2 %",
                    "acknowledged_by": "alice",
                },
            ],
            "next_cursor": None,
        },
    }
    printed = watch_line(frame)
    assert printed.endswith(" | open alerts: 2 (critical 1, high 1)"), printed
    screen = Console(width=160, record=True, color_system=None)
    screen.print(render(frame, "http://127.0.0.1:8080"))
    text = screen.export_text()
    assert "open alerts: 2" in text
    assert "stage_failure_rate/transcription" in text
    assert "Acme" in text
    assert "ack alice" in text
    assert "platform" in text
