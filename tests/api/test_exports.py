"""Exports (SPEC 17): the rows of a list or range as CSV or JSON Lines, with the same filters and access,
stable columns, neutralised formulas, and a stream that fails loudly rather than short."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from bench.workload import fill_events_sql
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from tests.conftest import BACKEND, NOW_MS, STAFF, Api
from tests.helpers import assert_error, ev, serve_in_thread
from voicemon.api import create_app
from voicemon.domain.timeutil import HOUR_MS, MINUTE_MS
from voicemon.storage import events as event_store

ROOT = Path(__file__).resolve().parents[2]

# The columns are a contract: a column may be added at the end, never renamed, moved or dropped.
# fmt: off
FIXED: dict[str, tuple[str, ...]] = {
    "events": (
        "event_id", "event_type", "artifact_id", "organization_id", "voice_note_id", "coach_user_id",
        "pipeline_stage", "timestamp", "received_at", "stage_started_at", "stage_completed_at",
        "duration_ms", "previous_status", "new_status", "error_code", "error_message", "ai_model",
        "ai_cost_usd", "confidence_score", "claim_count", "entity_count", "draft_count", "metadata",
    ),
    "artifacts": (
        "artifact_id", "organization_id", "voice_note_id", "coach_user_id", "source_channel", "status",
        "stuck", "current_stage", "failed_stage", "last_error_code", "last_error_message", "received_at",
        "completed_at", "last_event_at", "event_count", "retry_count", "total_ai_cost_usd",
    ),
    "history": (
        "period_type", "period_start", "period_end", "organization_id", "computed_at", "live",
        "artifacts_received", "artifacts_completed", "artifacts_failed", "overall_failure_rate",
        *(
            f"{stage}_{field}"
            for stage in ("transcription", "claims_extraction", "entity_resolution", "draft_generation")
            for field in (
                "completed", "failed", "failure_rate", "latency_count", "latency_avg_ms",
                "latency_p50_ms", "latency_p95_ms", "latency_p99_ms",
            )
        ),
        "end_to_end_latency_count", "end_to_end_latency_avg_ms", "end_to_end_latency_p50_ms",
        "end_to_end_latency_p95_ms", "end_to_end_latency_p99_ms", "avg_transcript_confidence",
        "avg_claim_confidence", "auto_resolution_rate", "disambiguation_rate", "total_claims_extracted",
        "total_entities_resolved", "total_drafts_generated", "total_ai_cost_usd",
        "avg_cost_per_artifact_usd",
    ),
    "orgs": (
        "organization_id", "organization_name", "artifacts_received", "artifacts_completed",
        "artifacts_failed", "overall_failure_rate", "total_ai_cost_usd", "avg_cost_per_artifact_usd",
        "end_to_end_latency_count", "end_to_end_latency_avg_ms", "end_to_end_latency_p50_ms",
        "end_to_end_latency_p95_ms", "end_to_end_latency_p99_ms",
    ),
}
# fmt: on
RANGE = f"period=hourly&start={NOW_MS - 3 * HOUR_MS}"
QUERY = {"events": "", "artifacts": "", "history": RANGE, "orgs": RANGE}
FORMULA = '=HYPERLINK("http://evil.example","click")'


def _journey(i: int, org: str | None) -> list[dict[str, Any]]:
    t0 = NOW_MS - 2 * HOUR_MS + i * 11_000
    aid = f"x-{org or 'none'}-{i}"
    extra = {"organization_id": org} if org else {}
    events = [
        ev("artifact_received", aid, t0, voice_note_id=f"n-{i}", coach_user_id=f"c-{i % 7}", **extra),
        ev("transcription_started", aid, t0 + 1000, **extra),
    ]
    if i % 5 == 4:
        message = FORMULA if i % 10 == 4 else "provider timed out"
        events.append(
            ev(
                "transcription_failed",
                aid,
                t0 + 4000,
                error_code="timeout",
                error_message=message,
                duration_ms=3000,
                **extra,
            )
        )
    else:
        meta = {"ai_model": "whisper-1", "ai_cost_usd": 0.0125, "confidence_score": 0.9}
        events.append(ev("transcription_completed", aid, t0 + 3500, duration_ms=2500, metadata=meta, **extra))
    return events


@pytest.fixture
def seeded(api: Api) -> Api:
    """About 1200 events of 400 artifacts in org-a, org-b and no organization: more than two pieces of
    an export, with failures, costs, and a formula in some error messages."""
    items = [e for i in range(400) for e in _journey(i, ("org-a", "org-b", None)[i % 3])]
    for start in range(0, len(items), 1000):
        result = api.services.ingest_blocking(items[start : start + 1000], STAFF)
        assert not result.rejected, result.rejected
    return api


def _export(api: Api, kind: str, fmt: str, query: str = "", key: str | None = None) -> httpx.Response:
    reply = api.call("GET", f"/v1/exports/{kind}?format={fmt}{'&' + query if query else ''}", key)
    assert reply.status_code == 200, reply.text
    return reply


def _rows(reply: Any, fmt: str) -> tuple[list[str], list[dict[str, Any]]]:
    """The header and the rows of an export, as dicts (CSV cells are strings, JSON Lines typed)."""
    if fmt == "csv":
        assert reply.headers["content-type"] == "text/csv; charset=utf-8"
        table = list(csv.reader(io.StringIO(reply.text, newline="")))
        header, body = table[0], table[1:]
        return header, [dict(zip(header, row, strict=True)) for row in body]
    assert reply.headers["content-type"] == "application/x-ndjson"
    lines = [orjson.loads(line) for line in reply.content.splitlines()]
    return (list(lines[0]) if lines else []), lines


def _listed(api: Api, path: str, query: str, key: str | None = None) -> list[dict[str, Any]]:
    """Every item of a paged list."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = api.call("GET", f"{path}?limit=500{'&' + query if query else ''}", key,
                        params={"cursor": cursor} if cursor else None)  # fmt: skip
        assert page.status_code == 200, page.text
        items += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return items


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize(
    "query",
    [
        "",
        "event_type=transcription_failed",
        "organization_id=org-b&pipeline_stage=transcription",
        f"start={NOW_MS - 90 * MINUTE_MS}&end={NOW_MS - 60 * MINUTE_MS}",
    ],
)
def test_every_event_of_a_filtered_list_is_exported_once(seeded: Api, fmt: str, query: str) -> None:
    listed = _listed(seeded, "/v1/events", query)
    _, rows = _rows(_export(seeded, "events", fmt, query), fmt)
    assert listed, "the filter keeps some events"
    exported = [r["event_id"] for r in rows]
    assert len(exported) == len(set(exported))
    assert sorted(exported) == sorted(e["event_id"] for e in listed)
    # Oldest first, as a file is read.
    times = [r["timestamp"] for r in rows]
    assert times == sorted(times)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize("query", ["", "status=failed", "status=active&organization_id=org-a"])
