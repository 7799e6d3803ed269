"""A crash in the middle of aggregation (SPEC 20) leaves no partial rows, and the next run completes.

The crash is injected after a period's rows are written and before they commit (the worst moment): the
period keeps the rows it had, its late-data mark stays, the run is recorded as failed, and the next run
writes exactly what a run without the crash writes."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import NOW_MS, STAFF
from tests.helpers import ev
from tests.integration.test_aggregation import snapshot_table
from voicemon.domain.timeutil import DAY_MS, HOUR_MS, MINUTE_MS, floor_to, format_time
from voicemon.jobs import build_runner
from voicemon.service import Services
from voicemon.storage import snapshots as snapshot_store

YESTERDAY = floor_to(NOW_MS, DAY_MS) - DAY_MS
HOURS = [YESTERDAY + h * HOUR_MS for h in (9, 10, 11, 12)]


class Crash(Exception):
    """The process dying, as far as the transaction can tell: nothing after this point happens."""


def _traffic(services: Services, tag: str, per_hour: int) -> None:
    batch = [
        ev("artifact_received", f"{tag}-{h}-{i}", hour + i * MINUTE_MS, organization_id=f"org-{i % 3}")
        for h, hour in enumerate(HOURS)
        for i in range(per_hour)
    ]
    assert services.ingest_blocking(batch, STAFF).accepted == len(batch)


def _crash_on(monkeypatch: pytest.MonkeyPatch, nth: int) -> list[int]:
    """Make the ``nth`` period written crash after its rows went out; returns the periods written."""
    real = snapshot_store.replace_period
    written: list[int] = []

    def replace_then_crash(conn: Any, period_type: str, start_ms: int, *args: Any) -> None:
        real(conn, period_type, start_ms, *args)
        written.append(start_ms)
        if period_type == "hourly" and len(written) == nth:
            raise Crash(f"killed while writing {format_time(start_ms)}")

    monkeypatch.setattr(snapshot_store, "replace_period", replace_then_crash)
    return written


def _hours(services: Services) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    for row in snapshot_table(services):
        if row["period_type"] == "hourly" and row["period_start_ms"] in HOURS:
            out.setdefault(row["period_start_ms"], []).append(row)
    return out


def test_a_crash_mid_aggregation_leaves_no_partial_rows_and_the_next_run_completes(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = build_runner(services)
    _traffic(services, "first", 6)
    assert runner.run_now(STAFF, "aggregate-hourly").status == "succeeded"
    before = _hours(services)
    assert sorted(before) == HOURS

    _traffic(services, "late", 4)  # late data marks all four hours
    written = _crash_on(monkeypatch, nth=2)
    crashed = runner.run_now(STAFF, "aggregate-hourly")
    assert crashed.status == "failed"
    assert "killed while writing" in (crashed.error or "")
    assert written[:2] == HOURS[:2]
    after_crash = _hours(services)
    # The first hour committed whole before the crash; the crashed one kept every row it had.
    assert after_crash[HOURS[1]] == before[HOURS[1]]
    assert after_crash[HOURS[2]] == before[HOURS[2]]
    assert {r["artifacts_received"] for r in after_crash[HOURS[0]] if r["scope"] == ""} == {10}

    monkeypatch.undo()
    resumed = runner.run_now(STAFF, "aggregate-hourly")
    assert resumed.status == "succeeded", resumed.error
    assert format_time(HOURS[1]) in (resumed.summary or "")
    final = _hours(services)
    for hour in HOURS:
        platform = [r for r in final[hour] if r["scope"] == ""]
        assert [r["artifacts_received"] for r in platform] == [10], format_time(hour)
        assert sorted(r["scope"] for r in final[hour]) == ["", "org-0", "org-1", "org-2"]
    assert runner.run_now(STAFF, "aggregate-hourly").summary is not None
    assert _hours(services) == final, "a further run changes nothing: nothing was left marked"
