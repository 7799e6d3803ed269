"""``voicemon``: serve, db, keys, demo. Exit codes: 0 ok, 1 failure, 2 usage error."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from voicemon.domain.access import SYSTEM
from voicemon.errors import VoicemonError

if TYPE_CHECKING:
    from voicemon.service import Services

# Each command imports the server, the simulator or the HTTP client when it runs, not here: `--help` and
# usage errors answer without loading FastAPI, SQLAlchemy or numpy.

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


@contextmanager
def _database() -> Iterator[Services]:
    """The services on the configured database, migrated, for one command run by the operator (who
    acts as :data:`~voicemon.domain.access.SYSTEM`); a refusal ends the command with exit code 1."""
    from voicemon.service import Services
    from voicemon.settings import Settings

    svc = Services(Settings())
    try:
        svc.migrate()
        yield svc
    except VoicemonError as exc:
        raise _fail(exc) from exc
    finally:
        svc.db.dispose()


def _fail(exc: VoicemonError) -> typer.Exit:
    err.print(f"[red]error:[/red] {exc.field + ': ' if exc.field else ''}{exc.message}")
    return typer.Exit(1)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every schema migration not yet applied."""
    with _database():
        pass
    typer.echo("database is up to date")


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help="ingest, viewer or staff")],
    org: Annotated[str | None, typer.Option(help="limit the key to one organization")] = None,
    name: Annotated[str | None, typer.Option(help="a label to recognise the key by")] = None,
) -> None:
    """Create a key. The key itself is printed once, alone on the last line."""
    with _database() as svc:
        created = svc.keys.create(SYSTEM, role, org, name)
    scope = f" for organization {org}" if org else ""
    typer.echo(f"created {created.record.role} key {created.record.key_id}{scope}; it is shown only once:")
    typer.echo(created.secret)


@keys_app.command("list")
def keys_list() -> None:
    """List keys (never their secrets)."""
    from voicemon.domain.timeutil import format_time

    with _database() as svc:
        records = svc.keys.list(SYSTEM)
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
    with _database() as svc:
        svc.keys.revoke(SYSTEM, key_id)
    typer.echo(f"revoked {key_id}")


@jobs_app.command("list")
def jobs_list() -> None:
    """The jobs, their schedules, next run and last run."""
    from voicemon.domain.timeutil import format_time
    from voicemon.jobs import build_runner

    with _database() as svc:
        overview = build_runner(svc).overview(SYSTEM)
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
    """Run one job now, to its end, and print how it went: status, times, and its summary (JSON) or
    error. Exit code 1 unless it succeeded."""
    from voicemon.domain.timeutil import format_time, parse_time_text
    from voicemon.jobs import build_runner

    with _database() as svc:
        record = build_runner(svc).run_now(SYSTEM, name, parse_time_text("target", target))
    table = Table.grid(padding=(0, 2))
    for label, value in (
        ("job", record.name),
        ("run", record.run_id),
        ("status", record.status),
        ("target", format_time(record.target_ms) if record.target_ms is not None else "(now)"),
        ("started", format_time(record.started_ms) if record.started_ms else ""),
        ("finished", format_time(record.finished_ms) if record.finished_ms else ""),
    ):
        table.add_row(label, value)
    Console().print(table)
    if record.summary:
        typer.echo(record.summary)
    if record.error:
        err.print(f"[red]error:[/red] {record.error}")
    if record.status != "succeeded":
        raise typer.Exit(1)


@app.command("worker")
def worker() -> None:
    """Run scheduled jobs and deliver the outbox without serving HTTP (several workers and servers may
    share one database)."""
    from voicemon.jobs import Scheduler, build_runner
    from voicemon.service import Services
    from voicemon.settings import Settings

    svc = Services(Settings())
    svc.start(run_dispatcher=True)
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
    from voicemon.api import create_app
    from voicemon.api.server import build_server
    from voicemon.settings import Settings

    settings = Settings()
    application = create_app(settings, run_scheduler=not no_scheduler, own_process=True)
    build_server(application, settings, host, port).run()


@app.command("demo")
def demo(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="PORT", help="port to listen on")] = 8000,
    hours: Annotated[float, typer.Option(help="hours of history to backfill (below raw retention)")] = 24,
    rate: Annotated[float, typer.Option(help="live artifacts per minute")] = 30,
    seed: Annotated[int | None, typer.Option(help="seed of the simulated pipeline")] = None,
    view: Annotated[bool, typer.Option(help="show the live view when on a terminal")] = True,
) -> None:
    """Server with scheduler, a day of history, a live simulated pipeline wired to the retry webhook,
    and the live view. Prints URL and KEY once the server answers. Ctrl-C stops everything."""
    from voicemon.cli.demo import run_demo

    run_demo(host, port, hours, rate, seed, view)