def test_every_artifact_of_a_filtered_list_is_exported_once(seeded: Api, fmt: str, query: str) -> None:
    listed = _listed(seeded, "/v1/artifacts", query)
    _, rows = _rows(_export(seeded, "artifacts", fmt, query), fmt)
    assert listed
    keys = [(r["organization_id"] or None, r["artifact_id"]) for r in rows]
    assert len(keys) == len(set(keys))
    assert sorted(keys, key=str) == sorted(
        ((a["organization_id"], a["artifact_id"]) for a in listed), key=str
    )


def test_an_exported_event_carries_what_the_list_shows(seeded: Api) -> None:
    listed = {e["event_id"]: e for e in _listed(seeded, "/v1/events", "")}
    _, typed = _rows(_export(seeded, "events", "jsonl"), "jsonl")
    _, text = _rows(_export(seeded, "events", "csv"), "csv")
    for row, cells in zip(typed, text, strict=True):
        shown = listed[row["event_id"]]
        for name in ("event_type", "artifact_id", "organization_id", "timestamp", "received_at"):
            assert row[name] == shown[name], name
        assert row["duration_ms"] == shown["duration_ms"]
        assert row["metadata"] == shown["metadata"]
        assert row["error_message"] == shown["error_message"]
        assert cells["duration_ms"] == ("" if shown["duration_ms"] is None else str(shown["duration_ms"]))
        if shown["metadata"]:
            assert row["ai_model"] == "whisper-1"
            assert row["ai_cost_usd"] == pytest.approx(0.0125)
            assert row["confidence_score"] == pytest.approx(0.9)
            assert orjson.loads(cells["metadata"]) == shown["metadata"]
            assert float(cells["ai_cost_usd"]) == pytest.approx(0.0125)
        else:
            assert row["ai_model"] is None
            assert row["ai_cost_usd"] == 0.0
            assert cells["metadata"] == ""
            assert cells["ai_model"] == ""


