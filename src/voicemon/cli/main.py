"""``voicemon``: serve, db, keys, jobs, alerts, export, demo, simulate, watch.

Exit codes: 0 ok, 1 failure, 2 usage error (a bad option value, an unknown job or role, a time that does
not parse: the command line is wrong, whatever the database holds). Only ``db upgrade``, ``serve``,
``worker`` and ``demo`` change the schema; every other command that opens the database first checks that
it has this code's schema, and otherwise ends with exit code 1 and "run voicemon db upgrade", having
created nothing.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from voicemon.cli.output import print_fields, print_table
from voicemon.domain.access import SYSTEM, Role
from voicemon.errors import NotFoundError, ValidationError, VoicemonError

if TYPE_CHECKING:
    from voicemon.api.server import AnnouncingServer
    from voicemon.service import Services
    from voicemon.settings import Settings

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
alerts_app = typer.Typer(help="Alerts: what fired, and acknowledging it.", no_args_is_help=True)
app.add_typer(alerts_app, name="alerts")

err = Console(stderr=True, soft_wrap=True)


@contextmanager
def _database(*, check_schema: bool = True) -> Iterator[Services]:
    """The services on the configured database, for one command run by the operator (who acts as
    :data:`~voicemon.domain.access.SYSTEM`); a refusal ends the command with exit code 1.

    The schema is checked, never migrated: a database without this code's schema ends the command before
    anything is written. ``check_schema=False`` leaves the check to the command (``svc.require_schema()``),
    for one that first checks its arguments against what the services define."""
    from voicemon.service import Services
    from voicemon.settings import Settings

    svc = Services(Settings())
    try:
        if check_schema:
            svc.require_schema()
        yield svc
    except VoicemonError as exc:
        raise _fail(exc) from exc
    finally:
        svc.db.dispose()


def _fail(exc: VoicemonError) -> typer.Exit:
    err.print(f"[red]error:[/red] {exc.field + ': ' if exc.field else ''}{exc.message}", highlight=False)
    return typer.Exit(1)


def _usage(ctx: typer.Context, message: str, param_hint: str) -> typer.BadParameter:
    """A usage error (exit code 2) about one option or argument, printed as the parser prints its own."""
    return typer.BadParameter(message, ctx=ctx, param_hint=f"'{param_hint}'")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create the schema, or apply every migration not yet applied; says which."""
    from voicemon.service import Services
    from voicemon.settings import Settings

    svc = Services(Settings())
    try:
        done = svc.migrate()
    except VoicemonError as exc:
        raise _fail(exc) from exc
    finally:
        svc.db.dispose()
    if done.before is None:
        typer.echo(f"created the schema at revision {done.after}")
    elif done.before == done.after:
        typer.echo(f"the schema is up to date (revision {done.after})")
    else:
        typer.echo(f"upgraded the schema from revision {done.before} to {done.after}")


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    role: Annotated[Role, typer.Option(help="what the key may do", case_sensitive=False)],
    org: Annotated[str | None, typer.Option(help="limit the key to one organization")] = None,
    name: Annotated[str | None, typer.Option(help="a label to recognise the key by")] = None,
) -> None:
    """Create a key. The key itself is printed once, alone on the last line."""
    with _database() as svc:
        try:
            created = svc.keys.create(SYSTEM, role.value, org, name)
        except ValidationError as exc:
            # The use case names the option at fault (role, org or name).
            raise _usage(ctx, exc.message, f"--{exc.field}" if exc.field else "--role") from None
    scope = f" for organization {org}" if org else ""
    typer.echo(f"created {created.record.role} key {created.record.key_id}{scope}; it is shown only once:")
    typer.echo(created.secret)


@keys_app.command("list")
def keys_list() -> None:
    """List keys (never their secrets)."""
    from voicemon.domain.timeutil import format_time

    with _database() as svc:
        records = svc.keys.list(SYSTEM)
    print_table(
        ("key_id", "role", "organization", "name", "created", "revoked"),
        [
            (
                r.key_id,
                r.role,
                r.organization_id or "(all)",
                r.name or "",
                format_time(r.created_ms),
                format_time(r.revoked_ms) if r.revoked_ms else "",
            )
            for r in records
        ],
    )


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
    print_table(
        ("job", "schedule (UTC)", "next run", "last run", "status"),
        [
            (
                o.job.name,
                o.job.schedule,
                format_time(o.next_run_ms),
                format_time(o.last_run.started_ms) if o.last_run and o.last_run.started_ms else "never",
                o.last_run.status if o.last_run else "",
            )
            for o in overview
        ],
    )


