"""The access matrix of SPEC 10, at the service layer: every use case checks its caller itself.

``tests/api/test_access.py`` proves the rules through HTTP. This one calls the use cases directly, with
principals instead of keys, so an entry point that is not HTTP (the CLI, jobs, and later the dashboard,
exports and OTLP) inherits the same checks. :func:`test_every_use_case_is_in_the_matrix` keeps it whole:
a new public method on a service that is not in the matrix, or not named as a non-use-case, fails.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import NOW_MS, STAFF
from tests.helpers import ev
from voicemon.domain.access import Principal, Role
from voicemon.domain.otlp import Span
from voicemon.domain.periods import Period
from voicemon.domain.records import EventFilter
from voicemon.domain.timeutil import HOUR_MS, MINUTE_MS
from voicemon.errors import ForbiddenError, NotFoundError
from voicemon.service import Services
from voicemon.service.metrics import Range
from voicemon.storage.events import count_events

ORG_A = "org-a"
ORG_B = "org-b"

CALLERS: dict[str, Principal] = {
    "ingest": Principal("k-ingest", "ingest", Role.INGEST),
    "viewer": Principal("k-viewer", "viewer", Role.VIEWER),
    "staff": Principal("k-staff", "staff", Role.STAFF),
    "ingest@a": Principal("k-ingest-a", "ingest@a", Role.INGEST, ORG_A),
    "viewer@a": Principal("k-viewer-a", "viewer@a", Role.VIEWER, ORG_A),
}

OK = "ok"
ROLE = ("forbidden_role", ForbiddenError)
SCOPE = ("forbidden_organization", ForbiddenError)
HIDDEN = ("artifact_not_found", NotFoundError)
NO_ALERT = ("alert_not_found", NotFoundError)  # the caller may ask; there is no such alert

RANGE = Range(Period.HOURLY, NOW_MS - 3 * HOUR_MS, NOW_MS)
EVENT_A = ev("artifact_received", "art-new", NOW_MS - MINUTE_MS, organization_id=ORG_A)
SPAN_A = Span(
    "0af7651916cd43dd8448eb211c80319c",
    "b7ad6b7169203331",
    "transcription",
    (NOW_MS - MINUTE_MS) * 1_000_000,
    NOW_MS * 1_000_000,
    attributes={"voicemon.artifact_id": "art-new", "voicemon.organization_id": ORG_A},
)

UseCase = Callable[[Services, Principal], Any]

# Each use case (service attribute, method), and how it is called.
CALLS: dict[str, UseCase] = {
    "ingest_blocking": lambda s, p: s.ingest_blocking([EVENT_A], p),
    "ingest_spans": lambda s, p: asyncio.run(s.ingest_spans([SPAN_A], p)),
    "queries.list_events": lambda s, p: s.queries.list_events(p, EventFilter(), None, 10),
    "queries.list_events org-b": lambda s, p: s.queries.list_events(
        p, EventFilter(organization_id=ORG_B), None, 10
    ),
    "queries.list_artifacts": lambda s, p: s.queries.list_artifacts(p, None, None, None, 10),
    "queries.artifact": lambda s, p: s.queries.artifact(p, "art-a"),
    "queries.artifact of org-b": lambda s, p: s.queries.artifact(p, "art-b"),
    "queries.realtime": lambda s, p: s.queries.realtime(p, None),
    "queries.active_and_stuck": lambda s, p: s.queries.active_and_stuck(p, None),
    "queries.active_and_stuck org-a": lambda s, p: s.queries.active_and_stuck(p, ORG_A),
    "queries.realtime org-a": lambda s, p: s.queries.realtime(p, ORG_A),
    "metrics.history": lambda s, p: s.metrics.history(p, RANGE, None),
    "metrics.history org-a": lambda s, p: s.metrics.history(p, RANGE, ORG_A),
    "metrics.summary": lambda s, p: s.metrics.summary(p, RANGE, None),
    "metrics.summary org-a": lambda s, p: s.metrics.summary(p, RANGE, ORG_A),
    "metrics.current_hour": lambda s, p: s.metrics.current_hour(p, None),
    "metrics.current_hour org-a": lambda s, p: s.metrics.current_hour(p, ORG_A),
    "metrics.by_organization": lambda s, p: s.metrics.by_organization(p, RANGE),
    # An export is refused when it is asked for, before a row is read; its rows are read here too.
    "exports.events": lambda s, p: list(s.exports.events(p, EventFilter()).rows()),
    "exports.events org-b": lambda s, p: list(s.exports.events(p, EventFilter(organization_id=ORG_B)).rows()),
    "exports.artifacts": lambda s, p: list(s.exports.artifacts(p, None, None).rows()),
    "exports.history": lambda s, p: list(s.exports.history(p, RANGE, None).rows()),
    "exports.history org-a": lambda s, p: list(s.exports.history(p, RANGE, ORG_A).rows()),
    "exports.orgs": lambda s, p: list(s.exports.orgs(p, RANGE).rows()),
    "orgs.list": lambda s, p: s.orgs.list(p),
    "orgs.put": lambda s, p: s.orgs.put(p, ORG_A, "Alpha"),
    "retries.list": lambda s, p: s.retries.list(p, "art-a"),
    "retries.list of org-b": lambda s, p: s.retries.list(p, "art-b"),
    "retries.request": lambda s, p: s.retries.request(p, "art-b", "full", "access test"),
    "keys.create": lambda s, p: s.keys.create(p, "viewer", ORG_A, "made in a test"),
    "keys.list": lambda s, p: s.keys.list(p),
    "keys.revoke": lambda s, p: s.keys.revoke(p, _live_key(s, "to revoke")),
    "alerts.evaluate": lambda s, p: s.alerts.evaluate(p),
    "alerts.list_alerts": lambda s, p: s.alerts.list_alerts(p),
    "alerts.list_alerts org-b": lambda s, p: s.alerts.list_alerts(p, organization_id=ORG_B),
    "alerts.get": lambda s, p: s.alerts.get(p, "no-such-alert"),
    "alerts.acknowledge": lambda s, p: s.alerts.acknowledge(p, "no-such-alert", "a note"),
    "alerts.rules": lambda s, p: s.alerts.rules(p),
    "alerts.update_rule": lambda s, p: s.alerts.update_rule(p, "failure_rate", {"min_volume": 20}),
    "telemetry.scrape": lambda s, p: s.telemetry.scrape(p),
}


def _live_key(services: Services, name: str) -> str:
    return next(k.key_id for k in services.keys.list(STAFF) if k.name == name and k.revoked_ms is None)


# The outcome per caller.
# fmt: off
MATRIX: dict[str, tuple[Any, ...]] = {
    #                              ingest viewer staff ingest@a viewer@a
    "ingest_blocking":            (OK,   ROLE,  OK,   OK,      ROLE),
    "ingest_spans":               (OK,   ROLE,  OK,   OK,      ROLE),
    "queries.list_events":        (ROLE, OK,    OK,   ROLE,    OK),
    "queries.list_events org-b":  (ROLE, OK,    OK,   ROLE,    SCOPE),
    "queries.list_artifacts":     (ROLE, OK,    OK,   ROLE,    OK),
    "queries.artifact":           (ROLE, OK,    OK,   ROLE,    OK),
    "queries.artifact of org-b":  (ROLE, OK,    OK,   ROLE,    HIDDEN),
    "queries.realtime":           (ROLE, OK,    OK,   ROLE,    SCOPE),
    "queries.active_and_stuck":   (ROLE, OK,    OK,   ROLE,    SCOPE),
    "queries.active_and_stuck org-a": (ROLE, OK, OK,  ROLE,    OK),
    "queries.realtime org-a":     (ROLE, OK,    OK,   ROLE,    OK),
    "metrics.history":            (ROLE, OK,    OK,   ROLE,    SCOPE),
    "metrics.history org-a":      (ROLE, OK,    OK,   ROLE,    OK),
    "metrics.summary":            (ROLE, OK,    OK,   ROLE,    SCOPE),
    "metrics.summary org-a":      (ROLE, OK,    OK,   ROLE,    OK),
    "metrics.current_hour":       (ROLE, OK,    OK,   ROLE,    SCOPE),
    "metrics.current_hour org-a": (ROLE, OK,    OK,   ROLE,    OK),
    "metrics.by_organization":    (ROLE, ROLE,  OK,   ROLE,    ROLE),
    "exports.events":             (ROLE, OK,    OK,   ROLE,    OK),
    "exports.events org-b":       (ROLE, OK,    OK,   ROLE,    SCOPE),
    "exports.artifacts":          (ROLE, OK,    OK,   ROLE,    OK),
    "exports.history":            (ROLE, OK,    OK,   ROLE,    SCOPE),
    "exports.history org-a":      (ROLE, OK,    OK,   ROLE,    OK),
    "exports.orgs":               (ROLE, ROLE,  OK,   ROLE,    ROLE),
    "orgs.list":                  (ROLE, ROLE,  OK,   ROLE,    ROLE),
    "orgs.put":                   (ROLE, ROLE,  OK,   ROLE,    ROLE),
    "retries.list":               (ROLE, OK,    OK,   ROLE,    OK),
    "retries.list of org-b":      (ROLE, OK,    OK,   ROLE,    HIDDEN),
    "retries.request":            (ROLE, ROLE,  OK,   ROLE,    ROLE),
    "keys.create":                (ROLE, ROLE,  OK,   ROLE,    ROLE),
    "keys.list":                  (ROLE, ROLE,  OK,   ROLE,    ROLE),
    "keys.revoke":                (ROLE, ROLE,  OK,   ROLE,    ROLE),
    "alerts.evaluate":            (ROLE, ROLE,  OK,   ROLE,    ROLE),
    "alerts.list_alerts":         (ROLE, OK,    OK,   ROLE,    OK),
    "alerts.list_alerts org-b":   (ROLE, OK,    OK,   ROLE,    SCOPE),
    "alerts.get":                 (ROLE, NO_ALERT, NO_ALERT, ROLE, NO_ALERT),
    "alerts.acknowledge":         (ROLE, ROLE,  NO_ALERT, ROLE, ROLE),
    "alerts.rules":               (ROLE, OK,    OK,   ROLE,    OK),
    "alerts.update_rule":         (ROLE, ROLE,  OK,   ROLE,    ROLE),
    "telemetry.scrape":           (ROLE, OK,    OK,   ROLE,    SCOPE),
}
# fmt: on

# Public methods of the services that are not use cases a caller invokes, and why.
NOT_USE_CASES = {
    "metrics.resolve_range": "pure: fills in a missing start or end; reads nothing",
    "keys.authenticate": "turns a presented key into the caller; there is no caller yet",
    "keys.cached": "the same, from the cache",
    "keys.principal_of": "the same for a dashboard session, which names its key by id",
    "telemetry.ingested": "counts what ingest did, called by ingest itself (which checks the caller)",
    "ingest": "the async twin of ingest_blocking (same check, in _prepare): the HTTP tests cover it",
}
# Lifecycle, not use cases.
LIFECYCLE = {"migrate", "require_schema", "start", "stop", "set_retry_handler"}


@pytest.fixture
def seeded(services: Services) -> Services:
    seed = [
        ev("artifact_received", "art-a", NOW_MS - 10 * MINUTE_MS, organization_id=ORG_A),
        ev("artifact_received", "art-b", NOW_MS - 8 * MINUTE_MS, organization_id=ORG_B),
        ev("artifact_failed", "art-b", NOW_MS - 7 * MINUTE_MS, organization_id=ORG_B),
    ]
    assert services.ingest_blocking(seed, STAFF).accepted == len(seed)
    # Staff's retry is accepted only with somewhere to send it (else 503 no_retry_handler).
    services.set_retry_handler(lambda command: None)
    services.keys.create(STAFF, "viewer", None, "to revoke")
    return services


def stored(services: Services) -> tuple[Any, ...]:
    with services.db.read() as conn:
        events = count_events(conn)
    orgs = [(o.organization_id, o.name) for o in services.orgs.list(STAFF)]
    keys = [(k.key_id, k.revoked_ms) for k in services.keys.list(STAFF)]
    return events, orgs, keys, len(services.retries.list(STAFF, "art-b"))


def _cases() -> list[Any]:
    return [
        pytest.param(name, caller, expected, id=f"{name} as {caller}")
        for name, row in MATRIX.items()
        for caller, expected in zip(CALLERS, row, strict=True)
    ]


@pytest.mark.parametrize(("name", "caller", "expected"), _cases())
def test_service_access_matrix(seeded: Services, name: str, caller: str, expected: Any) -> None:
    call = CALLS[name]
    before = stored(seeded)
    if expected == OK:
        call(seeded, CALLERS[caller])
        return
    code, kind = expected
    with pytest.raises(kind) as refused:
        call(seeded, CALLERS[caller])
    assert refused.value.code == code
    assert stored(seeded) == before, "a refused use case changed stored data"


def _public_methods(services: Services) -> set[str]:
    names = {n for n, _ in inspect.getmembers(Services, inspect.isfunction) if not n.startswith("_")}
    for attr, value in vars(services).items():
        if attr.startswith("_") or not type(value).__module__.startswith("voicemon.service."):
            continue
        if attr in {"writer", "dispatcher"}:  # machinery the use cases drive, not use cases
            continue
        for method, _ in inspect.getmembers(type(value), inspect.isfunction):
            if not method.startswith("_"):
                names.add(f"{attr}.{method}")
    return names


def test_every_use_case_is_in_the_matrix(services: Services) -> None:
    assert set(CALLS) == set(MATRIX)
    covered = {name.split(" ", 1)[0] for name in MATRIX}
    accounted = covered | set(NOT_USE_CASES) | LIFECYCLE
    assert _public_methods(services) - accounted == set(), "add the new use case to MATRIX"
    assert covered - _public_methods(services) == set(), "the matrix names a method that does not exist"


def test_every_use_case_takes_its_caller(services: Services) -> None:
    """A use case that takes no principal cannot check one."""
    for name in {n.split(" ", 1)[0] for n in MATRIX}:
        attr, _, method = name.rpartition(".")
        owner = getattr(services, attr) if attr else services
        assert "principal" in inspect.signature(getattr(owner, method)).parameters, name
