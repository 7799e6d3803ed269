"""``voicemon demo`` end to end: a server, a backfilled day with its organizations named, a live simulated
pipeline and a full retry that the pipeline honours by rebuilding the artifact's derived data from scratch
(SPEC 9, 11); run again in the same directory, it starts from a fresh database (SPEC 11).

The demo always runs on SQLite, on its own files in its working directory (``tmp_path``) whatever
VOICEMON_DATABASE_URL says, so this test runs on the sqlite run only: the postgresql run would repeat the
very same thing.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import BACKEND
from tests.helpers import VOICEMON, free_port

DERIVED_TABLES = ("transcripts", "claims", "resolutions", "drafts")
DEMO_DB, DEMO_SIM_DB = "voicemon-demo.db", "voicemon-demo-sim.db"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(BACKEND == "postgresql", reason="the demo runs on SQLite; the sqlite run covers it"),
]


def poll(check: Callable[[], Any], timeout_s: float, what: str, every_s: float = 1.0) -> Any:
    """Call ``check`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(every_s)


class Lines:
    """The lines a process writes to stdout, read on a thread so that waiting for one is bounded."""

    def __init__(self, stream: Any) -> None:
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def value_of(self, prefix: str, deadline: float) -> str:
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no {prefix!r} line in time")
            if line is None:
                pytest.fail(f"stdout ended before a {prefix!r} line")
            if line.startswith(prefix):
                return line.removeprefix(prefix).strip()


def derived_rows(path: Path, artifact_id: str) -> dict[str, list[str]]:
    """run_id of each derived row of the artifact, by table, read from the simulator's own file."""
    conn = sqlite3.connect(path, timeout=10)
    try:
        return {
            table: [
                run_id
                for (run_id,) in conn.execute(
                    f"SELECT run_id FROM {table} WHERE artifact_id = ? ORDER BY rowid", (artifact_id,)
                )
            ]
            for table in DERIVED_TABLES
        }
    finally:
        conn.close()


def children_of(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (Linux /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def check_the_server_is_the_guarded_one(port: int) -> None:
    """The demo runs the server ``serve`` runs: a request the HTTP parser refuses gets its JSON 400."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Bad: a\x01b\r\n\r\n")
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), reply
    assert b"content-type: application/json" in head.lower(), reply
    assert orjson.loads(body)["error"]["code"] == "bad_request"


def a_database_of_the_users(path: Path) -> bytes:
    """A SQLite file that VOICEMON_DATABASE_URL names, with something in it; returns its bytes."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("CREATE TABLE notes (body TEXT)")
        conn.execute("INSERT INTO notes VALUES ('keep me')")
        conn.commit()
    finally:
        conn.close()
    return path.read_bytes()


def test_demo_backfills_serves_and_honours_a_full_retry(tmp_path: Path) -> None:
    port = free_port()
    users_db = tmp_path / "mine.db"
    users_bytes = a_database_of_the_users(users_db)
    env = {**os.environ, "VOICEMON_DATABASE_URL": f"sqlite:///{users_db}"}
    stderr_log = tmp_path / "demo.stderr"
    argv = [str(VOICEMON), "demo", "--port", str(port), "--hours", "24", "--rate", "60", "--seed", "7"]
    with stderr_log.open("wb") as err:
        proc = subprocess.Popen(
            [*argv, "--no-view"],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    try:
        lines = Lines(proc.stdout)
        started = time.monotonic() + 90
        assert lines.value_of("demo database: ", started) == f"{tmp_path / DEMO_DB} (new)"
        url = lines.value_of("URL: ", started)
        key = lines.value_of("KEY: ", started)
        assert url == f"http://127.0.0.1:{port}"
        assert lines.value_of("DASHBOARD: ", started) == f"{url}/ (sign in with the key)"
        check_the_server_is_the_guarded_one(port)
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
            check_the_day_was_backfilled_and_aggregated(http)
            check_the_organizations_are_named(http)
            artifact_id, retry_id = retry_a_failed_artifact(http, tmp_path / DEMO_SIM_DB)
            check_watch_prints_a_line(url, key, env)

        children = children_of(proc.pid)
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(20)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the demo did not stop within 20 s of SIGINT:\n{stderr_log.read_text()}")
        assert code == 0, stderr_log.read_text()
        assert stderr_log.read_text().rstrip().endswith("stopped")
        for child in children:
            assert not Path(f"/proc/{child}").exists(), f"child process {child} outlived the demo"
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/healthz", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    # The derived data of the retried artifact, as the pipeline left it when it stopped.
    rows = derived_rows(tmp_path / DEMO_SIM_DB, artifact_id)
    assert all(rows[table] for table in DERIVED_TABLES), rows
    assert {run_id for run_ids in rows.values() for run_id in run_ids} == {retry_id}
    assert users_db.read_bytes() == users_bytes, "the demo wrote to the database of VOICEMON_DATABASE_URL"

    check_a_second_run_starts_afresh(tmp_path, env, key, artifact_id)
    assert users_db.read_bytes() == users_bytes, "the demo wrote to the database of VOICEMON_DATABASE_URL"


def check_a_second_run_starts_afresh(
    tmp_path: Path, env: dict[str, str], old_key: str, old_artifact: str
) -> None:
    """The same command again in the same directory: it says it starts afresh, and the first run's key,
    history and derived data are gone (a short backfill and no live traffic, to be quick)."""
    port = free_port()
    stderr_log = tmp_path / "demo-again.stderr"
    argv = [str(VOICEMON), "demo", "--port", str(port), "--hours", "2", "--rate", "0", "--no-view"]
    with stderr_log.open("wb") as err:
        proc = subprocess.Popen(
            argv,
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    try:
        lines = Lines(proc.stdout)
        started = time.monotonic() + 90
        said = lines.value_of("removed the previous demo database ", started)
        assert said == f"{tmp_path / DEMO_DB}; starting afresh"
        url = lines.value_of("URL: ", started)
        key = lines.value_of("KEY: ", started)
        assert key != old_key
        assert httpx.get(f"{url}/v1/orgs", headers={"Authorization": f"Bearer {old_key}"}).status_code == 401
        poll(lambda: "backfilled" in stderr_log.read_text(), 120, "the second backfill", every_s=0.5)
        start = (datetime.now(UTC) - timedelta(hours=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
        r = httpx.get(
            f"{url}/v1/metrics/summary",
            params={"period": "hourly", "start": start},
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        # About 150 an hour for 2 hours: the first run's day (more than 1000) is not there any more.
        assert 0 < r.json()["artifacts_received"] < 1000, r.json()
        assert derived_rows(tmp_path / DEMO_SIM_DB, old_artifact) == {t: [] for t in DERIVED_TABLES}
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0, stderr_log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def check_the_organizations_are_named(http: httpx.Client) -> None:
    """Every organization of the demo is in the directory, and the breakdown shows its name."""
    r = http.get("/v1/orgs")
    assert r.status_code == 200, r.text
    named = {o["organization_id"]: o["name"] for o in r.json()["items"]}
    assert len(named) >= 8, named
    assert all(name.strip() and name != "Unknown" for name in named.values()), named
    start = (datetime.now(UTC) - timedelta(hours=24)).strftime("%Y-%m-%dT%H:%M:%SZ")
    r = http.get("/v1/metrics/orgs", params={"period": "hourly", "start": start})
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert items
    assert {i["organization_id"]: i["organization_name"] for i in items} == {
        i["organization_id"]: named[i["organization_id"]] for i in items
    }


def check_the_day_was_backfilled_and_aggregated(http: httpx.Client) -> None:
    start = (datetime.now(UTC) - timedelta(hours=24)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def hourly_rows() -> list[dict[str, Any]]:
        # The scheduler's catch-up at start may write rows of zeros for hours the backfill has not reached
        # yet (they are redone once it has): count the rows that hold traffic.
        r = http.get("/v1/metrics/history", params={"period": "hourly", "start": start})
        assert r.status_code == 200, r.text
        items: list[dict[str, Any]] = r.json()["items"]
        return items if sum(1 for row in items if row["artifacts_received"] > 0) >= 20 else []

    rows = poll(hourly_rows, 120, "20 hourly snapshots of the backfilled day")
    assert sum(row["artifacts_received"] for row in rows) > 1000  # 150 an hour in the backfill
    assert all("organization_id" not in row for row in rows)
    starts = [row["period_start"] for row in rows]
    assert starts == sorted(starts)
    r = http.get("/v1/metrics/realtime")
    assert r.status_code == 200, r.text
    counts = r.json()["counts"]
    for name in ("artifacts_received", "artifacts_completed", "transcriptions_completed", "failures"):
        assert counts[name] > 0, counts
    assert counts["ai_cost_usd"] > 0


def retry_a_failed_artifact(http: httpx.Client, sim_db: Path) -> tuple[str, str]:
    """Retry (full) a failed artifact that had derived data from its first run; wait for the outcome."""
    r = http.get("/v1/artifacts", params={"status": "failed", "limit": 200})
    assert r.status_code == 200, r.text
    failed = r.json()["items"]
    assert failed
    assert all(a["status"] == "failed" for a in failed)
    later = [a for a in failed if a["failed_stage"] not in (None, "transcription")]
    assert later, "no artifact failed after its transcription"
    artifact_id = later[0]["artifact_id"]
    before = derived_rows(sim_db, artifact_id)
    assert before["transcripts"] == ["initial"], before  # the first run's transcript is there

    r = http.post(
        f"/v1/artifacts/{artifact_id}/retries",
        content=b'{"stage": "full", "reason": "test"}',
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 202, r.text
    record = r.json()
    assert (record["stage"], record["status"], record["attempt"]) == ("full", "pending", 1)
    retry_id: str = record["retry_id"]

    def settled() -> dict[str, Any] | None:
        reply = http.get(f"/v1/artifacts/{artifact_id}")
        assert reply.status_code == 200, reply.text
        detail: dict[str, Any] = reply.json()
        retries = detail["retries"]
        return detail if retries and retries[-1]["status"] not in ("pending", "dispatched") else None

    detail = poll(settled, 90, "the retry to succeed or fail", every_s=0.5)
    story = [(e["event_type"], e["timestamp"]) for e in detail["timeline"]]
    assert detail["status"] == "completed", (detail["retries"], story)
    [retry] = detail["retries"]
    assert (retry["retry_id"], retry["status"]) == (retry_id, "succeeded")
    types = [e["event_type"] for e in detail["timeline"]]
    assert "retry_initiated" in types
    assert types.index("retry_initiated") < types.index("artifact_completed") < types.index("retry_succeeded")
    assert "artifact_received" not in types[types.index("retry_initiated") :]
    rows = derived_rows(sim_db, artifact_id)
    assert {run_id for run_ids in rows.values() for run_id in run_ids} == {retry_id}
    return artifact_id, retry_id


def check_watch_prints_a_line(url: str, key: str, env: dict[str, str]) -> None:
    """Piped, ``watch --once`` prints one plain line: both windows and their figures."""
    shown = subprocess.run(
        [str(VOICEMON), "watch", "--url", url, "--key", key, "--once"],
        env={**env, "COLUMNS": "160"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    [line] = shown.stdout.splitlines()
    for text in (
        "last 60 minutes (",
        "received ",
        "| hour in progress (",
        "end to end p50 ",
        "| stuck now: ",
    ):
        assert text in line, line
    refused = subprocess.run(
        [str(VOICEMON), "watch", "--url", url, "--key", "vm_wrong", "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 1
    assert f"error: {url}: 401 invalid_key: " in refused.stderr, refused.stderr
