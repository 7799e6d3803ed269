"""The real ``voicemon`` console script, run as a subprocess on a SQLite file (SPEC 12).

Exit codes: 0 ok, 1 failure, 2 usage error (in the parser's own form: a usage line, then the option at
fault and the rule). Checks of what a command did are made in-process on the same database file, which is
faster than another CLI call. Only ``db upgrade`` and the servers make the schema: the ``cli`` fixture
makes it beforehand, ``empty_cli`` has no database file at all.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, inspect

from tests.api.cli_runner import Cli, one_line
from tests.helpers import VOICEMON, ev, free_port
from voicemon.api import create_app
from voicemon.domain.access import SYSTEM
from voicemon.domain.timeutil import HOUR_MS, format_time
from voicemon.jobs import build_runner
from voicemon.settings import Settings

KEY_LINE = re.compile(r"vm_[0-9a-f]{16}_[A-Za-z0-9_-]{20,}")
SERVE_START_TIMEOUT_S = 30


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """A SQLite file with the schema already made (only ``db upgrade`` and the servers make it)."""
    assert VOICEMON.exists(), f"console script not installed at {VOICEMON}"
    made = Cli(tmp_path)
    made.upgrade()
    return made


@pytest.fixture
def empty_cli(tmp_path: Path) -> Cli:
    """No database file at all."""
    assert VOICEMON.exists(), f"console script not installed at {VOICEMON}"
    return Cli(tmp_path)


def _status_with_key(url: str, key: str, path: str = "/v1/orgs") -> int:
    app = create_app(Settings(database_url=url, key_cache_s=0))
    with TestClient(app) as client:
        return client.get(path, headers={"Authorization": f"Bearer {key}"}).status_code


def test_db_upgrade_creates_the_schema_then_is_up_to_date(empty_cli: Cli) -> None:
    result = empty_cli.run("db", "upgrade")
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"created the schema at revision \w+\n", result.stdout), result.stdout
    engine = create_engine(empty_cli.url)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"events", "artifacts", "api_keys", "orgs", "alembic_version"} <= tables

    again = empty_cli.run("db", "upgrade")
    assert again.returncode == 0, again.stderr
    revision = result.stdout.split()[-1]
    assert again.stdout == f"the schema is up to date (revision {revision})\n"


def test_keys_create_prints_the_key_alone_last_and_it_works(cli: Cli) -> None:
    result = cli.run("keys", "create", "--role", "staff", "--name", "x")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) >= 2
    key = lines[-1]
    assert KEY_LINE.fullmatch(key), lines
    key_id = key.split("_")[1]
    assert key not in "\n".join(lines[:-1]), "the key is printed once"

    assert _status_with_key(cli.url, key) == 200
    assert _status_with_key(cli.url, key[:-1] + ("A" if key[-1] != "A" else "B")) == 401

    listed = cli.run("keys", "list")
    assert listed.returncode == 0, listed.stderr
    assert key_id in listed.stdout
    assert "staff" in listed.stdout
    assert re.search(rf"\b{key_id}\b.*\bx\b", listed.stdout), listed.stdout
    assert key.split("_", 2)[2] not in listed.stdout, "keys list must never show a secret"


def test_keys_create_scoped_viewer_is_scoped(cli: Cli) -> None:
    result = cli.run("keys", "create", "--role", "viewer", "--org", "org-a")
    assert result.returncode == 0, result.stderr
    key = result.stdout.splitlines()[-1]
    assert KEY_LINE.fullmatch(key)
    assert _status_with_key(cli.url, key, "/v1/metrics/realtime?organization_id=org-a") == 200
    assert _status_with_key(cli.url, key, "/v1/metrics/realtime") == 403
    assert _status_with_key(cli.url, key, "/v1/orgs") == 403


@pytest.mark.parametrize(
    ("args", "option", "rule"),
    [
        (["--role", "admin"], "--role", "'admin' is not one of 'ingest', 'viewer', 'staff'"),
        (["--role", "staff", "--org", "org-a"], "--org", "staff keys are platform-wide"),
        (["--role", "viewer", "--name", "a\tb"], "--name", "control character"),
        (["--role", "viewer", "--org", "x" * 129], "--org", "must be 1 to 128 characters"),
    ],
    ids=["unknown-role", "scoped-staff", "control-character-in-name", "org-too-long"],
)
def test_keys_create_with_a_bad_option_is_a_usage_error(
    cli: Cli, args: list[str], option: str, rule: str
) -> None:
    """Exit code 2 and the parser's own form: the usage line, the option and the rule it broke."""
    result = cli.run("keys", "create", *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    stderr = one_line(result.stderr)
    assert "Usage: voicemon keys create" in stderr, stderr
    assert f"Invalid value for '{option}':" in stderr, stderr
    assert rule in stderr, stderr
    assert "Traceback" not in stderr
    assert not KEY_LINE.search(result.stdout), "no key may be printed"
    svc = cli.services()
    try:
        assert svc.keys.list(SYSTEM) == []
    finally:
        svc.db.dispose()


def test_keys_revoke_then_the_key_is_refused(cli: Cli) -> None:
    svc = cli.services()
    try:
        created = svc.keys.create(SYSTEM, "viewer", None, "to-revoke")
        kept = svc.keys.create(SYSTEM, "viewer", None, "kept")
    finally:
        svc.db.dispose()
    key_id = created.record.key_id
    assert _status_with_key(cli.url, created.secret, "/v1/events") == 200

    result = cli.run("keys", "revoke", key_id)
    assert result.returncode == 0, result.stderr
    assert key_id in result.stdout

    assert _status_with_key(cli.url, created.secret, "/v1/events") == 401
    assert _status_with_key(cli.url, kept.secret, "/v1/events") == 200
    svc = cli.services()
    try:
        revoked = {k.key_id: k.revoked_ms for k in svc.keys.list(SYSTEM)}
    finally:
        svc.db.dispose()
    assert revoked[key_id] is not None
    assert revoked[kept.record.key_id] is None

    again = cli.run("keys", "revoke", key_id)
    assert again.returncode == 1, again.stdout
    assert key_id in again.stderr


def test_keys_revoke_unknown_id_exits_1(cli: Cli) -> None:
    result = cli.run("keys", "revoke", "0123456789abcdef")
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "0123456789abcdef" in result.stderr
    assert "Traceback" not in result.stderr


def test_jobs_run_prints_how_the_run_went(cli: Cli) -> None:
    result = cli.run("jobs", "run", "cleanup-events")
    assert result.returncode == 0, (result.stdout, result.stderr)
    *grid, summary = result.stdout.splitlines()
    lines = dict(line.strip().split(None, 1) for line in grid if line.strip())
    assert lines["job"] == "cleanup-events"
    assert lines["status"] == "succeeded"
    assert lines["target"] == "(now)"
    # The job's own summary, as JSON, on the last line.
    assert isinstance(json.loads(summary), dict), summary
    svc = cli.services()
    try:
        runs = build_runner(svc).runs(SYSTEM, "cleanup-events", 10)
    finally:
        svc.db.dispose()
    assert [r.run_id for r in runs] == [lines["run"]]


@pytest.mark.parametrize(
    ("args", "hint", "rule"),
    [
        (["aggregate-hourly", "--target", "yesterday"], "--target", "must be an RFC 3339 time"),
        (["aggregate-hourly", "--target", "2026-12-01T00:00:00"], "--target", "must carry a UTC offset"),
        (["no-such-job"], "NAME", "no job named 'no-such-job'; jobs: aggregate-hourly, aggregate-daily"),
        (
            ["cleanup-events", "--target", "2026-12-01T00:00:00Z"],
            "--target",
            "cleanup-events takes no target",
        ),
    ],
    ids=["unreadable-target", "naive-target", "unknown-job", "target-for-a-job-without-one"],
)
def test_jobs_run_with_a_bad_argument_is_a_usage_error(
    cli: Cli, args: list[str], hint: str, rule: str
) -> None:
    result = cli.run("jobs", "run", *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    stderr = one_line(result.stderr)
    assert "Usage: voicemon jobs run" in stderr, stderr
    assert f"Invalid value for '{hint}': {rule}" in stderr, stderr
    assert "Traceback" not in stderr
    svc = cli.services()
    try:
        assert all(build_runner(svc).runs(SYSTEM, job, 10) == [] for job in build_runner(svc).jobs)
    finally:
        svc.db.dispose()


def test_unknown_job_is_a_usage_error_even_without_a_schema(empty_cli: Cli) -> None:
    """The command line is checked before the database: a wrong name says so, not "db upgrade"."""
    result = empty_cli.run("jobs", "run", "no-such-job")
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "no job named 'no-such-job'" in one_line(result.stderr)


@pytest.mark.parametrize(
    ("target", "says"),
    [
        (
            "1970-01-01T00:00:00Z",
            "error: target: the hourly period starting 1970-01-01T00:00:00.000Z is older",
        ),
        ("now", "is not complete yet"),
        ("in 3 hours", "is not complete yet"),
    ],
    ids=["too-old", "hour-in-progress", "future-hour"],
)
def test_jobs_run_refusing_a_good_target_is_a_failure(cli: Cli, target: str, says: str) -> None:
    """A target that parses but that the job cannot build now is exit code 1, with the job's reason."""
    # Read the clock when the test runs, not when it is collected: the hour may have ended in between.
    now_ms = int(time.time() * 1000)
    target = {"now": format_time(now_ms), "in 3 hours": str(now_ms + 3 * HOUR_MS)}.get(target, target)
    result = cli.run("jobs", "run", "aggregate-hourly", "--target", target)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert says in one_line(result.stderr), result.stderr
    assert "Usage:" not in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["keys", "create"],  # missing --role
        ["no-such-command"],
        ["serve", "--port", "not-a-number"],
    ],
    ids=["missing-option", "unknown-command", "bad-option-value"],
)
def test_usage_errors_exit_2(cli: Cli, args: list[str]) -> None:
    result = cli.run(*args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Usage:" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def served(empty_cli: Cli, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    cli = empty_cli
    port = free_port()
    with (tmp_path / "serve.log").open("wb") as log:
        proc = subprocess.Popen(
            [str(VOICEMON), "serve", "--host", "127.0.0.1", "--port", str(port), "--no-scheduler"],
            cwd=cli.cwd,
            env=cli.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield f"http://127.0.0.1:{port}", proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


def _wait_for_health(url: str, proc: subprocess.Popen[bytes], log: Path) -> httpx.Response:
    deadline = time.monotonic() + SERVE_START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"serve exited early: {log.read_text(errors='replace')}"
        try:
            return httpx.get(f"{url}/healthz", timeout=1.0)
        except httpx.TransportError:
            time.sleep(0.1)
    pytest.fail(f"serve did not answer within {SERVE_START_TIMEOUT_S} s: {log.read_text(errors='replace')}")


def test_serve_answers_healthz_and_stops_on_sigterm(
    empty_cli: Cli, served: tuple[str, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    cli = empty_cli
    url, proc = served
    health = _wait_for_health(url, proc, tmp_path / "serve.log")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "database": "ok"}

    # The server migrated the file at start; a key made on it now is accepted over HTTP.
    svc = cli.services()
    try:
        key = svc.keys.create(SYSTEM, "staff", None, "serve-test").secret
    finally:
        svc.db.dispose()
    assert httpx.get(f"{url}/v1/orgs", headers={"Authorization": f"Bearer {key}"}).json() == {"items": []}
    assert httpx.get(f"{url}/v1/orgs").status_code == 401

    proc.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises the signal so the exit status tells why it stopped.
    assert proc.wait(timeout=15) in {0, -signal.SIGTERM}


def test_alerts_list_and_ack_name_the_person_and_refuse_a_second_ack(cli: Cli) -> None:
    svc = cli.services()
    try:
        now = svc.clock.now_ms()
        batch = []
        for i in range(20):
            batch += [
                ev("artifact_received", f"cli-{i}", now - 120_000, organization_id="org-cli"),
                ev("artifact_failed", f"cli-{i}", now - 60_000, organization_id="org-cli"),
            ]
        svc.start(migrate_schema=False)
        svc.ingest_blocking(batch, SYSTEM)
        svc.orgs.put(SYSTEM, "org-cli", "Clinic")
        svc.alerts.evaluate(SYSTEM)
    finally:
        svc.stop()

    listed = cli.run("alerts", "list")
    assert listed.returncode == 0, listed.stderr
    header, *rows = [line.split("\t") for line in listed.stdout.splitlines()]
    assert header == ["alert_id", "state", "severity", "rule", "where", "started", "message"]
    by_where = {row[4]: row for row in rows}
    assert set(by_where) == {"Clinic", "platform"}
    alert_id = by_where["Clinic"][0]
    assert by_where["Clinic"][1:4] == ["firing", "critical", "failure_rate"]

    acked = cli.run("alerts", "ack", alert_id, "--by", "alice", "--note", "provider outage")
    assert acked.returncode == 0, acked.stderr
    assert acked.stdout == f"acknowledged {alert_id} (failure_rate) as alice\n"
    again = cli.run("alerts", "ack", alert_id, "--by", "bob")
    assert again.returncode == 1
    assert "acknowledged already" in one_line(again.stderr)

    still_open = cli.run("alerts", "list", "--org", "org-cli")
    [row] = [line.split("\t") for line in still_open.stdout.splitlines()[1:]]
    assert row[:2] == [alert_id, "acknowledged"]
    check = cli.services()
    try:
        detail = check.alerts.get(SYSTEM, alert_id)
    finally:
        check.db.dispose()
    assert (detail.alert.acknowledged_by, detail.alert.ack_note) == ("alice", "provider outage")
    assert cli.run("alerts", "list", "--state", "bogus").returncode == 2
    assert cli.run("alerts", "ack", alert_id).returncode == 2  # --by is required


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"VOICEMON_STUCK_AFTER_S": "abc"}, "VOICEMON_STUCK_AFTER_S: Input should be a valid integer"),
        ({"VOICEMON_EVENT_RETENTION_H": "0"}, "VOICEMON_EVENT_RETENTION_H: Input should be greater than"),
    ],
    ids=["not-a-number", "out-of-range"],
)
def test_a_bad_setting_names_the_variable_without_a_traceback(
    cli: Cli, env: dict[str, str], says: str
) -> None:
    result = cli.run("keys", "list", **env)
    assert result.returncode == 1, result.stdout
    assert says in one_line(result.stderr), result.stderr
    assert "Traceback" not in result.stderr
