"""Realistic event streams for benchmarks, drawn from the simulated pipeline's model."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from voicemon.sim.model import SimConfig, organizations, pick_org, plan_journey


def events(count: int, start_ms: int, span_ms: int, seed: int = 1, orgs: int = 20) -> list[dict[str, Any]]:
    """About ``count`` JSON events of whole journeys, timestamped in ``[start_ms, start_ms + span_ms)``."""
    rng = random.Random(seed)
    config = SimConfig(organizations=orgs)
    org_list = organizations(config)
    out: list[dict[str, Any]] = []
    n = 0
    while len(out) < count:
        n += 1
        journey = plan_journey(f"b{seed}-{n}", pick_org(org_list, rng), rng, config)
        t0 = start_ms + rng.randrange(span_ms)
        for offset, event in journey.events:
            ts = t0 + int(offset)
            if ts >= start_ms + span_ms:
                break
            out.append(dict(event, event_id=f"b{seed}-{n}-{len(out)}", timestamp=ts))
            if len(out) >= count:
                break
    return out


def batches(items: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def fill_events_sql(conn: Any, count: int, start_ms: int, span_ms: int, *, postgres: bool) -> None:
    """``count`` stored event rows made by the database itself in one INSERT … SELECT (seconds for a
    million): stage starts and completions, a few failures, cost and model in the metadata, ten
    organizations. Only the raw events table is filled (no artifact summaries or counters): enough for
    whatever reads raw rows, such as an export. ``conn`` is a SQLAlchemy connection in a transaction."""
    from sqlalchemy import text

    series = (
        "generate_series(1, :n) AS s(g)"
        if postgres
        else "(WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < :n) SELECT g FROM s)"
    )
    step = max(span_ms // max(count, 1), 1)
    conn.execute(
        text(
            "INSERT INTO events (event_id, event_type, artifact_id, organization_id, voice_note_id,"
            " coach_user_id, pipeline_stage, ts_ms, received_ms, stage_started_at_ms,"
            " stage_completed_at_ms, duration_us, error_message, error_code, metadata, cost_nusd)"
            " SELECT 'fill-' || g,"
            " CASE WHEN g % 2 = 1 THEN 'transcription_started'"
            "      WHEN g % 50 = 0 THEN 'transcription_failed' ELSE 'transcription_completed' END,"
            " 'fill-art-' || (g / 2), 'org-' || (g % 10), 'note-' || (g / 2), 'coach-' || (g % 97),"
            " 'transcription', :start + g * :step, :start + g * :step + 40,"
            " CASE WHEN g % 2 = 0 THEN :start + (g - 1) * :step END,"
            " CASE WHEN g % 2 = 0 THEN :start + g * :step END,"
            " CASE WHEN g % 2 = 0 THEN :step * 1000 END,"
            " CASE WHEN g % 50 = 0 THEN 'provider timed out after 30 s' END,"
            " CASE WHEN g % 50 = 0 THEN 'timeout' END,"
            ' CASE WHEN g % 2 = 0 THEN \'{"ai_model": "whisper-1", "ai_cost_usd": 0.0021}\' END,'
            " CASE WHEN g % 2 = 0 THEN 2100000 ELSE 0 END"
            f" FROM {series}"
        ),
        {"n": count, "start": start_ms, "step": step},
    )
