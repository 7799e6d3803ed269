"""``voicemon demo``: a server, a day of history and a living simulated pipeline, on one SQLite file."""

from __future__ import annotations

import secrets
import signal
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

err = Console(stderr=True)


def _sim_store_path(database_url: str) -> str:
    """The simulated pipeline's own data lives beside a SQLite database file, or in the working dir."""
    if database_url.startswith("sqlite:///"):
        db_file = Path(database_url.removeprefix("sqlite:///"))
        return str(db_file.with_name(db_file.stem + "-sim.db"))
    return "voicemon-sim.db"


def run_demo(host: str, port: int, hours: float, rate_per_min: float, seed: int | None, view: bool) -> None:
    def _terminate(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    secret = secrets.token_hex(16)
    sim: list[Simulator] = []

    def on_retry(order: RetryOrder) -> None:
        if not sim:
            raise RuntimeError("simulator not started yet")
        sim[0].handle_retry(order)

    webhook = RetryWebhook(secret, on_retry)
    webhook.start()
    settings = Settings(retry_webhook_url=webhook.url, retry_webhook_secret=SecretStr(secret))
    services = Services(settings)
    services.migrate()
    staff = services.keys.create(SYSTEM, "staff", None, "demo")
    ingest = services.keys.create(SYSTEM, "ingest", None, "demo-simulator")
    app = create_app(settings, services=services, run_scheduler=True, own_process=True)
    server = build_server(app, settings, host, port)
    thread = threading.Thread(target=server.run, name="voicemon-server", daemon=True)
    thread.start()
    url = f"http://{host}:{port}"
    store = DerivedStore(_sim_store_path(settings.database_url))
    client: Client | None = None
    try:
        if not _wait_until_up(url, thread):
            err.print(f"[red]error:[/red] the server did not start on {url}")
            raise typer.Exit(1)
        print(f"URL: {url}", flush=True)
        print(f"KEY: {staff.secret}", flush=True)
        client = Client(url, ingest.secret, batch_size=500, max_queue=500_000)
        simulator = Simulator(client, store, seed=seed)
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
        simulator.start_live(rate_per_min)
        print("live: simulated pipeline running; Ctrl-C stops everything", file=sys.stderr, flush=True)
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
