"""``voicemon watch``: a live view of one server, refreshed every 2 seconds.

Every figure belongs to a window the screen names, and there are two of them:

- **last 60 minutes** (``/v1/metrics/realtime``): the counters kept at ingestion, to the minute;
- **hour in progress** (``/v1/metrics/current``): per-stage counts, failure rates and latencies, and the
  end-to-end latency, computed from the raw events of the hour so far. Latencies are sketched per hour,
  so no sliding 60 minutes has them; they get their own section and their own window instead of sitting
  under the other one's label.

Below them, lists that are no window's figures: the alerts open now (``/v1/alerts?state=open``), the newest
failed artifacts and those stuck now.

On a terminal the screen is redrawn in place. Piped (stdout not a terminal) it prints one plain line per
refresh instead, both windows and their figures, so ``voicemon watch | tee watch.log`` keeps a record.
When the server refuses (a wrong key, a scope; 4xx), watch ends with the server's own message; a server
error or a lost connection is shown and retried.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import httpx
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from voicemon.errors import (
    AuthError,
    BadRequest,
    ForbiddenError,
    NotFoundError,
    ValidationError,
    VoicemonError,
)

REFRESH_S = 2.0
LISTED_ARTIFACTS = 6
# Open alerts listed on the screen and counted on a line (more show as "20+").
LISTED_ALERTS = 20
# Stuck artifacts are counted up to this many; more reads "100+".
COUNTED_STUCK = 100
# The server's refusals by status: asking again the same way cannot succeed, so watch stops.
_REFUSALS: dict[int, type[VoicemonError]] = {
    400: BadRequest,
    401: AuthError,
    403: ForbiddenError,
    404: NotFoundError,
    422: ValidationError,
}
REFUSED = tuple(_REFUSALS.values())
_STAGE_COUNTS = {
    "transcription": "transcriptions_completed",
    "claims_extraction": "claims_extracted",
    "entity_resolution": "entities_resolved",
    "draft_generation": "drafts_generated",
}


def server_error(response: httpx.Response) -> VoicemonError:
    """The server's own error (``{"error": {"code", "message"}}``) as the exception it was mapped from
    (:data:`REFUSED` for a refusal), its message led by the status and the code."""
    try:
        body = response.json()["error"]
        code, message = str(body["code"]), str(body["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "http_error", response.reason_phrase or "no reason given"
    kind = _REFUSALS.get(response.status_code, VoicemonError)
    return kind(f"{response.status_code} {code}: {message}", code=code)


def fetch(client: httpx.Client, organization_id: str | None) -> dict[str, Any]:
    """Everything one frame shows, in five requests. Raises the server's error (:func:`server_error`)
    or httpx's when it cannot be reached."""
    org: dict[str, str | int] = {"organization_id": organization_id} if organization_id else {}
    out: dict[str, Any] = {}
    requests: tuple[tuple[str, str, dict[str, str | int]], ...] = (
        ("realtime", "/v1/metrics/realtime", org),
        ("current", "/v1/metrics/current", org),
        ("failed", "/v1/artifacts", {"status": "failed", "limit": LISTED_ARTIFACTS, **org}),
        ("stuck", "/v1/artifacts", {"status": "stuck", "limit": COUNTED_STUCK, **org}),
        ("alerts", "/v1/alerts", {"state": "open", "limit": LISTED_ALERTS, **org}),
    )
    for name, path, params in requests:
        response = client.get(path, params=params)
        if response.is_error:
            raise server_error(response)
        out[name] = response.json()
    return out


def window(start: str, end: str) -> str:
    """Two RFC 3339 UTC times as one span: ``2026-12-02 14:03:00 to 15:02:13 UTC`` (the end carries its
    own date when it is another day)."""
    start_day, start_time, end_day, end_time = start[:10], start[11:19], end[:10], end[11:19]
    if start_day == end_day:
        return f"{start_day} {start_time} to {end_time} UTC"
    return f"{start_day} {start_time} to {end_day} {end_time} UTC"


def _ms(value: float | None) -> str:
    return "—" if value is None else (f"{value / 1000:.1f} s" if value >= 1000 else f"{value:.0f} ms")


def _count_of(page: dict[str, Any]) -> str:
    """How many items a page holds, with a "+" when there are more."""
    return f"{len(page['items'])}{'+' if page.get('next_cursor') else ''}"


_SEVERITY_STYLE = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "dim"}


def _alerts(page: dict[str, Any]) -> Panel:
    """The open alerts, newest first: severity, rule, where, since when, and the message."""
    table = Table.grid(padding=(0, 2))
    for a in page["items"]:
        rule = a["rule"] + (f"/{a['stage']}" if a.get("stage") else "")
        where = a.get("organization_name") or a.get("organization_id") or "platform"
        ack = f"ack {a['acknowledged_by']}" if a["state"] == "acknowledged" else ""
        table.add_row(
            Text(a["severity"], style=_SEVERITY_STYLE.get(a["severity"], "")),
            rule,
            where,
            f"since {a['started_at'][11:16]}",
            ack,
            a["message"],
        )
    title = f"open alerts: {_count_of(page)}"
    return Panel(table if page["items"] else Text("none", style="dim"), title=title, title_align="left")


