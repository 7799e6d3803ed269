"""Hostile input through the real HTTP API, in-process, on SQLite and PostgreSQL alike.

Strings no database can hold (NUL, lone surrogates), loose JSON types, times outside RFC 3339, integers
beyond 64 bits and empty parameters: each is refused with the one error body naming the field and the
rule, before any database sees it, and leaves nothing behind. Bodies are sent as bytes written by
``json.dumps`` (escapes such as ``\\ud800`` included), as a hostile client would send them.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.conftest import NOW_MS, Api
from tests.helpers import assert_error, ev, items_of
from voicemon.clock import FakeClock
from voicemon.domain.access import SYSTEM
from voicemon.domain.timeutil import HOUR_MS, MINUTE_MS, floor_to, format_time
from voicemon.errors import ValidationError
from voicemon.service import Services
from voicemon.storage.tables import metadata

JSON = {"Content-Type": "application/json"}
BAD_TEXT = {"nul": "a\x00b", "high surrogate": "a\ud800b", "low surrogate": "\udfff"}


def send(api: Api, method: str, path: str, body: object, key: str | None = None) -> Any:
    return api.call(method, path, key, content=json.dumps(body).encode(), headers=JSON)


def row_counts(services: Services) -> dict[str, int]:
    with services.db.read() as conn:
        return {
            t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in metadata.sorted_tables
        }


def failed_artifact(api: Api) -> None:
    """a1 of org-h, failed in transcription, with a retry handler ready: a retry would be written."""
    api.services.set_retry_handler(lambda _: None)
    r = send(
        api,
        "POST",
        "/v1/events",
        {
            "events": [
                ev("artifact_received", "a1", NOW_MS - 10 * MINUTE_MS, organization_id="org-h"),
                ev("transcription_failed", "a1", NOW_MS - 8 * MINUTE_MS, organization_id="org-h"),
            ]
        },
    )
    assert r.json()["accepted"] == 2, r.text


# --- strings no database can hold ---------------------------------------------------------------------


@pytest.mark.parametrize("bad", BAD_TEXT.values(), ids=BAD_TEXT.keys())
def test_a_retry_reason_no_database_can_hold_is_422_and_writes_nothing(api: Api, bad: str) -> None:
    failed_artifact(api)
    before = row_counts(api.services)
    r = send(api, "POST", "/v1/artifacts/a1/retries", {"stage": "full", "reason": f"ops {bad}"})
    assert "must not contain" in assert_error(r, 422, "invalid_character", "reason")
    assert row_counts(api.services) == before
    # The same retry with a clean reason goes through.
    assert (
        send(api, "POST", "/v1/artifacts/a1/retries", {"stage": "full", "reason": "ops"}).status_code == 202
    )


@pytest.mark.parametrize(
    "bad", [*BAD_TEXT.values(), "Acme\x1b[2J", "two\nlines", "tab\there", "\x7f"], ids=repr
)
def test_an_org_name_is_one_line_of_storable_text(api: Api, bad: str) -> None:
    r = send(api, "PUT", "/v1/orgs/org-a", {"name": bad})
    assert "must not contain" in assert_error(r, 422, "invalid_character", "name")
    assert items_of(api.call("GET", "/v1/orgs")) == []
    assert send(api, "PUT", "/v1/orgs/org-a", {"name": "Acme Ünïcödé 東京"}).status_code == 200


def test_an_org_id_in_the_path_follows_the_same_rule(api: Api) -> None:
    r = send(api, "PUT", "/v1/orgs/org%00a", {"name": "Acme"})
    assert_error(r, 422, "invalid_character", "organization_id")
    assert items_of(api.call("GET", "/v1/orgs")) == []


@pytest.mark.parametrize(
    ("name", "org", "field", "code"),
    [
        ("a\x00b", None, "name", "invalid_character"),
        ("a\ud800", None, "name", "invalid_character"),
        ("line\nbreak", None, "name", "invalid_character"),
        ("n" * 201, None, "name", "invalid_length"),
        ("   ", None, "name", "invalid_length"),
        ("ok", "org\x00", "org", "invalid_character"),
        ("ok", "org\udc00", "org", "invalid_character"),
    ],
)
def test_a_key_name_and_org_are_checked_before_the_database(
    api: Api, name: str, org: str | None, field: str, code: str
) -> None:
    keys_before = api.services.keys.list(SYSTEM)
    with pytest.raises(ValidationError) as refused:
        api.services.keys.create(SYSTEM, "viewer", org, name)
    assert (refused.value.field, refused.value.code) == (field, code)
    assert api.services.keys.list(SYSTEM) == keys_before


STRING_FIELDS = ("event_id", "artifact_id", "organization_id", "voice_note_id", "coach_user_id")


@pytest.mark.parametrize("field", [*STRING_FIELDS, "error_message", "error_code", "metadata.note"])
def test_an_event_string_with_nul_is_refused_per_item(api: Api, field: str) -> None:
    bad = ev("transcription_failed", "a1", NOW_MS - MINUTE_MS, organization_id="org-h")
    if field == "metadata.note":
        bad["metadata"] = {"note": "a\x00b"}
    else:
        bad[field] = "a\x00b"
    good = ev("artifact_received", "a2", NOW_MS - MINUTE_MS)
    r = send(api, "POST", "/v1/events", {"events": [bad, good]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["accepted"] == 1
    [rejected] = body["rejected"]
    assert rejected["index"] == 0
    assert [(e["field"], e["code"]) for e in rejected["errors"]] == [(field, "invalid_character")]
    assert [e["artifact_id"] for e in items_of(api.call("GET", "/v1/events"))] == ["a2"]


def test_a_lone_surrogate_escape_makes_an_events_body_invalid_json(api: Api) -> None:
    event = ev("artifact_received", "a\ud800", NOW_MS - MINUTE_MS)
    r = send(api, "POST", "/v1/events", event)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_json"
    assert items_of(api.call("GET", "/v1/events")) == []


# --- integers exactly as given ------------------------------------------------------------------------


@pytest.mark.parametrize("value", [2**64, 2**63, -(2**63) - 1, 10**30])
def test_metadata_integers_beyond_64_bits_are_refused_naming_the_key(api: Api, value: int) -> None:
    event = ev("artifact_received", "a1", NOW_MS - MINUTE_MS, metadata={"x": value, "ok": 1})
    body = send(api, "POST", "/v1/events", event).json()
    assert body["accepted"] == 0
    [rejected] = body["rejected"]
    assert [(e["field"], e["code"]) for e in rejected["errors"]] == [("metadata.x", "out_of_range")]


def test_metadata_numbers_come_back_exactly_as_given(api: Api) -> None:
    given = {"max": 2**63 - 1, "min": -(2**63), "float": 1e19, "big_float": 1.8446744073709552e19, "n": 7}
    event = ev("artifact_received", "a1", NOW_MS - MINUTE_MS, metadata=given)
    assert send(api, "POST", "/v1/events", event).json()["accepted"] == 1
    [stored] = items_of(api.call("GET", "/v1/events"))
    assert stored["metadata"] == given
    assert {k: type(v) for k, v in stored["metadata"].items()} == {k: type(v) for k, v in given.items()}


# --- RFC 3339 only -----------------------------------------------------------------------------------

NOT_RFC3339 = [
    "20261207T014000Z",
    "2026-12-07T01:40Z",
    "2026-12-07T01Z",
    "2026-12-07T01:40:00+0000",
    "2026-12-07T01:40:00+00:00:00",
    "2026-12-07 01:40:00Z",
]


@pytest.mark.parametrize("text", NOT_RFC3339)
def test_event_times_outside_rfc3339_are_refused(api: Api, text: str) -> None:
    event = ev("artifact_received", "a1", timestamp=text)
    [rejected] = send(api, "POST", "/v1/events", event).json()["rejected"]
    assert [(e["field"], e["code"]) for e in rejected["errors"]] == [("timestamp", "invalid_time")]


@pytest.mark.parametrize("text", NOT_RFC3339)
@pytest.mark.parametrize("path", ["/v1/events", "/v1/metrics/summary"])
def test_query_times_outside_rfc3339_are_refused(api: Api, path: str, text: str) -> None:
    r = api.call("GET", path, params={"start": text})
    assert "RFC 3339" in assert_error(r, 422, "invalid_time", "start")


# --- empty and unstorable query parameters ------------------------------------------------------------

TIME_RANGE_GETS = [
    "/v1/events",
    "/v1/metrics/history",
    "/v1/metrics/summary",
    "/v1/metrics/stages",
    "/v1/metrics/orgs",
]


@pytest.mark.parametrize("param", ["start", "end"])
@pytest.mark.parametrize("path", TIME_RANGE_GETS)
def test_an_empty_time_parameter_is_refused_naming_it(api: Api, path: str, param: str) -> None:
    assert_error(api.call("GET", f"{path}?{param}="), 422, "empty", param)


@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("/v1/events", "cursor"),
        ("/v1/events", "limit"),
        ("/v1/events", "event_type"),
        ("/v1/events", "organization_id"),
        ("/v1/artifacts", "status"),
        ("/v1/artifacts", "cursor"),
        ("/v1/metrics/realtime", "organization_id"),
        ("/v1/metrics/history", "period"),
        ("/v1/jobs/aggregate-hourly/runs", "limit"),
    ],
)
def test_any_empty_query_parameter_is_refused_naming_it(api: Api, path: str, param: str) -> None:
    assert_error(api.call("GET", f"{path}?{param}="), 422, "empty", param)


@pytest.mark.parametrize("path", ["/v1/events", "/v1/artifacts", "/v1/metrics/realtime"])
def test_a_query_value_with_nul_is_refused_naming_it(api: Api, path: str) -> None:
    assert_error(
        api.call("GET", f"{path}?organization_id=org%00a"), 422, "invalid_character", "organization_id"
    )


# --- job targets -------------------------------------------------------------------------------------


def runs_of(api: Api, job: str) -> list[dict[str, Any]]:
    return items_of(api.call("GET", f"/v1/jobs/{job}/runs"))


@pytest.mark.parametrize("target", [False, True, 1.5, 0.0, [], {}, *NOT_RFC3339])
@pytest.mark.parametrize("job", ["aggregate-hourly", "aggregate-daily"])
def test_a_job_target_that_is_not_a_time_is_refused_and_runs_nothing(
    api: Api, job: str, target: object
) -> None:
    before = row_counts(api.services)
    r = send(api, "POST", f"/v1/jobs/{job}/runs", {"target": target})
    assert_error(r, 422, "invalid_time", "target")
    assert runs_of(api, job) == []
    assert row_counts(api.services) == before


def test_a_job_target_takes_rfc3339_and_epoch_ms(api: Api) -> None:
    hour = format_time(NOW_MS - 2 * HOUR_MS)
    for target in (hour, NOW_MS - 2 * HOUR_MS):
        r = send(api, "POST", "/v1/jobs/aggregate-hourly/runs", {"target": target})
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "succeeded"


@pytest.mark.parametrize("target", [0, "1970-01-01T00:00:00Z", NOW_MS - 49 * HOUR_MS])
def test_an_hourly_target_beyond_raw_event_retention_is_refused(api: Api, target: object) -> None:
    before = row_counts(api.services)
    r = send(api, "POST", "/v1/jobs/aggregate-hourly/runs", {"target": target})
    assert r.status_code in (409, 422), r.text
    assert r.json()["error"]["message"].startswith("target: ")
    assert row_counts(api.services) == before


def test_an_hour_whose_raw_events_are_gone_keeps_its_snapshot(api: Api, clock: FakeClock) -> None:
    """Aggregating again an hour whose raw events were deleted would replace its rows with zeros."""
    hour = floor_to(NOW_MS, HOUR_MS) - HOUR_MS
    events = [ev("artifact_received", f"a{i}", hour + i * MINUTE_MS) for i in range(5)]
    assert send(api, "POST", "/v1/events", {"events": events}).json()["accepted"] == 5
    assert send(api, "POST", "/v1/jobs/aggregate-hourly/runs", {"target": hour}).status_code == 200
    summary = f"/v1/metrics/summary?start={hour}&end={hour + HOUR_MS}"
    assert api.call("GET", summary).json()["artifacts_received"] == 5
    clock.advance(49 * HOUR_MS)
    assert send(api, "POST", "/v1/jobs/cleanup-events/runs", {}).json()["status"] == "succeeded"
    r = send(api, "POST", "/v1/jobs/aggregate-hourly/runs", {"target": hour})
    assert api.call("GET", summary).json()["artifacts_received"] == 5
    assert r.status_code in (409, 422), r.text
