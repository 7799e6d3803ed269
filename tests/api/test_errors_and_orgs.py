"""Error replies (SPEC 7), the organization directory round trip, and /healthz."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tests.conftest import NOW_MS, STAFF, Api
from tests.helpers import assert_error, ev, items_of
from voicemon.clock import FakeClock
from voicemon.domain.timeutil import MINUTE_MS, format_time

# --- 404 and 405 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/nope", "/v2/events", "/nope", "/v1/events/extra/segments"])
@pytest.mark.parametrize("with_key", [True, False])
def test_unknown_route_is_404(api: Api, path: str, with_key: bool) -> None:
    """Under /v1 the key is checked first (before any body is read), so a keyless caller learns nothing
    of which routes exist."""
    r = api.call("GET", path, None if with_key else "")
    if with_key or not path.startswith("/v1/"):
        assert_error(r, 404, "not_found")
    else:
        assert_error(r, 401, "missing_key")


def test_the_root_is_the_dashboard_which_asks_for_a_session(api: Api) -> None:
    r = api.client.get("/", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/login?next=%2F"


def test_wrong_method_is_405_with_the_error_shape(api: Api) -> None:
    assert_error(api.call("DELETE", "/v1/events"), 405, "method_not_allowed")
    assert_error(api.call("POST", "/v1/orgs"), 405, "method_not_allowed")


def test_unknown_artifact_is_404(api: Api) -> None:
    message = assert_error(api.call("GET", "/v1/artifacts/never-seen"), 404, "artifact_not_found")
    assert "never-seen" in message


# --- 422 on query parameters ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=-1", "limit"),
        ("limit=ten", "limit"),
        ("cursor=" + "c" * 4097, "cursor"),
        ("start=yesterday", "start"),
        ("start=2026-11-28T13:00:00", "start"),  # no offset
        ("end=2026-13-45T00:00:00Z", "end"),
        ("end=" + "9" * 5000, "end"),
        ("start=--5", "start"),
        ("event_type=artifact_exploded", "event_type"),
        ("pipeline_stage=digestion", "pipeline_stage"),
        ("organization_id=", "organization_id"),
        ("artifact_id=" + "a" * 129, "artifact_id"),
        ("artifact_id=a%00b", "artifact_id"),
    ],
)
def test_bad_event_list_parameters_are_422_naming_the_field(api: Api, query: str, field: str) -> None:
    message = assert_error(api.call("GET", f"/v1/events?{query}"), 422)
    assert message.startswith(f"{field}:") or f" {field}:" in message, message


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=1000", "limit"),
        ("status=sleeping", "status"),
        ("organization_id=" + "o" * 129, "organization_id"),
    ],
)
def test_bad_artifact_list_parameters_are_422_naming_the_field(api: Api, query: str, field: str) -> None:
    message = assert_error(api.call("GET", f"/v1/artifacts?{query}"), 422)
    assert message.startswith(f"{field}:"), message


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("start=yesterday", "invalid_time"),
        ("start=2026-11-28T13:00:00", "naive_time"),
    ],
)
def test_time_errors_carry_their_own_code(api: Api, query: str, code: str) -> None:
    assert_error(api.call("GET", f"/v1/events?{query}"), 422, code)


# --- 400 on cursors the list did not return ---------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/events", "/v1/artifacts"])
@pytest.mark.parametrize(
    "cursor",
    [
        "not-a-cursor",
        "%%%",
        "WyJhcnQiLDEsIngiXQ",  # a cursor of the artifact list in an older format, without its filter
        "WyJldiIsMSwyXQ",  # the same for the event list
    ],
)
def test_a_cursor_the_list_did_not_return_is_400(api: Api, path: str, cursor: str) -> None:
    message = assert_error(api.call("GET", f"{path}?cursor={cursor}"), 400, "invalid_cursor", "cursor")
    assert message, message


def test_a_cursor_of_one_list_is_refused_by_another(api: Api) -> None:
    events = [ev("artifact_received", f"c{i}", NOW_MS - i * MINUTE_MS) for i in range(3)]
    assert api.services.ingest_blocking(events, STAFF).accepted == 3
    page = api.call("GET", "/v1/events?limit=1").json()
    assert page["next_cursor"]
    following = api.call("GET", f"/v1/events?limit=1&cursor={page['next_cursor']}")
    assert items_of(following) != page["items"]
    assert_error(api.call("GET", f"/v1/artifacts?cursor={page['next_cursor']}"), 400, "invalid_cursor")


def _cursor(*parts: object) -> str:
    """A cursor made by hand: base64url JSON without padding, like the ones the lists return."""
    return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode().rstrip("=")


def _forged(api: Api, path: str, *key: object) -> str:
    """A cursor of ``path`` (unfiltered) with its key replaced by ``key``: the list and filter it names
    are right, the place is made up."""
    events = [ev("artifact_received", f"f{i}", NOW_MS - i * MINUTE_MS) for i in range(2)]
    assert api.services.ingest_blocking(events, STAFF).accepted in (0, 2)
    real = api.call("GET", f"{path}?limit=1").json()["next_cursor"]
    kind, tag, *_ = json.loads(base64.urlsafe_b64decode(real + "=" * (-len(real) % 4)))
    return _cursor(kind, tag, *key)


@pytest.mark.parametrize(
    ("path", "key"),
    [
        # Keys no database column can hold: beyond 64 bits, or a string with NUL (PostgreSQL text).
        ("/v1/events", (2**63, 1)),
        ("/v1/events", (-(2**63) - 1, 1)),
        ("/v1/events", (1, 2**64)),
        ("/v1/events", (1,)),
        ("/v1/artifacts", (0, 2**63, "a1", "")),
        ("/v1/artifacts", (0, 1, "a\x00", "")),
        ("/v1/artifacts", (0, 1, True, "")),
        ("/v1/artifacts", (1, "a1", "")),
    ],
)
def test_forged_cursors_are_400_not_a_server_error(api: Api, path: str, key: tuple[object, ...]) -> None:
    assert_error(api.call("GET", f"{path}?cursor={_forged(api, path, *key)}"), 400, "invalid_cursor")


@pytest.mark.parametrize(
    ("path", "key"), [("/v1/events", (-(2**62), 7)), ("/v1/artifacts", (0, 5, "z", "org-z"))]
)
def test_hand_made_cursors_in_range_are_served(api: Api, path: str, key: tuple[object, ...]) -> None:
    assert items_of(api.call("GET", f"{path}?cursor={_forged(api, path, *key)}")) == []


def test_good_parameters_are_accepted(api: Api) -> None:
    # The control for the table above: the same parameters with valid values are served.
    query = "limit=500&start=2026-11-28T13:00:00%2B02:00&end=1796563200000&event_type=artifact_received"
    assert items_of(api.call("GET", f"/v1/events?{query}")) == []
    assert items_of(api.call("GET", "/v1/artifacts?limit=1&status=stuck")) == []


# --- the organization directory ---------------------------------------------------------------------


def test_put_then_list_round_trip(api: Api) -> None:
    assert items_of(api.call("GET", "/v1/orgs")) == []

    r = api.call("PUT", "/v1/orgs/org-a", json={"name": "Alpha Coaching"})
    assert r.status_code == 200, r.text
    assert r.json() == {
        "organization_id": "org-a",
        "name": "Alpha Coaching",
        "updated_at": format_time(NOW_MS),
    }
    assert api.call("PUT", "/v1/orgs/org-b", json={"name": "  Béta — ünïcode  "}).status_code == 200

    listed = {o["organization_id"]: o for o in items_of(api.call("GET", "/v1/orgs"))}
    assert listed == {
        "org-a": {"organization_id": "org-a", "name": "Alpha Coaching", "updated_at": format_time(NOW_MS)},
        "org-b": {
            "organization_id": "org-b",
            "name": "  Béta — ünïcode  ",
            "updated_at": format_time(NOW_MS),
        },
    }


def test_put_again_renames_without_duplicating(api: Api, clock: FakeClock) -> None:
    assert api.call("PUT", "/v1/orgs/org-a", json={"name": "Old"}).status_code == 200
    clock.advance(MINUTE_MS)
    r = api.call("PUT", "/v1/orgs/org-a", json={"name": "New"})
    assert r.status_code == 200, r.text
    items = items_of(api.call("GET", "/v1/orgs"))
    assert items == [
        {"organization_id": "org-a", "name": "New", "updated_at": format_time(NOW_MS + MINUTE_MS)}
    ]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"name": ""}, None),
        ({"name": "   "}, "invalid_length"),
        ({"name": "\t\n"}, "invalid_length"),
        ({"name": "x" * 201}, None),
        ({"name": 42}, None),
        ({"name": None}, None),
        ({"name": "a\x00b"}, "invalid_character"),
        ({}, None),
        ({"name": "ok", "colour": "red"}, None),
    ],
)
def test_bad_org_name_is_422_naming_name_and_stores_nothing(api: Api, body: Any, code: str | None) -> None:
    r = api.call("PUT", "/v1/orgs/org-a", json=body)
    message = assert_error(r, 422, code)
    field = "colour" if "colour" in body else "name"
    assert message.startswith(f"{field}:"), message
    assert items_of(api.call("GET", "/v1/orgs")) == []


def test_longest_name_and_id_are_accepted(api: Api) -> None:
    org_id = "o" * 128
    r = api.call("PUT", f"/v1/orgs/{org_id}", json={"name": "n" * 200})
    assert r.status_code == 200, r.text
    assert [o["organization_id"] for o in items_of(api.call("GET", "/v1/orgs"))] == [org_id]


def test_org_id_too_long_is_422(api: Api) -> None:
    message = assert_error(api.call("PUT", "/v1/orgs/" + "o" * 129, json={"name": "x"}), 422)
    assert message.startswith("organization_id:"), message


def test_put_body_that_is_not_json_is_refused(api: Api) -> None:
    r = api.call("PUT", "/v1/orgs/org-a", content=b"{nope", headers={"Content-Type": "application/json"})
    assert r.status_code in {400, 422}, r.text
    assert_error(r, r.status_code)
    assert items_of(api.call("GET", "/v1/orgs")) == []


# --- health -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["", "vm_0123456789abcdef_wrong"])
def test_healthz_needs_no_key_and_reports_the_database(api: Api, key: str) -> None:
    r = api.call("GET", "/healthz", key)
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "database": "ok"}
    assert r.headers["content-type"].startswith("application/json")


def test_healthz_is_503_when_the_database_is_unreachable(api: Api, monkeypatch: Any) -> None:
    monkeypatch.setattr(api.services.db, "ping", lambda: False)
    r = api.call("GET", "/healthz", "")
    assert r.status_code == 503
    assert r.json() == {"status": "degraded", "database": "unreachable"}


def test_artifacts_filter_by_the_stage_they_failed_in(api: Api, clock: FakeClock) -> None:
    now = clock.now_ms()
    events = []
    for i, stage in enumerate(("transcription", "claims_extraction", "transcription")):
        aid = f"fs-{i}"
        events += [
            ev("artifact_received", aid, now - 5 * MINUTE_MS, organization_id="org-fs"),
            ev(f"{stage}_started", aid, now - 4 * MINUTE_MS, organization_id="org-fs"),
            ev(f"{stage}_failed", aid, now - 3 * MINUTE_MS, organization_id="org-fs", error_code="x"),
            ev("artifact_failed", aid, now - 3 * MINUTE_MS + 1, organization_id="org-fs"),
        ]
    events += [ev("artifact_received", "fs-ok", now - MINUTE_MS, organization_id="org-fs")]
    assert api.call("POST", "/v1/events", json={"events": events}).json()["accepted"] == len(events)
    got = api.call("GET", "/v1/artifacts", params={"failed_stage": "transcription", "limit": 1})
    assert got.status_code == 200, got.text
    first = got.json()
    second = api.call(
        "GET",
        "/v1/artifacts",
        params={"failed_stage": "transcription", "limit": 1, "cursor": first["next_cursor"]},
    ).json()
    assert [a["artifact_id"] for a in first["items"] + second["items"]] == ["fs-2", "fs-0"]
    assert second["next_cursor"] is None
    claims = api.call("GET", "/v1/artifacts", params={"failed_stage": "claims_extraction"}).json()["items"]
    assert [a["artifact_id"] for a in claims] == ["fs-1"]
    # The cursor names its filter: another filter's cursor is refused.
    other = api.call(
        "GET", "/v1/artifacts", params={"failed_stage": "claims_extraction", "cursor": first["next_cursor"]}
    )
    assert_error(other, 400, "invalid_cursor")
    assert_error(
        api.call("GET", "/v1/artifacts", params={"failed_stage": "ingestion"}), 422, "invalid_request"
    )