def test_an_organization_key_exports_only_its_organization(seeded: Api) -> None:
    viewer = seeded.key("viewer", "org-a")
    for kind in ("events", "artifacts"):
        _, rows = _rows(_export(seeded, kind, "jsonl", key=viewer), "jsonl")
        assert rows
        assert {r["organization_id"] for r in rows} == {"org-a"}
        everyone = _rows(_export(seeded, kind, "jsonl"), "jsonl")[1]
        assert len(rows) == sum(r["organization_id"] == "org-a" for r in everyone)
    refused = seeded.call("GET", "/v1/exports/events?format=csv&organization_id=org-b", viewer)
    assert_error(refused, 403, "forbidden_organization")
    _, history = _rows(_export(seeded, "history", "jsonl", f"{RANGE}&organization_id=org-a", viewer), "jsonl")
    assert history
    assert {r["organization_id"] for r in history} == {"org-a"}


def test_a_formula_is_neutralised_in_csv_and_kept_in_json_lines(seeded: Api) -> None:
    _, text = _rows(_export(seeded, "events", "csv", "event_type=transcription_failed"), "csv")
    _, typed = _rows(_export(seeded, "events", "jsonl", "event_type=transcription_failed"), "jsonl")
    assert "'" + FORMULA in {r["error_message"] for r in text}
    assert not any(r["error_message"].startswith(("=", "+", "-", "@")) for r in text)
    assert FORMULA in {r["error_message"] for r in typed}
    _, artifacts = _rows(_export(seeded, "artifacts", "csv", "status=failed"), "csv")
    assert "'" + FORMULA in {r["last_error_message"] for r in artifacts}


def test_history_and_the_breakdown_are_the_replies_flattened(seeded: Api) -> None:
    reply = seeded.call("GET", f"/v1/metrics/history?{RANGE}&organization_id=org-b").json()["items"]
    _, rows = _rows(_export(seeded, "history", "jsonl", f"{RANGE}&organization_id=org-b"), "jsonl")
    assert len(rows) == len(reply) >= 2
    for row, item in zip(rows, reply, strict=True):
        assert row["period_start"] == item["period_start"]
        assert row["live"] is item.get("live", False)
        assert row["artifacts_received"] == item["artifacts_received"]
        transcription = next(s for s in item["stages"] if s["stage"] == "transcription")
        assert row["transcription_failed"] == transcription["failed"]
        assert row["transcription_latency_count"] == transcription["latency_ms"]["count"]
        assert row["transcription_latency_p95_ms"] == transcription["latency_ms"]["p95"]
        assert row["end_to_end_latency_p50_ms"] == item["end_to_end_latency_ms"]["p50"]
    _, platform = _rows(_export(seeded, "history", "jsonl", RANGE), "jsonl")
    assert platform
    assert all("organization_id" not in r for r in platform)
    _, csv_rows = _rows(_export(seeded, "history", "csv", RANGE), "csv")
    assert {r["organization_id"] for r in csv_rows} == {""}

    breakdown = seeded.call("GET", f"/v1/metrics/orgs?{RANGE}").json()["items"]
    _, orgs = _rows(_export(seeded, "orgs", "csv", RANGE), "csv")
    assert [r["organization_id"] for r in orgs] == [i["organization_id"] for i in breakdown]
    for row, item in zip(orgs, breakdown, strict=True):
        assert int(row["artifacts_received"]) == item["artifacts_received"]
        assert float(row["total_ai_cost_usd"]) == pytest.approx(item["total_ai_cost_usd"])


@pytest.mark.parametrize("kind", list(FIXED))
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_the_columns_are_the_documented_contract(seeded: Api, kind: str, fmt: str) -> None:
    header, rows = _rows(_export(seeded, kind, fmt, QUERY[kind]), fmt)
    assert rows
    fixed = FIXED[kind]
    if fmt == "jsonl" and "organization_id" not in header:
        header.insert(fixed.index("organization_id"), "organization_id")  # a platform row omits it
    assert tuple(header[: len(fixed)]) == fixed, "a column was renamed, moved or dropped"
    documented = _documented(kind)
    assert [c for c in header if c not in documented] == [], "every column is in docs/exports.md"


