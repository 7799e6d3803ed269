"""``voicemon``: serve, db, keys, demo. Exit codes: 0 ok, 1 failure, 2 usage error."""

from __future__ import annotations

import sys
import threading
import time
from typing import Annotated

import httpx
import orjson
import typer
import uvicorn
from rich.console import Console
from rich.table import Table

from voicemon.api import create_app
from voicemon.api.params import parse_time_param
from voicemon.api.render import run_out
from voicemon.domain.timeutil import format_time
from voicemon.errors import VoicemonError
from voicemon.jobs import Scheduler, build_runner
from voicemon.service import Services
from voicemon.settings import Settings
from voicemon.storage import migrate

app = typer.Typer(
    help="voicemon: observability and operations for AI voice-note pipelines.", no_args_is_help=True
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
jobs_app = typer.Typer(help="Scheduled jobs.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")

err = Console(stderr=True)


def _services() -> Services:
    return Services(Settings())


def _fail(exc: VoicemonError) -> typer.Exit:
    err.print(f"[red]error:[/red] {exc.field + ': ' if exc.field else ''}{exc.message}")
    return typer.Exit(1)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every schema migration not yet applied."""
    svc = _services()
    try:
        migrate.upgrade(svc.db)
    except VoicemonError as exc:
        raise _fail(exc) from exc
    finally:
        svc.db.dispose()
    typer.echo("database is up to date")


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help="ingest, viewer or staff")],
    org: Annotated[str | None, typer.Option(help="limit the key to one organization")] = None,
    name: Annotated[str | None, typer.Option(help="a label to recognise the key by")] = None,
) -> None:
    """Create a key. The key itself is printed once, alone on the last line."""
    svc = _services()
    try:
        migrate.upgrade(svc.db)
        created = svc.keys.create(role, org, name)
    except VoicemonError as exc:
        raise _fail(exc) from exc
    finally:
        svc.db.dispose()
    scope = f" for organization {org}" if org else ""
    typer.echo(f"created {created.record.role} key {created.record.key_id}{scope}; it is shown only once:")
    typer.echo(created.secret)


@keys_app.command("list")
def keys_list() -> None:
    """List keys (never their secrets)."""
    svc = _services()
    try:
        migrate.upgrade(svc.db)
        records = svc.keys.list()
    except VoicemonError as exc:
        raise _fail(exc) from exc
    finally:
        svc.db.dispose()
    table = Table("key_id", "role", "organization", "name", "created", "revoked")
    for r in records:
        table.add_row(
            r.key_id,
            r.role,
            r.organization_id or "(all)",
            r.name or "",
            format_time(r.created_ms),
            format_time(r.revoked_ms) if r.revoked_ms else "",
        )
    Console().print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="the key_id shown by keys list")]) -> None:
    """Revoke a key; servers stop accepting it within a few seconds."""
    svc = _services()
    try:
        migrate.upgrade(svc.db)
        svc.keys.revoke(key_id)
    except VoicemonError as exc:
        raise _fail(exc) from exc
    finally:
        svc.db.dispose()
    typer.echo(f"revoked {key_id}")


@jobs_app.command("list")
def jobs_list() -> None:
    """The jobs, their schedules, next run and last run."""
    svc = _services()
    try:
        migrate.upgrade(svc.db)
        overview = build_runner(svc).overview()
    except VoicemonError as exc:
        raise _fail(exc) from exc
    finally:
        svc.db.dispose()
    table = Table("job", "schedule (UTC)", "next run", "last run", "status")
    for o in overview:
        last = o.last_run
        table.add_row(
            o.job.name,
            o.job.schedule,
            format_time(o.next_run_ms),
            format_time(last.started_ms) if last and last.started_ms else "never",
            last.status if last else "",
        )
    Console().print(table)


@jobs_app.command("run")
def jobs_run(
    name: Annotated[
        str, typer.Argument(help="aggregate-hourly, aggregate-daily, cleanup-snapshots, cleanup-events")
    ],
    target: Annotated[
        str | None, typer.Option(help="a time in the period to run (RFC 3339 or epoch ms)")
    ] = None,
) -> None:
    """Run one job now, to its end, and print its run record."""
    svc = _services()
    try:
        migrate.upgrade(svc.db)
        target_ms = parse_time_param("target", target)
        record = build_runner(svc).run_now(name, target_ms)
    except VoicemonError as exc:
        raise _fail(exc) from exc
    finally:
        svc.db.dispose()
    typer.echo(orjson.dumps(run_out(record), option=orjson.OPT_INDENT_2).decode())
    if record.status != "succeeded":
        raise typer.Exit(1)


@app.command("worker")
def worker() -> None:
    """Run scheduled jobs without serving HTTP (several workers and servers may share one database)."""
    svc = _services()
    svc.start()
    scheduler = Scheduler(build_runner(svc), svc.settings.scheduler_poll_s)
    scheduler.start()
    typer.echo("worker running; Ctrl-C stops it")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        scheduler.stop()
        svc.stop()


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    no_scheduler: Annotated[
        bool, typer.Option("--no-scheduler", help="do not run scheduled jobs here")
    ] = False,
) -> None:
    """Run the HTTP API (migrates the database first)."""
    settings = Settings()
    application = create_app(settings, run_scheduler=not no_scheduler)
    uvicorn.run(application, host=host, port=port, log_level="warning", access_log=False)


@app.command("demo")
def demo(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="PORT", help="port to listen on")] = 8000,
) -> None:
    """Start a server on the local SQLite file and print its URL and a new staff key."""
    settings = Settings()
    svc = Services(settings)
    try:
        migrate.upgrade(svc.db)
        created = svc.keys.create("staff", None, "demo")
    except VoicemonError as exc:
        raise _fail(exc) from exc
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, services=svc), host=host, port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="voicemon-server", daemon=True)
    thread.start()
    url = f"http://{host}:{port}"
    if not _wait_until_up(url, thread):
        err.print(f"[red]error:[/red] the server did not start on {url}")
        raise typer.Exit(1)
    typer.echo(f"URL: {url}")
    typer.echo(f"KEY: {created.secret}")
    sys.stdout.flush()
    try:
        while thread.is_alive():
            thread.join(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.should_exit = True
        thread.join(10)


def _wait_until_up(url: str, thread: threading.Thread, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and thread.is_alive():
        try:
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return False


def main() -> None:
    app()