@jobs_app.command("run")
def jobs_run(
    ctx: typer.Context,
    name: Annotated[
        str, typer.Argument(help="aggregate-hourly, aggregate-daily, cleanup-snapshots, cleanup-events")
    ],
    target: Annotated[
        str | None, typer.Option(help="a time in the period to run (RFC 3339 or epoch ms)")
    ] = None,
) -> None:
    """Run one job now, to its end, and print how it went: status, times, and its summary (JSON) or
    error. Exit code 1 unless it succeeded (a target the job refuses now, such as an hour not over yet
    or one older than what it is built from, is a failure too); 2 for an unknown job or a target that
    does not parse."""
    from voicemon.domain.timeutil import format_time, parse_time_text

    try:
        target_ms = parse_time_text("target", target)
    except ValidationError as exc:
        raise _usage(ctx, exc.message, "--target") from None
    from voicemon.jobs import build_runner

    with _database(check_schema=False) as svc:
        runner = build_runner(svc)
        try:
            job = runner.job(name)
        except NotFoundError as exc:
            raise _usage(ctx, exc.message, "NAME") from None
        if target_ms is not None and job.check is None:
            raise _usage(ctx, f"{name} takes no target", "--target")
        svc.require_schema()
        record = runner.run_now(SYSTEM, name, target_ms)
    print_fields(
        [
            ("job", record.name),
            ("run", record.run_id),
            ("status", record.status),
            ("target", format_time(record.target_ms) if record.target_ms is not None else "(now)"),
            ("started", format_time(record.started_ms) if record.started_ms else ""),
            ("finished", format_time(record.finished_ms) if record.finished_ms else ""),
        ]
    )
    if record.summary:
        typer.echo(record.summary)
    if record.error:
        err.print(f"[red]error:[/red] {record.error}")
    if record.status != "succeeded":
        raise typer.Exit(1)


class IncidentOption(StrEnum):
    """What ``simulate --incident`` can produce (:class:`voicemon.sim.Incident`; kept here so that
    ``--help`` needs no simulator)."""

    failure_rate = "failure_rate"
    stage_latency = "stage_latency"
    stuck_artifacts = "stuck_artifacts"
    cost_spike = "cost_spike"
    circuit_breaker = "circuit_breaker"
    budget = "budget"


class AlertStateOption(StrEnum):
    open = "open"
    firing = "firing"
    acknowledged = "acknowledged"
    resolved = "resolved"
    all = "all"


@alerts_app.command("list")
def alerts_list(
    state: Annotated[
        AlertStateOption, typer.Option(help="open is firing or acknowledged", case_sensitive=False)
    ] = AlertStateOption.open,
    org: Annotated[str | None, typer.Option(help="one organization's alerts")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="at most this many, newest first")] = 50,
) -> None:
    """Alerts, newest first: id, state, severity, rule, where, since when, and the message."""
    from voicemon.domain.timeutil import format_time

    with _database() as svc:
        page = svc.alerts.list_alerts(
            SYSTEM,
            state=None if state is AlertStateOption.all else state.value,
            organization_id=org,
            limit=limit,
        )
    print_table(
        ("alert_id", "state", "severity", "rule", "where", "started", "message"),
        [
            (
                a.alert_id,
                a.state.value,
                a.severity.value,
                a.rule + (f"/{a.stage}" if a.stage else ""),
                (name or a.scope) if a.scope else "platform",
                format_time(a.started_ms),
                a.message,
            )
            for a, name in page.items
        ],
    )
    if page.next_cursor:
        err.print(f"(more than {limit}; raise --limit, or narrow with --state or --org)")


@alerts_app.command("ack")
def alerts_ack(
    alert_id: Annotated[str, typer.Argument(help="the alert_id shown by alerts list")],
    by: Annotated[str, typer.Option(help="who acknowledges: recorded on the alert")],
    note: Annotated[str | None, typer.Option(help="why, or what is being done")] = None,
) -> None:
    """Acknowledge a firing alert: it is not re-notified, stays open, and resolves by itself."""
    from voicemon.domain.access import Principal

    person = Principal(key_id="cli", name=by, role=Role.STAFF)
    with _database() as svc:
        detail = svc.alerts.acknowledge(person, alert_id, note)
    typer.echo(f"acknowledged {detail.alert.alert_id} ({detail.alert.rule}) as {by}")


class ExportKindOption(StrEnum):
    events = "events"
    artifacts = "artifacts"
    history = "history"
    orgs = "orgs"


