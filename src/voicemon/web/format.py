"""How the dashboard writes numbers and times: exact, UTC, and honest about thin samples. No I/O."""

from __future__ import annotations

from typing import Any

from voicemon.domain.timeutil import format_time

# A percentile from fewer samples than this is shown as such, not as a confident number (SPEC 16).
FEW_SAMPLES = 10


def when(ms: int | None) -> str:
    """``2026-12-03 14:05:09 UTC``."""
    if ms is None:
        return "—"
    text = format_time(ms)
    return f"{text[:10]} {text[11:19]} UTC"


def iso_when(value: str | None) -> str:
    """An RFC 3339 reply time as :func:`when` writes it."""
    if not value:
        return "—"
    return f"{value[:10]} {value[11:19]} UTC"


def duration(value_ms: float | None) -> str:
    if value_ms is None:
        return "—"
    if value_ms >= 60_000:
        return f"{value_ms / 60_000:.1f} min"
    if value_ms >= 1000:
        return f"{value_ms / 1000:.2f} s"
    return f"{value_ms:.0f} ms"


def percentile(latency: dict[str, Any], name: str) -> str:
    """A percentile of a rendered latency (``{"count", "p50", ...}``), marked when its samples are few."""
    value = latency.get(name)
    if value is None:
        return "—"
    count = int(latency.get("count") or 0)
    if count < FEW_SAMPLES:
        return f"{duration(value)} (n={count}, too few)"
    return duration(value)


def pct(rate: float | None) -> str:
    return "—" if rate is None else f"{rate * 100:.1f} %"


def usd(value: float | None) -> str:
    if value is None:
        return "—"
    return f"${value:,.2f}" if abs(value) >= 1 else f"${value:.4f}"


def rate_class(rate: float, ended: int) -> str:
    """The colour of a failure rate: its own, never another stage's (no data: neutral)."""
    if ended == 0:
        return "none"
    if rate >= 0.20:
        return "bad"
    if rate >= 0.05:
        return "warn"
    return "ok"


FILTERS = {
    "when": when,
    "iso_when": iso_when,
    "duration": duration,
    "percentile": percentile,
    "pct": pct,
    "usd": usd,
}