def _documented(kind: str) -> set[str]:
    """The column names in the table under ``## <kind>`` of docs/exports.md (history's snapshot part
    is one table of its own, the stage columns written with ``<stage>_``)."""
    text = (ROOT / "docs" / "exports.md").read_text()
    section = re.search(rf"^## {kind}\b.*?(?=^## |\Z)", text, re.S | re.M)
    assert section, f"docs/exports.md has a section for {kind}"
    names = set(re.findall(r"^\| `([a-z0-9_<>]+)` \|", section.group(0), re.M))
    if kind in ("history", "orgs"):
        names |= set(re.findall(r"^\| `([a-z0-9_<>]+)` \|", _snapshot_section(text), re.M))
    stages = ("transcription", "claims_extraction", "entity_resolution", "draft_generation")
    return {n.replace("<stage>", s) for n in names for s in stages}


def _snapshot_section(text: str) -> str:
    found = re.search(r"^## snapshot fields\b.*?(?=^## |\Z)", text, re.S | re.M)
    assert found, "docs/exports.md has a section for the snapshot fields"
    return found.group(0)


def test_a_bad_format_or_filter_is_refused_before_the_file(seeded: Api) -> None:
    assert_error(seeded.call("GET", "/v1/exports/events"), 422, field="format")
    assert_error(seeded.call("GET", "/v1/exports/events?format=xlsx"), 422, field="format")
    assert_error(seeded.call("GET", "/v1/exports/artifacts?format=csv&status=lost"), 422, field="status")
    assert_error(seeded.call("GET", "/v1/exports/events?format=csv&start=yesterday"), 422, field="start")
    assert_error(
        seeded.call("GET", f"/v1/exports/history?format=csv&start={NOW_MS}&end={NOW_MS - 1}"),
        422,
        "empty_range",
        field="start",
    )


def _read_into(reply: httpx.Response, received: bytearray) -> None:
    for chunk in reply.iter_bytes():
        received += chunk


def test_a_failure_in_the_middle_of_a_stream_reaches_the_client(
    seeded: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = event_store.stream_events

    def failing(*args: Any) -> Iterator[Any]:
        for i, row in enumerate(real(*args)):
            if i == 700:  # after the first piece of the file has gone out
                raise OperationalError("FETCH", {}, Exception("server closed the connection"))
            yield row

    monkeypatch.setattr(event_store, "stream_events", failing)
    headers = {"Authorization": f"Bearer {seeded.staff_key}"}
    with serve_in_thread(create_app(services=seeded.services)) as url:
        for fmt in ("csv", "jsonl"):
            received = bytearray()
            with httpx.stream("GET", f"{url}/v1/exports/events?format={fmt}", headers=headers) as reply:
                assert reply.status_code == 200
                with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
                    _read_into(reply, received)
            assert received.count(b"\n") >= 500, "the first piece arrived before the failure"
        monkeypatch.setattr(event_store, "stream_events", real)
        whole = httpx.get(f"{url}/v1/exports/events?format=csv", headers=headers)
        assert whole.status_code == 200
        assert whole.text.count("\r\n") == 1201
        scrape = httpx.get(f"{url}/metrics", headers=headers).text
    assert 'voicemon_exports_total{format="csv",kind="events",outcome="aborted"} 1.0' in scrape
    assert 'voicemon_exports_total{format="csv",kind="events",outcome="completed"} 1.0' in scrape


@pytest.mark.skipif(BACKEND != "postgresql", reason="ends a PostgreSQL session from outside")
def test_a_database_session_killed_mid_stream_breaks_the_transfer(api: Api) -> None:
    """A real failure, not an injected one: the export's own database session is terminated while the
    client is still reading. The client must see a broken transfer, never a clean end."""
    with api.services.db.write() as conn:
        fill_events_sql(conn, 100_000, NOW_MS - 3 * HOUR_MS, 2 * HOUR_MS, postgres=True)
    headers = {"Authorization": f"Bearer {api.staff_key}"}
    with serve_in_thread(create_app(services=api.services)) as url:
        received = bytearray()
        with httpx.stream("GET", f"{url}/v1/exports/events?format=csv", headers=headers, timeout=60) as reply:
            assert reply.status_code == 200
            chunks = reply.iter_bytes()
            received += next(chunks)
            with api.services.db.write() as conn:
                ended = conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                        " AND xact_start IS NOT NULL AND (query ILIKE '%events%' OR query ILIKE 'FETCH%')"
                    )
                ).all()
            assert ended, "the export's session was found"
            with pytest.raises(httpx.RemoteProtocolError):
                received += b"".join(chunks)
    assert received.count(b"\n") < 100_001