@app.command("simulate")
def simulate(
    url: Annotated[str, typer.Option(help="the voicemon server")] = "http://127.0.0.1:8000",
    key: Annotated[str, typer.Option(envvar="VOICEMON_KEY", help="an ingest or staff key")] = "",
    rate: Annotated[float, typer.Option(help="live artifacts per minute; 0 for none")] = 30,
    backfill_hours: Annotated[
        float, typer.Option(help="first fill this many past hours, then aggregate")
    ] = 0,
    backfill_rate: Annotated[float, typer.Option(help="artifacts per hour in the backfill")] = 150,
    organizations: Annotated[int, typer.Option(help="number of organizations (Zipf-like volumes)")] = 8,
    seed: Annotated[int | None, typer.Option(help="random seed")] = None,
    store: Annotated[
        str, typer.Option(help="SQLite file for the pipeline's derived data")
    ] = "voicemon-sim.db",
    webhook_port: Annotated[int | None, typer.Option(help="listen for retry commands on this port")] = None,
    webhook_secret: Annotated[str | None, typer.Option(envvar="VOICEMON_RETRY_WEBHOOK_SECRET")] = None,
    duration: Annotated[float | None, typer.Option(help="stop after this many seconds")] = None,
) -> None:
    """A realistic multi-organization pipeline reporting through the SDK and honouring retries."""
    if not key:
        err.print("[red]error:[/red] --key: an ingest or staff key is required")
        raise typer.Exit(2)
    if backfill_hours < 0 or rate < 0:
        err.print("[red]error:[/red] --rate and --backfill-hours must not be negative")
        raise typer.Exit(2)
    from rich.progress import Progress

    from voicemon.sdk import Client
    from voicemon.sim import DerivedStore, RetryWebhook, SimConfig, Simulator

    derived = DerivedStore(store)
    client = Client(url, key, max_queue=500_000)
    sim = Simulator(client, derived, SimConfig(organizations=organizations), seed=seed)
    webhook = (
        RetryWebhook(webhook_secret, sim.handle_retry, port=webhook_port)
        if webhook_port is not None
        else None
    )
    try:
        if webhook is not None:
            webhook.start()
            typer.echo(f"retry webhook: {webhook.url}")
        if backfill_hours > 0:
            with Progress(console=err) as progress:
                task = progress.add_task(f"backfilling {backfill_hours:g} h", total=1)
                sim.backfill(
                    backfill_hours,
                    backfill_rate,
                    progress=lambda d, t: progress.update(task, completed=d, total=t),
                )
                client.flush(300)
            _aggregate_over_http(url, key)
        if rate > 0:
            sim.start_live(rate)
            end = None if duration is None else time.monotonic() + duration
            while end is None or time.monotonic() < end:
                time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
        client.close()
        if webhook is not None:
            webhook.stop()
        derived.close()
    typer.echo(f"sent {client.stats.sent} events, dropped {client.stats.dropped}")


def _aggregate_over_http(url: str, key: str) -> None:
    import httpx

    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=600) as http:
        for job in ("aggregate-hourly", "aggregate-daily"):
            response = http.post(f"/v1/jobs/{job}/runs", json={})
            if response.status_code != 200:
                err.print(f"[yellow]{job} not run ({response.status_code}); a staff key can run it[/yellow]")
                return
            typer.echo(f"{job}: {response.json()['status']}")


@app.command("watch")
def watch_command(
    url: Annotated[str, typer.Option(help="the voicemon server")] = "http://127.0.0.1:8000",
    key: Annotated[str, typer.Option(envvar="VOICEMON_KEY", help="a viewer or staff key")] = "",
    org: Annotated[str | None, typer.Option(help="one organization only")] = None,
    once: Annotated[bool, typer.Option(help="print one frame and exit")] = False,
) -> None:
    """A live terminal view: last hour's counters, stage latencies, failures, stuck artifacts."""
    if not key:
        err.print("[red]error:[/red] --key: a viewer or staff key is required")
        raise typer.Exit(2)
    import httpx

    from voicemon.cli.watch import watch

    try:
        watch(url, key, org, once=once)
    except KeyboardInterrupt:
        pass
    except httpx.HTTPError as exc:
        err.print(f"[red]error:[/red] {url}: {exc}")
        raise typer.Exit(1) from exc


def main() -> None:
    app()
