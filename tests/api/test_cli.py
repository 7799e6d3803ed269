"""The real ``voicemon`` console script, run as a subprocess on a SQLite file (SPEC 12).

Exit codes: 0 ok, 1 failure, 2 usage error. Checks of what a command did are made in-process on the same
database file, which is faster than another CLI call.
"""

from __future__ import annotations

import json
import os
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

from tests.helpers import VOICEMON, free_port
from voicemon.api import create_app
from voicemon.domain.access import SYSTEM
from voicemon.jobs import build_runner
from voicemon.service import Services
from voicemon.settings import Settings
from voicemon.storage import migrate

KEY_LINE = re.compile(r"vm_[0-9a-f]{16}_[A-Za-z0-9_-]{20,}")
RUN_TIMEOUT_S = 60
SERVE_START_TIMEOUT_S = 30


class Cli:
    """Runs ``voicemon`` against one SQLite file, with no other VOICEMON_* setting leaking in."""

    def __init__(self, tmp_path: Path) -> None:
        self.cwd = tmp_path
        self.url = f"sqlite:///{tmp_path}/cli.db"
        env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEMON_")}
        # Wide and plain, so Rich tables are not wrapped or coloured.
        env.update(VOICEMON_DATABASE_URL=self.url, COLUMNS="200", NO_COLOR="1", TERM="dumb")
        self.env = env

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(VOICEMON), *args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            check=False,
        )

    def services(self) -> Services:
        """In-process services on the same file, schema migrated; the caller disposes of ``db``."""
        svc = Services(Settings(database_url=self.url, key_cache_s=0))
        migrate.upgrade(svc.db)
        return svc


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    assert VOICEMON.exists(), f"console script not installed at {VOICEMON}"
    return Cli(tmp_path)


def _status_with_key(url: str, key: str, path: str = "/v1/orgs") -> int:
    app = create_app(Settings(database_url=url, key_cache_s=0))
    with TestClient(app) as client:
        return client.get(path, headers={"Authorization": f"Bearer {key}"}).status_code


def test_db_upgrade_creates_the_schema(cli: Cli) -> None:
    result = cli.run("db", "upgrade")
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout
    engine = create_engine(cli.url)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"events", "artifacts", "api_keys", "orgs", "alembic_version"} <= tables


def test_keys_create_prints_the_key_alone_last_and_it_works(cli: Cli) -> None:
    # On a file that does not exist yet: the command migrates it first.
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
    ("args", "field"),
    [
        (["--role", "bogus"], "role"),
        (["--role", "staff", "--org", "org-a"], "org"),
    ],
)
def test_keys_create_refused_exits_1_naming_the_field(cli: Cli, args: list[str], field: str) -> None:
    result = cli.run("keys", "create", *args)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert re.search(rf"\b{field}\b", result.stderr), result.stderr
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
    ("args", "field"),
    [
        (["jobs", "run", "aggregate-hourly", "--target", "yesterday"], "target"),
        (["jobs", "run", "aggregate-hourly", "--target", "1970-01-01T00:00:00Z"], "target"),
        (["jobs", "run", "no-such-job"], None),
    ],
    ids=["unreadable-target", "target-too-old", "unknown-job"],
)
def test_jobs_run_refused_exits_1_naming_the_field(cli: Cli, args: list[str], field: str | None) -> None:
    result = cli.run(*args)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "error:" in result.stderr
    if field is not None:
        assert f"error: {field}: " in result.stderr, result.stderr
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
def served(cli: Cli, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
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
    cli: Cli, served: tuple[str, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
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
