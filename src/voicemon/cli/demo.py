"""``voicemon demo``: a server, a day of history and a living simulated pipeline, on one SQLite file.

The demo's data lives in files of its own in the working directory, named here and nowhere else
(:data:`DEMO_DB`, :data:`DEMO_SIM_DB`). Each run deletes them and starts afresh, so running it twice never
doubles the history. It never reads ``VOICEMON_DATABASE_URL``: simulated traffic has no business in a
real database, and a file the demo did not name is never deleted.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from types import FrameType

import httpx
import typer
from pydantic import SecretStr
from rich.console import Console
from rich.progress import Progress

from voicemon.api import create_app
from voicemon.api.server import build_server
from voicemon.cli.watch import watch
from voicemon.domain.access import SYSTEM
from voicemon.sdk import Client
from voicemon.service import Services
from voicemon.settings import Settings
from voicemon.sim import DerivedStore, RetryOrder, RetryWebhook, Simulator

err = Console(stderr=True, soft_wrap=True)


DEMO_DB = "voicemon-demo.db"
"""The demo's database, in the working directory."""
DEMO_SIM_DB = "voicemon-demo-sim.db"
"""The simulated pipeline's derived data (transcripts, claims, …), beside it."""
# SQLite's companions of a database file: the write-ahead log, its index, a rollback journal.
_SQLITE_COMPANIONS = ("", "-wal", "-shm", "-journal")


def _fresh_files(directory: Path) -> bool:
    """Delete what an earlier demo left in ``directory``: only the files named above. Returns whether
    there was any. Raises typer.Exit(1) if one of those names is not a file."""
    found = False
    for name in (DEMO_DB, DEMO_SIM_DB):
        for companion in _SQLITE_COMPANIONS:
            path = directory / (name + companion)
            if path.is_symlink() or path.is_file():
                path.unlink()
                found = True
            elif path.exists():
                err.print(f"[red]error:[/red] {path} is not a file; move it away to run the demo here")
                raise typer.Exit(1)
    return found


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def run_demo(host: str, port: int, hours: float, rate_per_min: float, seed: int | None, view: bool) -> None:
    def _terminate(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    # A running demo keeps its port: checked before its files are deleted from under it.
    if _port_in_use(host, port):
        err.print(f"[red]error:[/red] {host}:{port} is in use (another demo?); stop it or pick --port")
        raise typer.Exit(1)
    directory = Path.cwd()
    if _fresh_files(directory):
        print(f"removed the previous demo database {directory / DEMO_DB}; starting afresh", flush=True)
    else:
        print(f"demo database: {directory / DEMO_DB} (new)", flush=True)
    if os.environ.get("VOICEMON_DATABASE_URL"):
        print("VOICEMON_DATABASE_URL is not used: the demo runs on its own file", file=sys.stderr, flush=True)
    signal.signal(signal.SIGTERM, _terminate)
    secret = secrets.token_hex(16)
    sim: list[Simulator] = []

    def on_retry(order: RetryOrder) -> None:
        if not sim:
            raise RuntimeError("simulator not started yet")
        sim[0].handle_retry(order)

    webhook = RetryWebhook(secret, on_retry)
    webhook.start()
    settings = Settings(
        database_url=f"sqlite:///{directory / DEMO_DB}",
        retry_webhook_url=webhook.url,
        retry_webhook_secret=SecretStr(secret),
    )
    services = Services(settings)
    services.migrate()
    staff = services.keys.create(SYSTEM, "staff", None, "demo")
    ingest = services.keys.create(SYSTEM, "ingest", None, "demo-simulator")
    app = create_app(settings, services=services, run_scheduler=True, own_process=True)
    server = build_server(app, settings, host, port)
    thread = threading.Thread(target=server.run, name="voicemon-server", daemon=True)
    thread.start()
    url = f"http://{host}:{port}"
    store = DerivedStore(str(directory / DEMO_SIM_DB))
    client: Client | None = None
    try:
        if not _wait_until_up(url, thread):
            err.print(f"[red]error:[/red] the server did not start on {url}")
            raise typer.Exit(1)
        print(f"URL: {url}", flush=True)
        print(f"KEY: {staff.secret}", flush=True)
        print(f"DASHBOARD: {url}/ (sign in with the key)", flush=True)
        client = Client(url, ingest.secret, batch_size=500, max_queue=500_000)
        simulator = Simulator(client, store, seed=seed)
        for org in simulator.orgs:
            services.orgs.put(SYSTEM, org.organization_id, org.name)
        sim.append(simulator)
        with Progress(console=err, transient=True, disable=not err.is_terminal) as progress:
            task = progress.add_task(f"backfilling {hours:g} h of history", total=1)
            logged = simulator.backfill(
                hours, 150, progress=lambda done, total: progress.update(task, completed=done, total=total)
            )
            client.flush(300)
        runner = app.state.jobs
        hourly = runner.run_now(SYSTEM, "aggregate-hourly")
        daily = runner.run_now(SYSTEM, "aggregate-daily")
        print(
            f"backfilled {logged} events; aggregation {hourly.status}/{daily.status}",
            file=sys.stderr,
            flush=True,
        )
        if rate_per_min > 0:
            simulator.start_live(rate_per_min)
            print("live: simulated pipeline running; Ctrl-C stops everything", file=sys.stderr, flush=True)
        else:
            print("live: no new traffic (--rate 0); Ctrl-C stops everything", file=sys.stderr, flush=True)
        if view and sys.stdout.isatty():
            watch(url, staff.secret)
        else:
            while thread.is_alive():
                time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if sim:
            sim[0].stop()
        if client is not None:
            client.close(timeout=5)
        server.should_exit = True
        thread.join(15)
        webhook.stop()
        store.close()
        print("stopped", file=sys.stderr, flush=True)


def _wait_until_up(url: str, thread: threading.Thread, timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and thread.is_alive():
        try:
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return False
