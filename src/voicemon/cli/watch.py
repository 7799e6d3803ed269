"""``voicemon watch``: a live terminal view of one server, refreshed every 2 seconds."""

from __future__ import annotations

import time
from typing import Any

import httpx
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

REFRESH_S = 2.0


def fetch(client: httpx.Client, organization_id: str | None) -> dict[str, Any]:
    """Everything one frame shows, in four requests."""
    org: dict[str, str | int] = {"organization_id": organization_id} if organization_id else {}
    out: dict[str, Any] = {}
    requests: tuple[tuple[str, str, dict[str, str | int]], ...] = (
        ("realtime", "/v1/metrics/realtime", org),
        ("current", "/v1/metrics/current", org),
        ("failed", "/v1/artifacts", {"status": "failed", "limit": 6, **org}),
        ("stuck", "/v1/artifacts", {"status": "stuck", "limit": 6, **org}),
    )
    for name, path, params in requests:
        response = client.get(path, params=params)
        response.raise_for_status()
        out[name] = response.json()
    return out


def _ms(value: float | None) -> str:
    return "—" if value is None else (f"{value / 1000:.1f} s" if value >= 1000 else f"{value:.0f} ms")


def render(data: dict[str, Any], url: str) -> Group:
    rt = data["realtime"]
    counts = rt["counts"]
    current = data["current"]
    head = Text.assemble(
        ("voicemon ", "bold"),
        (url, "cyan"),
        f"   figures run through {rt['window_end']}",
        f"   (last 60 min from {rt['window_start']})",
    )
    totals = Table.grid(padding=(0, 3))
    totals.add_row(
        f"received [bold]{counts['artifacts_received']}[/]",
        f"completed [green]{counts['artifacts_completed']}[/]",
        f"failed [red]{counts['artifacts_failed']}[/]",
        f"failure rate [bold]{rt['failure_rate']:.1%}[/]",
        f"AI cost [bold]${counts['ai_cost_usd']:.2f}[/]",
    )
    stages = Table(
        title=f"stages — counts: last 60 min; latency: hour from {current['period_start']}", expand=True
    )
    for col in ("stage", "completed (60 min)", "failed (hour)", "failure rate (hour)", "p50", "p95", "p99"):
        stages.add_column(col, justify="left" if col == "stage" else "right")
    live_counts = {
        "transcription": counts["transcriptions_completed"],
        "claims_extraction": counts["claims_extracted"],
        "entity_resolution": counts["entities_resolved"],
        "draft_generation": counts["drafts_generated"],
    }
    for s in current["stages"]:
        lat = s["latency_ms"]
        stages.add_row(
            s["stage"],
            str(live_counts.get(s["stage"], 0)),
            str(s["failed"]),
            f"{s['failure_rate']:.1%}",
            _ms(lat["p50"]),
            _ms(lat["p95"]),
            _ms(lat["p99"]),
        )
    e2e = current["end_to_end_latency_ms"]
    stages.add_row("end to end", str(e2e["count"]), "", "", _ms(e2e["p50"]), _ms(e2e["p95"]), _ms(e2e["p99"]))
    return Group(
        head,
        totals,
        stages,
        _artifacts("recent failures", data["failed"]["items"], "last_error_code"),
        _artifacts("stuck", data["stuck"]["items"], "current_stage"),
    )


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
    return Panel(table if items else Text("none", style="dim"), title=title)


def watch(url: str, key: str, organization_id: str | None = None, *, once: bool = False) -> None:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=10) as client:
        if once:
            Console().print(render(fetch(client, organization_id), url))
            return
        with Live(refresh_per_second=4, screen=False) as live:
            while True:
                try:
                    live.update(render(fetch(client, organization_id), url))
                except httpx.HTTPError as exc:
                    live.update(Text(f"cannot reach {url}: {exc.__class__.__name__}; retrying", style="red"))
                time.sleep(REFRESH_S)