class ExportFormatOption(StrEnum):
    csv = "csv"
    jsonl = "jsonl"


class PeriodOption(StrEnum):
    hourly = "hourly"
    daily = "daily"


# Which filters each kind takes: those of the list or range it mirrors.
EXPORT_FILTERS = {
    "events": {"--org", "--start", "--end", "--type", "--stage", "--artifact"},
    "artifacts": {"--org", "--status", "--failed-stage"},
    "history": {"--org", "--start", "--end", "--period"},
    "orgs": {"--start", "--end", "--period"},
}
ARTIFACT_STATUSES = (
    "received", "transcribing", "transcribed", "processing", "completed", "failed", "active", "stuck"
)  # fmt: skip


@app.command("export")
def export_command(
    ctx: typer.Context,
    kind: Annotated[ExportKindOption, typer.Argument(help="events, artifacts, history or orgs")],
    fmt: Annotated[ExportFormatOption, typer.Option("--format", help="csv or jsonl (JSON Lines)")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="write here (whole or not at all); default stdout")
    ] = None,
    org: Annotated[str | None, typer.Option(help="one organization (events, artifacts, history)")] = None,
    start: Annotated[str | None, typer.Option(help="from this time (RFC 3339 or epoch ms)")] = None,
    end: Annotated[str | None, typer.Option(help="until this time, excluded")] = None,
    event_type: Annotated[str | None, typer.Option("--type", help="events of this type")] = None,
    stage: Annotated[str | None, typer.Option(help="events of this pipeline stage")] = None,
    artifact: Annotated[str | None, typer.Option(help="events of this artifact id")] = None,
    status: Annotated[str | None, typer.Option(help="artifacts of this status, active or stuck")] = None,
    failed_stage: Annotated[str | None, typer.Option(help="artifacts whose last failure was here")] = None,
    period: Annotated[PeriodOption | None, typer.Option(help="hourly (default) or daily")] = None,
) -> None:
    """Export events, artifacts, snapshot history or the organization breakdown as CSV or JSON Lines,
    with the filters of the matching list (docs/exports.md). A progress bar goes to stderr, then the row
    count. Exit code 1 if the export fails midway (with -o, FILE is then left as it was)."""
    given = {
        "--org": org,
        "--start": start,
        "--end": end,
        "--type": event_type,
        "--stage": stage,
        "--artifact": artifact,
        "--status": status,
        "--failed-stage": failed_stage,
        "--period": period,
    }
    for option, value in given.items():
        if value is not None and option not in EXPORT_FILTERS[kind.value]:
            raise _usage(ctx, f"{kind.value} exports take no {option}", option)
    from voicemon.domain.model import EventType, Stage
    from voicemon.domain.timeutil import parse_time_text

    if event_type is not None and event_type not in {t.value for t in EventType}:
        raise _usage(ctx, f"{event_type!r} is not an event type", "--type")
    stages = {s.value for s in Stage}
    for option, value in (("--stage", stage), ("--failed-stage", failed_stage)):
        if value is not None and value not in stages:
            raise _usage(ctx, f"{value!r} is not a stage: {', '.join(sorted(stages))}", option)
    if status is not None and status not in ARTIFACT_STATUSES:
        raise _usage(ctx, f"{status!r} is not one of {', '.join(ARTIFACT_STATUSES)}", "--status")
    times = {}
    for option, value in (("--start", start), ("--end", end)):
        try:
            times[option] = parse_time_text(option.removeprefix("--"), value)
        except ValidationError as exc:
            raise _usage(ctx, exc.message, option) from None

    from voicemon.cli.export import write_export
    from voicemon.domain.exports import ExportFormat
    from voicemon.domain.periods import Period
    from voicemon.domain.records import EventFilter

    with _database() as svc:
        if kind is ExportKindOption.events:
            f = EventFilter(event_type, stage, org, artifact, times["--start"], times["--end"])
            export = svc.exports.events(SYSTEM, f)
        elif kind is ExportKindOption.artifacts:
            export = svc.exports.artifacts(SYSTEM, status, org, failed_stage)
        else:
            chosen = Period(period.value if period else "hourly")
            r = svc.metrics.resolve_range(chosen, times["--start"], times["--end"])
            if kind is ExportKindOption.history:
                export = svc.exports.history(SYSTEM, r, org)
            else:
                export = svc.exports.orgs(SYSTEM, r)
        try:
            rows = write_export(export, ExportFormat(fmt.value), output, err)
        except (VoicemonError, OSError) as exc:
            why = exc.message if isinstance(exc, VoicemonError) else f"{exc.strerror or exc}"
            untouched = f"; {output} was not written" if output else ""
            err.print(f"[red]error:[/red] the export failed: {why}{untouched}", highlight=False)
            raise typer.Exit(1) from exc
    where = f" to {output}" if output else ""
    err.print(f"exported {rows} {kind.value} rows{where}", highlight=False)