def render(data: dict[str, Any], url: str, organization_id: str | None = None) -> Group:
    """The terminal screen of one frame."""
    rt, current = data["realtime"], data["current"]
    counts = rt["counts"]
    scope = f"organization {organization_id}" if organization_id else "platform-wide"
    head = Text.assemble(("voicemon ", "bold"), (url, "cyan"), f"   {scope}")
    live = Table.grid(padding=(0, 3))
    live.add_row(
        f"received [bold]{counts['artifacts_received']}[/]",
        f"completed [green]{counts['artifacts_completed']}[/]",
        f"failed [red]{counts['artifacts_failed']}[/]",
        f"failure rate [bold]{rt['failure_rate']:.1%}[/]",
        f"AI cost [bold]${counts['ai_cost_usd']:.2f}[/]",
    )
    live.add_row(
        f"transcriptions {counts['transcriptions_completed']}",
        f"claims {counts['claims_extracted']}",
        f"entities resolved {counts['entities_resolved']}",
        f"drafts {counts['drafts_generated']}",
        f"failure events {counts['failures']}",
    )
    last_hour = Panel(
        live, title=f"last 60 minutes, {window(rt['window_start'], rt['window_end'])}", title_align="left"
    )
    stages = Table(
        title=f"hour in progress, {window(current['period_start'], current['period_end'])}",
        title_justify="left",
        expand=True,
    )
    for col in ("stage", "completed", "failed", "failure rate", "p50", "p95", "p99"):
        stages.add_column(col, justify="left" if col == "stage" else "right")
    for s in current["stages"]:
        lat = s["latency_ms"]
        stages.add_row(
            s["stage"],
            str(s["completed"]),
            str(s["failed"]),
            f"{s['failure_rate']:.1%}",
            _ms(lat["p50"]),
            _ms(lat["p95"]),
            _ms(lat["p99"]),
        )
    e2e = current["end_to_end_latency_ms"]
    stages.add_row("end to end", str(e2e["count"]), "", "", _ms(e2e["p50"]), _ms(e2e["p95"]), _ms(e2e["p99"]))
    stuck = data["stuck"]
    return Group(
        head,
        last_hour,
        stages,
        _alerts(data["alerts"]),
        _artifacts("recent failures (newest first)", data["failed"]["items"], "last_error_code"),
        _artifacts(f"stuck now: {_count_of(stuck)}", stuck["items"][:LISTED_ARTIFACTS], "current_stage"),
    )


def line(data: dict[str, Any]) -> str:
    """One frame as one plain line: both windows, each with its figures, and the stuck count."""
    rt, current = data["realtime"], data["current"]
    c, e2e = rt["counts"], current["end_to_end_latency_ms"]
    return (
        f"last 60 minutes ({window(rt['window_start'], rt['window_end'])}): "
        f"received {c['artifacts_received']}, completed {c['artifacts_completed']}, "
        f"failed {c['artifacts_failed']}, failure rate {rt['failure_rate']:.1%}, "
        f"AI cost ${c['ai_cost_usd']:.2f}"
        f" | hour in progress ({window(current['period_start'], current['period_end'])}): "
        f"end to end p50 {_ms(e2e['p50'])}, p95 {_ms(e2e['p95'])}, p99 {_ms(e2e['p99'])} "
        f"over {e2e['count']} artifacts"
        f" | stuck now: {_count_of(data['stuck'])}"
        f" | open alerts: {_count_of(data['alerts'])}{_worst(data['alerts'])}"
    )


def _worst(page: dict[str, Any]) -> str:
    """`` (critical 1, high 2)``: the open alerts by severity, the worst first; empty when none."""
    order = list(_SEVERITY_STYLE)
    counts: dict[str, int] = {}
    for a in page["items"]:
        counts[a["severity"]] = counts.get(a["severity"], 0) + 1
    if not counts:
        return ""
    return " (" + ", ".join(f"{s} {counts[s]}" for s in order if s in counts) + ")"


def _artifacts(title: str, items: list[dict[str, Any]], detail: str) -> Panel:
    table = Table.grid(padding=(0, 2))
    for a in items:
        table.add_row(
            a["artifact_id"],
            a.get("organization_id") or "",
            a["status"],
            a.get(detail) or "",
            a["last_event_at"],
        )
    return Panel(table if items else Text("none", style="dim"), title=title, title_align="left")


def watch(url: str, key: str, organization_id: str | None = None, *, once: bool = False) -> None:
    """Show the server until interrupted (``once``: one frame). Raises a :data:`REFUSED` error when the
    server refuses, and, with ``once``, any other error of the first frame."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=10) as client:
        if not sys.stdout.isatty():
            _print_lines(client, organization_id, once=once)
        elif once:
            Console().print(render(fetch(client, organization_id), url, organization_id))
        else:
            _live_screen(client, url, organization_id)


def _print_lines(client: httpx.Client, organization_id: str | None, *, once: bool) -> None:
    while True:
        try:
            print(line(fetch(client, organization_id)), flush=True)
        except REFUSED:
            raise
        except (VoicemonError, httpx.HTTPError) as exc:
            if once:
                raise
            print(f"error: {_trouble(exc)}; retrying", file=sys.stderr, flush=True)
        if once:
            return
        time.sleep(REFRESH_S)


def _live_screen(client: httpx.Client, url: str, organization_id: str | None) -> None:
    with Live(refresh_per_second=4, screen=False) as live:
        while True:
            try:
                live.update(render(fetch(client, organization_id), url, organization_id))
            except REFUSED:
                raise
            except (VoicemonError, httpx.HTTPError) as exc:
                live.update(Text(f"{url}: {_trouble(exc)}; retrying", style="red"))
            time.sleep(REFRESH_S)


def _trouble(exc: VoicemonError | httpx.HTTPError) -> str:
    if isinstance(exc, VoicemonError):
        return exc.message
    return f"cannot reach the server ({exc.__class__.__name__}: {exc})"
