"""Who may call what, and whose data they see (SPEC 10), through HTTP.

The first test is the matrix: every endpoint against every kind of caller, with the status and error code
each must get. The tests after it check what the scoped keys' 200s contain: only their organization's data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import NOW_MS, STAFF, Api
from tests.helpers import assert_error, ev, items_of
from voicemon.domain.access import SYSTEM
from voicemon.domain.timeutil import MINUTE_MS
from voicemon.errors import AuthError
from voicemon.service.keys import KeyService
from voicemon.storage.events import count_events

ORG_A = "org-a"
ORG_B = "org-b"

# Callers, one column each in the matrix below. "ingest@a" and "viewer@a" are scoped to org-a.
CALLERS = ("none", "wrong", "revoked", "ingest", "viewer", "staff", "ingest@a", "viewer@a")

# Expected outcome per caller: a status, or (status, error code). 401 and 403 always carry a code.
MISSING = (401, "missing_key")
INVALID = (401, "invalid_key")
ROLE = (403, "forbidden_role")
SCOPE = (403, "forbidden_organization")
GONE = (404, "alert_not_found")

REALTIME_A = "/v1/metrics/realtime?organization_id=org-a"
H = "?period=hourly"
HA = "?period=hourly&organization_id=org-a"
ALERTS_B = "/v1/alerts?organization_id=org-b"
X = "/v1/exports"

# fmt: off
MATRIX: dict[str, tuple[Any, ...]] = {
    #                                      none     wrong    revoked  ingest viewer staff ingest@a viewer@a
    "POST /v1/events":                     (MISSING, INVALID, INVALID, 200,  ROLE,  200,  200,     ROLE),
    "GET /v1/events":                      (MISSING, INVALID, INVALID, ROLE, 200,   200,  ROLE,    200),
    "GET /v1/artifacts":                   (MISSING, INVALID, INVALID, ROLE, 200,   200,  ROLE,    200),
    "GET /v1/artifacts/art-a":             (MISSING, INVALID, INVALID, ROLE, 200,   200,  ROLE,    200),
    "GET /v1/metrics/realtime":            (MISSING, INVALID, INVALID, ROLE, 200,   200,  ROLE,    SCOPE),
    f"GET {REALTIME_A}":                   (MISSING, INVALID, INVALID, ROLE, 200,   200,  ROLE,    200),
    "GET /v1/orgs":                        (MISSING, INVALID, INVALID, ROLE, ROLE,  200,  ROLE,    ROLE),
    "PUT /v1/orgs/org-a":                  (MISSING, INVALID, INVALID, ROLE, ROLE,  200,  ROLE,    ROLE),
    "GET /healthz":                        (200,     200,     200,     200,  200,   200,  200,     200),
    # Endpoints that landed after the first API: the same rules (SPEC 7, 9, 10).
    f"GET /v1/metrics/history{H}":         (MISSING, INVALID, INVALID, ROLE, 200,   200,  ROLE,    SCOPE),
    f"GET /v1/metrics/history{HA}":        (MISSING, INVALID, INVALID, ROLE, 200,   200,  ROLE,    200),
    f"GET /v1/metrics/summary{H}":         (MISSING, INVALID, INVALID, ROLE, 200,   200,  ROLE,    SCOPE),
    f"GET /v1/metrics/summary{HA}":        (MISSING, INVALID, INVALID, ROLE, 200,   200,  ROLE,    200),
    f"GET /v1/metrics/stages{H}":          (MISSING, INVALID, INVALID, ROLE, 200,   200,  ROLE,    SCOPE),
    f"GET /v1/metrics/stages{HA}":         (MISSING, INVALID, INVALID, ROLE, 200,   200,  ROLE,    200),
    f"GET /v1/metrics/orgs{H}":            (MISSING, INVALID, INVALID, ROLE, ROLE,  200,  ROLE,    ROLE),
    "GET /v1/artifacts/art-a/retries":     (MISSING, INVALID, INVALID, ROLE, 200,   200,  ROLE,    200),
    "POST /v1/artifacts/art-b/retries":    (MISSING, INVALID, INVALID, ROLE, ROLE,  202,  ROLE,    ROLE),
    "GET /v1/jobs":                        (MISSING, INVALID, INVALID, ROLE, ROLE,  200,  ROLE,    ROLE),
    "POST /v1/jobs/cleanup-events/runs":   (MISSING, INVALID, INVALID, ROLE, ROLE,  200,  ROLE,    ROLE),
    # Alerts (SPEC 14): viewers read, an organization's viewer only its own; staff acknowledge and change.
    "GET /v1/alerts":                      (MISSING, INVALID, INVALID, ROLE, 200,   200,  ROLE,    200),
    f"GET {ALERTS_B}":                     (MISSING, INVALID, INVALID, ROLE, 200,   200,  ROLE,    SCOPE),
    "GET /v1/alerts/no-such":              (MISSING, INVALID, INVALID, ROLE, GONE,  GONE, ROLE,    GONE),
    "POST /v1/alerts/no-such/ack":         (MISSING, INVALID, INVALID, ROLE, ROLE,  GONE, ROLE,    ROLE),
    "GET /v1/alert-rules":                 (MISSING, INVALID, INVALID, ROLE, 200,   200,  ROLE,    200),
    "PUT /v1/alert-rules/failure_rate":    (MISSING, INVALID, INVALID, ROLE, ROLE,  200,  ROLE,    ROLE),
    # Exports (SPEC 17): allowed exactly when the list or range they mirror is.
    f"GET {X}/events?format=csv":          (MISSING, INVALID, INVALID, ROLE, 200,   200,  ROLE,    200),
    f"GET {X}/events?format=jsonl&organization_id=org-b":
                                           (MISSING, INVALID, INVALID, ROLE, 200,   200,  ROLE,    SCOPE),
    f"GET {X}/artifacts?format=jsonl":     (MISSING, INVALID, INVALID, ROLE, 200,   200,  ROLE,    200),
    f"GET {X}/history{H}&format=csv":      (MISSING, INVALID, INVALID, ROLE, 200,   200,  ROLE,    SCOPE),
    f"GET {X}/history{HA}&format=csv":     (MISSING, INVALID, INVALID, ROLE, 200,   200,  ROLE,    200),
    f"GET {X}/orgs{H}&format=csv":         (MISSING, INVALID, INVALID, ROLE, ROLE,  200,  ROLE,    ROLE),
    # OTLP traces (SPEC 18): the writers of events.
    "POST /otlp/v1/traces":                (MISSING, INVALID, INVALID, 200,  ROLE,  200,  200,     ROLE),
}
# fmt: on

# Bodies of the write endpoints; the event belongs to org-a, so the scoped ingest key may send it.
BODIES: dict[str, Any] = {
    "POST /v1/events": lambda: ev("artifact_received", "art-new", NOW_MS - MINUTE_MS, organization_id=ORG_A),
    "PUT /v1/orgs/org-a": lambda: {"name": "Alpha"},
    "POST /otlp/v1/traces": lambda: _otlp_span(ORG_A),
    "POST /v1/artifacts/art-b/retries": lambda: {"stage": "full", "reason": "access test"},
    "POST /v1/jobs/cleanup-events/runs": lambda: {},
    "POST /v1/alerts/no-such/ack": lambda: {"note": "access test"},
    "PUT /v1/alert-rules/failure_rate": lambda: {"min_volume": 30},
}


def _otlp_span(org: str) -> dict[str, Any]:
    """One transcription span of org-a as OTLP/JSON: two events once stored."""
    attributes = [
        {"key": "voicemon.artifact_id", "value": {"stringValue": "art-otlp"}},
        {"key": "voicemon.organization_id", "value": {"stringValue": org}},
    ]
    span = {
        "traceId": "0af7651916cd43dd8448eb211c80319c",
        "spanId": "b7ad6b7169203331",
        "name": "transcription",
        "startTimeUnixNano": str((NOW_MS - 2 * MINUTE_MS) * 1_000_000),
        "endTimeUnixNano": str((NOW_MS - MINUTE_MS) * 1_000_000),
        "attributes": attributes,
    }
    return {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}


@dataclass
class World:
    """An API with data of org-a, org-b and no organization, and a key of every kind."""

    api: Api
    keys: dict[str, str]

    def call(self, method: str, path: str, caller: str, **kwargs: Any) -> Any:
        return self.api.call(method, path, self.keys[caller], **kwargs)

    def stored(self) -> tuple[Any, ...]:
        """What a refused write must leave alone: events, the org directory, retries, job runs and rules."""
        with self.api.services.db.read() as conn:
            events = count_events(conn)
        orgs = [(o.organization_id, o.name) for o in self.api.services.orgs.list(STAFF)]
        retries = items_of(self.api.call("GET", "/v1/artifacts/art-b/retries"))
        runs = items_of(self.api.call("GET", "/v1/jobs/cleanup-events/runs"))
        rules = [(r.config, r.updated_by) for r in self.api.services.alerts.rules(STAFF)]
        return events, orgs, len(retries), len(runs), rules


@pytest.fixture
def world(api: Api) -> World:
    seed = [
        ev("artifact_received", "art-a", NOW_MS - 10 * MINUTE_MS, organization_id=ORG_A),
        ev("transcription_started", "art-a", NOW_MS - 9 * MINUTE_MS, organization_id=ORG_A),
        ev("artifact_received", "art-b", NOW_MS - 8 * MINUTE_MS, organization_id=ORG_B),
        ev("artifact_failed", "art-b", NOW_MS - 7 * MINUTE_MS, organization_id=ORG_B),
        ev("artifact_received", "art-x", NOW_MS - 6 * MINUTE_MS),
    ]
    assert api.services.ingest_blocking(seed, STAFF).accepted == len(seed)
    # Staff's retry of art-b is accepted only with somewhere to send it (else 503 no_retry_handler).
    api.services.set_retry_handler(lambda command: None)
    revoked = api.services.keys.create(SYSTEM, "staff", None, "to-revoke")
    api.services.keys.revoke(SYSTEM, revoked.record.key_id)
    keys = {
        "none": "",
        # Well formed, but no such key.
        "wrong": "vm_0123456789abcdef_not-a-real-secret",
        "revoked": revoked.secret,
        "ingest": api.key("ingest"),
        "viewer": api.key("viewer"),
        "staff": api.staff_key,
        "ingest@a": api.key("ingest", ORG_A),
        "viewer@a": api.key("viewer", ORG_A),
    }
    return World(api, keys)


def _matrix_cases() -> list[Any]:
    cases = []
    for endpoint, row in MATRIX.items():
        assert len(row) == len(CALLERS), endpoint
        for caller, expected in zip(CALLERS, row, strict=True):
            cases.append(pytest.param(endpoint, caller, expected, id=f"{endpoint} as {caller}"))
    return cases


@pytest.mark.parametrize(("endpoint", "caller", "expected"), _matrix_cases())
def test_access_matrix(world: World, endpoint: str, caller: str, expected: Any) -> None:
    method, path = endpoint.split(" ", 1)
    body = BODIES.get(endpoint)
    kwargs = {"json": body()} if body is not None else {}
    before = world.stored()

    r = world.call(method, path, caller, **kwargs)

    if isinstance(expected, int):
        assert r.status_code == expected, r.text
        if body is not None:
            assert world.stored() != before, "an allowed write stored nothing"
        return
    status, code = expected
    assert_error(r, status, code)
    if status == 401:
        assert r.headers["WWW-Authenticate"] == "Bearer"
    assert world.stored() == before, "a refused call changed stored data"


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        ("Bearer", "missing_key"),
        ("Basic dXNlcjpwYXNz", "missing_key"),
        ("Bearer not-a-key", "invalid_key"),
        ("Bearer vm_0123456789abcdef", "invalid_key"),
        ("Bearer xx_0123456789abcdef_secret", "invalid_key"),
    ],
)
def test_malformed_authorization_is_401(world: World, authorization: str, code: str) -> None:
    r = world.api.client.get("/v1/events", headers={"Authorization": authorization})
    assert_error(r, 401, code)


def test_tampered_secret_of_a_real_key_is_401(world: World) -> None:
    prefix, key_id, secret = world.keys["staff"].split("_", 2)
    tampered = f"{prefix}_{key_id}_{secret[:-1]}{'A' if secret[-1] != 'A' else 'B'}"
    assert_error(world.api.call("GET", "/v1/orgs", tampered), 401, "invalid_key")


def test_revoking_a_working_key_stops_it(world: World) -> None:
    created = world.api.services.keys.create(SYSTEM, "viewer", None, "short-lived")
    assert world.api.call("GET", "/v1/artifacts", created.secret).status_code == 200
    world.api.services.keys.revoke(SYSTEM, created.record.key_id)
    assert_error(world.api.call("GET", "/v1/artifacts", created.secret), 401, "invalid_key")


# --- what a scoped key's replies contain -----------------------------------------------------------


def test_scoped_lists_hold_only_their_organization(world: World) -> None:
    everything = items_of(world.call("GET", "/v1/events", "staff"))
    assert {e["organization_id"] for e in everything} == {ORG_A, ORG_B, None}

    events = items_of(world.call("GET", "/v1/events", "viewer@a"))
    expected = [e["event_id"] for e in everything if e["organization_id"] == ORG_A]
    assert [e["event_id"] for e in events] == expected
    assert len(expected) == 2

    artifacts = items_of(world.call("GET", "/v1/artifacts", "viewer@a"))
    assert [a["artifact_id"] for a in artifacts] == ["art-a"]
    assert {a["artifact_id"] for a in items_of(world.call("GET", "/v1/artifacts", "staff"))} == {
        "art-a",
        "art-b",
        "art-x",
    }


@pytest.mark.parametrize(
    "path",
    [
        "/v1/events?artifact_id=art-b",
        "/v1/events?event_type=artifact_failed",
        "/v1/artifacts?status=failed",
        "/v1/events?artifact_id=art-x",
    ],
)
def test_scoped_filters_cannot_reach_other_data(world: World, path: str) -> None:
    assert items_of(world.call("GET", path, "staff")), "the control query should find data"
    assert items_of(world.call("GET", path, "viewer@a")) == []


@pytest.mark.parametrize(
    "path",
    [
        "/v1/events?organization_id=org-b",
        "/v1/artifacts?organization_id=org-b",
        "/v1/metrics/realtime?organization_id=org-b",
        "/v1/artifacts?organization_id=org-b&status=failed",
    ],
)
def test_scoped_key_naming_another_organization_is_403(world: World, path: str) -> None:
    assert world.call("GET", path, "staff").status_code == 200
    assert_error(world.call("GET", path, "viewer@a"), 403, "forbidden_organization")


@pytest.mark.parametrize("path", ["/v1/events?organization_id=org-a", "/v1/artifacts?organization_id=org-a"])
def test_scoped_key_naming_its_own_organization_is_served(world: World, path: str) -> None:
    items = items_of(world.call("GET", path, "viewer@a"))
    assert items
    assert {i["organization_id"] for i in items} == {ORG_A}


@pytest.mark.parametrize("artifact_id", ["art-b", "art-x"])
@pytest.mark.parametrize("suffix", ["", "/retries"])
def test_another_organizations_artifact_is_404_as_if_missing(
    world: World, artifact_id: str, suffix: str
) -> None:
    assert world.call("GET", f"/v1/artifacts/{artifact_id}{suffix}", "staff").status_code == 200
    hidden = world.call("GET", f"/v1/artifacts/{artifact_id}{suffix}", "viewer@a")
    missing = world.call("GET", f"/v1/artifacts/no-such-artifact{suffix}", "viewer@a")
    assert_error(missing, 404, "artifact_not_found")
    assert_error(hidden, 404, "artifact_not_found")
    assert artifact_id not in str(items_of(world.call("GET", "/v1/artifacts", "viewer@a")))


def test_own_artifact_detail_shows_its_timeline(world: World) -> None:
    r = world.call("GET", "/v1/artifacts/art-a", "viewer@a")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["organization_id"] == ORG_A
    assert [e["event_type"] for e in body["timeline"]] == ["artifact_received", "transcription_started"]


def test_scoped_realtime_counts_only_its_organization(world: World) -> None:
    platform = world.call("GET", "/v1/metrics/realtime", "staff").json()
    assert platform["counts"]["artifacts_received"] == 3
    assert "organization_id" not in platform

    own = world.call("GET", "/v1/metrics/realtime?organization_id=org-a", "viewer@a")
    assert own.status_code == 200, own.text
    body = own.json()
    assert body["organization_id"] == ORG_A
    assert body["counts"]["artifacts_received"] == 1
    assert body["counts"]["artifacts_failed"] == 0


def test_scoped_ingest_rejects_other_organizations_per_item(world: World) -> None:
    before = world.stored()
    foreign = ev("artifact_received", "art-b2", NOW_MS - MINUTE_MS, organization_id=ORG_B)
    r = world.call("POST", "/v1/events", "ingest@a", json=foreign)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["accepted"] == 0
    assert body["duplicates"] == 0
    assert len(body["rejected"]) == 1
    rejected = body["rejected"][0]
    assert (rejected["index"], rejected["event_id"]) == (0, foreign["event_id"])
    assert [(e["field"], e["code"]) for e in rejected["errors"]] == [
        ("organization_id", "forbidden_organization")
    ]
    assert world.stored() == before
    assert_error(world.call("GET", "/v1/artifacts/art-b2", "staff"), 404, "artifact_not_found")


def test_scoped_ingest_mixed_batch_stores_only_its_own(world: World) -> None:
    own = ev("artifact_received", "art-a2", NOW_MS - MINUTE_MS, organization_id=ORG_A)
    foreign = ev("artifact_received", "art-b3", NOW_MS - MINUTE_MS, organization_id=ORG_B)
    unnamed = ev("artifact_received", "art-a3", NOW_MS - MINUTE_MS)
    r = world.call("POST", "/v1/events", "ingest@a", json={"events": [own, foreign, unnamed]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["accepted"], body["duplicates"]) == (2, 0)
    assert [x["index"] for x in body["rejected"]] == [1]
    assert body["rejected"][0]["errors"][0]["code"] == "forbidden_organization"

    stored = {e["event_id"]: e for e in items_of(world.call("GET", "/v1/events?limit=500", "staff"))}
    assert foreign["event_id"] not in stored
    assert stored[own["event_id"]]["organization_id"] == ORG_A
    # An event without organization_id from a scoped key is stored under the key's organization.
    assert stored[unnamed["event_id"]]["organization_id"] == ORG_A
    assert world.call("GET", "/v1/artifacts/art-a3", "viewer@a").json()["organization_id"] == ORG_A

    realtime = world.call("GET", "/v1/metrics/realtime?organization_id=org-a", "viewer@a").json()
    assert realtime["counts"]["artifacts_received"] == 3
    org_b = world.call("GET", "/v1/metrics/realtime?organization_id=org-b", "staff").json()
    assert org_b["counts"]["artifacts_received"] == 1


def test_unscoped_ingest_key_may_write_any_organization(world: World) -> None:
    events = [
        ev("artifact_received", "art-b4", NOW_MS - MINUTE_MS, organization_id=ORG_B),
        ev("artifact_received", "art-y", NOW_MS - MINUTE_MS),
    ]
    r = world.call("POST", "/v1/events", "ingest", json={"events": events})
    assert r.json() == {"accepted": 2, "duplicates": 0, "rejected": []}
    assert world.call("GET", "/v1/artifacts/art-b4", "staff").json()["organization_id"] == ORG_B
    assert world.call("GET", "/v1/artifacts/art-y", "staff").json()["organization_id"] is None


def test_a_session_lookup_by_key_id_never_answers_for_a_presented_key(api: Api) -> None:
    """A dashboard session names its key by id; that lookup is cached apart from presented keys, so
    ``Bearer <key id>`` (or any string the cache might hold) is never taken for the key itself."""
    svc = api.services
    keys = KeyService(svc.db, svc.clock, cache_ttl_s=60)
    made = svc.keys.create(SYSTEM, "staff", None, "session-owner")
    kid = made.record.key_id
    assert keys.principal_of(kid).key_id == kid
    for presented in (kid, f"id:{kid}", f"vm_{kid}_"):
        assert keys.cached(presented) is None
        with pytest.raises(AuthError):
            keys.authenticate(presented)
    assert keys.authenticate(made.secret).key_id == kid
    # Revoked: the session's lookup ends at once on this process.
    keys.revoke(SYSTEM, kid)
    with pytest.raises(AuthError):
        keys.principal_of(kid)