@app.command("worker")
def worker() -> None:
    """Run scheduled jobs and deliver the outbox without serving HTTP (several workers and servers may
    share one database)."""
    from voicemon.jobs import Scheduler, build_runner
    from voicemon.service import Services
    from voicemon.settings import Settings

    svc = Services(Settings())
    try:
        svc.start(run_dispatcher=True)
    except VoicemonError as exc:  # the schema could not be brought up to date: nothing started yet
        svc.db.dispose()
        raise _fail(exc) from exc
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
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on", min=1, max=65535)] = 8000,
    no_scheduler: Annotated[
        bool, typer.Option("--no-scheduler", help="do not run scheduled jobs here")
    ] = False,
    workers: Annotated[
        int,
        typer.Option(help="server processes sharing the port (PostgreSQL; each is a whole server)", min=1),
    ] = 1,
) -> None:
    """Run the HTTP API (migrates the database first)."""
    from voicemon.settings import Settings

    settings = Settings()
    if workers == 1:
        from voicemon.api import create_app
        from voicemon.api.server import build_server

        application = create_app(settings, run_scheduler=not no_scheduler, own_process=True)
        build_server(application, settings, host, port).run()
        return
    if settings.database_url.startswith("sqlite"):
        raise _usage(ctx, "several server processes need PostgreSQL: SQLite has one writer", "--workers")
    # Before prometheus_client is imported: each worker writes its counters to files in this folder,
    # which a scrape of any of them sums (decision 0034). A folder given is emptied of an earlier run's.
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    metrics_dir = None
    if given:
        for stale in Path(given).glob("*.db"):
            stale.unlink(missing_ok=True)
    else:
        metrics_dir = tempfile.mkdtemp(prefix="voicemon-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        raise typer.Exit(_serve_workers(settings, host, port, workers, scheduler=not no_scheduler))
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _serve_workers(settings: Settings, host: str, port: int, workers: int, *, scheduler: bool) -> int:
    """Migrate once, bind the port, then run ``workers`` server processes on it; their exit status."""
    from voicemon.api import create_app
    from voicemon.api.server import build_server, listening_socket, serve_forked
    from voicemon.service import Services

    svc = Services(settings)
    try:
        svc.migrate()  # once, before the processes start (each then finds the schema up to date)
    except VoicemonError as exc:
        raise _fail(exc) from exc
    finally:
        svc.db.dispose()
    try:
        sock = listening_socket(host, port)
    except OSError as exc:
        raise _fail(VoicemonError(f"cannot listen on {host}:{port}: {exc.strerror}")) from exc

    def build() -> AnnouncingServer:
        application = create_app(settings, run_scheduler=scheduler, own_process=True)
        return build_server(application, settings, host, port)

    return serve_forked(build, sock, workers)


@app.command("demo")
def demo(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="PORT", help="port to listen on", min=1, max=65535)] = 8000,
    hours: Annotated[
        float, typer.Option(help="hours of history to backfill (below raw retention)", min=0)
    ] = 24,
    rate: Annotated[float, typer.Option(help="live artifacts per minute; 0 for none", min=0)] = 30,
    seed: Annotated[int | None, typer.Option(help="seed of the simulated pipeline")] = None,
    view: Annotated[bool, typer.Option(help="show the live view when on a terminal")] = True,
) -> None:
    """Server with scheduler, a day of history, a live simulated pipeline wired to the retry webhook,
    and the live view. Prints URL and KEY once the server answers. Ctrl-C stops everything.

    Runs on its own SQLite file in the working directory (voicemon-demo.db, never
    VOICEMON_DATABASE_URL), deleted and made afresh on every run."""
    from voicemon.cli.demo import run_demo

    run_demo(host, port, hours, rate, seed, view)


@app.command("simulate")
def simulate(
    ctx: typer.Context,
    url: Annotated[str, typer.Option(help="the voicemon server")] = "http://127.0.0.1:8000",
    key: Annotated[str, typer.Option(envvar="VOICEMON_KEY", help="an ingest or staff key")] = "",
    rate: Annotated[float, typer.Option(help="live artifacts per minute; 0 for none", min=0)] = 30,
    backfill_hours: Annotated[
        float, typer.Option(help="first fill this many past hours, then aggregate", min=0)
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
    otlp: Annotated[
        bool, typer.Option(help="report as OpenTelemetry spans to /otlp/v1/traces, not through the SDK")
    ] = False,
    incident: Annotated[
        IncidentOption | None,
        typer.Option(help="produce this condition live, for one organization, so its alert fires"),
    ] = None,
    incident_org: Annotated[
        str, typer.Option(help="the organization of the incident (org-001 is the busiest)")
    ] = "org-001",
    incident_minutes: Annotated[
        float | None,
        typer.Option(help="end the incident after this many minutes, so its alert resolves", min=0),
    ] = None,
) -> None:
    """A realistic multi-organization pipeline reporting through the SDK (or, with --otlp, through the
    OpenTelemetry SDK and its OTLP/HTTP exporter, as spans) and honouring retries.

    With --incident, one organization's live traffic shows that condition (failure_rate: most notes
    fail in transcription; stage_latency: transcription six times slower; stuck_artifacts: notes stop
    after transcription starts; cost_spike: model calls cost 20x; circuit_breaker: a breaker opens, and
    closes when the incident ends; budget: the budget is exceeded). The alert of the same name fires
    at the next evaluation past its minimum volume (stage_latency needs a week's baseline of hours)."""
    if not key:
        raise _usage(ctx, "an ingest or staff key is required: pass --key or set VOICEMON_KEY", "--key")
    if incident is not None and rate <= 0:
        raise _usage(ctx, "an incident shapes live traffic: give a --rate above 0", "--incident")
    from rich.progress import Progress

    from voicemon.sdk import Client
    from voicemon.sim import DerivedStore, Incident, RetryWebhook, SimConfig, Simulator

    derived = DerivedStore(store)
    if otlp:
        from voicemon.sim.otlp import OtlpClient

        client: Client | OtlpClient = OtlpClient(url, key)
    else:
        client = Client(url, key, max_queue=500_000)
    sim = Simulator(client, derived, SimConfig(organizations=organizations), seed=seed)
    if incident is not None and incident_org not in {o.organization_id for o in sim.orgs}:
        client.close()
        derived.close()
        known = ", ".join(o.organization_id for o in sim.orgs)
        raise _usage(ctx, f"no simulated organization {incident_org!r}; they are {known}", "--incident-org")
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
            if incident is not None:
                org = sim.begin_incident(Incident(incident.value), incident_org, incident_minutes)
                lasting = f" for {incident_minutes:g} min" if incident_minutes is not None else ""
                typer.echo(f"incident {incident.value} in {org.organization_id} ({org.name}){lasting}")
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
    unit = "spans" if otlp else "events"
    typer.echo(f"sent {client.stats.sent} {unit}, dropped {client.stats.dropped}")


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
    ctx: typer.Context,
    url: Annotated[str, typer.Option(help="the voicemon server")] = "http://127.0.0.1:8000",
    key: Annotated[str, typer.Option(envvar="VOICEMON_KEY", help="a viewer or staff key")] = "",
    org: Annotated[str | None, typer.Option(help="one organization only")] = None,
    once: Annotated[bool, typer.Option(help="print one frame (or, piped, one line) and exit")] = False,
) -> None:
    """A live view: the last 60 minutes' counters, the hour in progress by stage (latencies), recent
    failures and stuck artifacts, each window named. Piped, one plain line per refresh."""
    if not key:
        raise _usage(ctx, "a viewer or staff key is required: pass --key or set VOICEMON_KEY", "--key")
    import httpx

    from voicemon.cli.watch import watch

    try:
        watch(url, key, org, once=once)
    except KeyboardInterrupt:
        pass
    except VoicemonError as exc:
        err.print(f"[red]error:[/red] {url}: {exc.message}", highlight=False)
        raise typer.Exit(1) from exc
    except httpx.HTTPError as exc:
        err.print(f"[red]error:[/red] {url}: cannot reach the server ({exc})", highlight=False)
        raise typer.Exit(1) from exc


def main() -> None:
    """The console script: a setting that does not parse (``VOICEMON_*``) ends the command with exit
    code 1 and one line per variable at fault, not a traceback."""
    from pydantic import ValidationError as SettingsError

    try:
        app()
    except SettingsError as exc:
        if exc.title != "Settings":
            raise
        for problem in exc.errors():
            name = "VOICEMON_" + "_".join(str(part) for part in problem["loc"]).upper()
            err.print(f"[red]error:[/red] {name}: {problem['msg']}", highlight=False)
        raise SystemExit(1) from None
