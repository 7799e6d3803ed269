"""The OpenAPI document is valid, and generated requests never make the server fail (SPEC 7).

Schemathesis reads ``/openapi.json`` from the in-process app and sends a bounded, derandomized set of
requests to every operation, with the staff key. Any 5xx is a bug in the app, not in the test.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Ok

from tests.conftest import NOW_MS, STAFF, Api
from tests.helpers import ev
from voicemon.domain.timeutil import MINUTE_MS

MAX_EXAMPLES = 30

# Path parameters that name things that exist, so generated requests also reach the code past the lookup.
KNOWN_PATH_VALUES = {
    "artifact_id": "art-1",
    "organization_id": "org-1",
    "name": "cleanup-events",
    "rule": "failure_rate",
}

# The whole API (SPEC 7, 14, 17, 18): the document must describe each operation, and the generated
# requests below reach every one of them.
SPEC_OPERATIONS = {
    "POST /v1/events",
    "GET /v1/events",
    "GET /v1/artifacts",
    "GET /v1/artifacts/{artifact_id}",
    "POST /v1/artifacts/{artifact_id}/retries",
    "GET /v1/artifacts/{artifact_id}/retries",
    "GET /v1/metrics/realtime",
    "GET /v1/metrics/history",
    "GET /v1/metrics/summary",
    "GET /v1/metrics/stages",
    "GET /v1/metrics/current",
    "GET /v1/metrics/orgs",
    "GET /v1/orgs",
    "PUT /v1/orgs/{organization_id}",
    "GET /v1/jobs",
    "POST /v1/jobs/{name}/runs",
    "GET /v1/jobs/{name}/runs",
    "GET /v1/alerts",
    "GET /v1/alerts/{alert_id}",
    "POST /v1/alerts/{alert_id}/ack",
    "GET /v1/alert-rules",
    "PUT /v1/alert-rules/{rule}",
    "GET /v1/exports/events",
    "GET /v1/exports/artifacts",
    "GET /v1/exports/history",
    "GET /v1/exports/orgs",
    "POST /otlp/v1/traces",
    "GET /healthz",
    "GET /metrics",
}


def _operations(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        f"{method.upper()} {path}": op
        for path, item in document["paths"].items()
        for method, op in item.items()
        if method in {"get", "put", "post", "delete", "patch"}
    }


def test_openapi_document_is_valid_and_complete(api: Api) -> None:
    r = api.client.get("/openapi.json")
    assert r.status_code == 200
    document = r.json()
    validate(document)
    assert document["openapi"].startswith("3.")

    operations = _operations(document)
    assert set(operations) == SPEC_OPERATIONS
    schemes = document["components"]["securitySchemes"]
    bearer = {name for name, s in schemes.items() if s == {**s, "type": "http", "scheme": "bearer"}}
    assert bearer, schemes
    for label, op in operations.items():
        required = {name for requirement in op.get("security", []) for name in requirement}
        if label == "GET /healthz":
            assert not required, "healthz needs no key"
        else:
            assert required & bearer, f"{label} does not declare the bearer key"

    # The ingestion body is declared as one event or a batch, with the strict event model.
    body = operations["POST /v1/events"]["requestBody"]["content"]["application/json"]["schema"]
    refs = {alt["$ref"].rsplit("/", 1)[1] for alt in body["oneOf"]}
    assert refs == {"EventIn", "EventBatchIn"}
    event_in = document["components"]["schemas"]["EventIn"]
    assert event_in["additionalProperties"] is False
    assert event_in["required"] == ["event_type"]


ERROR_REPLY = {"$ref": "#/components/schemas/ErrorReply"}


def test_every_operation_lists_the_errors_it_can_give(api: Api) -> None:
    """Every operation: the request edge's 400, 408 and 413 and the parameter check's 422; every one
    that needs a key also 401 (with its challenge), 403 and 503. /healthz needs none: no 401 or 403."""
    operations = _operations(api.client.get("/openapi.json").json())
    for label, op in operations.items():
        responses = op["responses"]
        for status in ("400", "408", "413", "422"):
            assert responses[status]["content"]["application/json"]["schema"] == ERROR_REPLY, (label, status)
        if label == "GET /healthz":
            assert not {"401", "403"} & responses.keys(), label
            assert responses["503"]["content"]["application/json"]["schema"]["$ref"].endswith("/HealthOut")
            continue
        for status in ("401", "403", "503"):
            assert responses[status]["content"]["application/json"]["schema"] == ERROR_REPLY, (label, status)
        assert "WWW-Authenticate" in responses["401"]["headers"], label


def test_healthz_gives_the_errors_its_document_lists(api: Api) -> None:
    for r, status in (
        (api.client.get("/healthz?probe=%00"), 422),
        (api.client.get("/healthz", headers={"Content-Length": "many"}), 400),
    ):
        assert r.status_code == status, r.text
        assert set(r.json()["error"]) == {"code", "message"}


def _seed(api: Api) -> dict[str, str]:
    """Data every operation can find, and the path values that name it."""
    events = [
        ev("artifact_received", "art-1", NOW_MS - 3 * MINUTE_MS, organization_id="org-1"),
        ev("transcription_completed", "art-1", NOW_MS - 2 * MINUTE_MS, organization_id="org-1"),
        ev("artifact_failed", "art-1", NOW_MS - MINUTE_MS, organization_id="org-1", error_code="boom"),
    ]
    # Enough failed artifacts for a failure-rate alert of org-1 (and of the platform).
    for i in range(20):
        events += [
            ev("artifact_received", f"fail-{i}", NOW_MS - 3 * MINUTE_MS, organization_id="org-1"),
            ev("artifact_failed", f"fail-{i}", NOW_MS - MINUTE_MS, organization_id="org-1"),
        ]
    assert api.services.ingest_blocking(events, STAFF).accepted == len(events)
    api.services.orgs.put(STAFF, "org-1", "Org One")
    # A retry of art-1 can be accepted: there is a handler to tell (else 503 no_retry_handler).
    api.services.set_retry_handler(lambda command: None)
    api.services.alerts.evaluate(STAFF)
    page = api.services.alerts.list_alerts(STAFF, organization_id="org-1")
    return {**KNOWN_PATH_VALUES, "alert_id": page.items[0][0].alert_id}


# No server error, and no reply the document does not describe: its status, content type and body
# (error replies included) must all be declared for the operation.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def _fuzz(
    case_strategy: Any, headers: dict[str, str], seen: Counter[int], max_examples: int = MAX_EXAMPLES
) -> None:
    @given(case=case_strategy)
    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        derandomize=True,
        # Requests go through the app and the database; a slow example is not a failure here.
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def run(case: Any) -> None:
        response = case.call_and_validate(headers=headers, checks=CHECKS)
        seen[response.status_code] += 1

    run()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_generated_requests_get_no_server_error(api: Api, mode: GenerationMode) -> None:
    known_values = _seed(api)
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.client.app)
    headers = {"Authorization": f"Bearer {api.staff_key}"}
    statuses: dict[str, Counter[int]] = {}
    failures: list[str] = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()
        seen = statuses.setdefault(operation.label, Counter())
        has_input = bool(list(operation.iter_parameters()) or operation.body)
        if mode is GenerationMode.NEGATIVE and not has_input:
            continue  # nothing to make invalid
        strategies = [operation.as_strategy(generation_mode=mode)]
        known = {p.name: known_values[p.name] for p in operation.path_parameters}
        if known and mode is GenerationMode.POSITIVE:
            strategies.append(operation.as_strategy(generation_mode=mode, path_parameters=known))
        for strategy in strategies:
            try:
                _fuzz(strategy, headers, seen)
            except Exception as exc:
                failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)

    assert set(statuses) == SPEC_OPERATIONS
    if mode is GenerationMode.POSITIVE:
        # The staff key was accepted everywhere, and every operation answered some request with success.
        for label, seen in statuses.items():
            assert not seen.keys() & {401, 403}, (label, seen)
            assert any(200 <= s < 300 for s in seen), (label, seen)


@pytest.mark.parametrize("caller", ["none", "ingest", "viewer@org-1"])
def test_replies_to_every_kind_of_caller_match_the_document(api: Api, caller: str) -> None:
    """The refusals a staff key never sees (401, 403, and the 404 of another organization's artifact)
    are declared too, with the one error body."""
    known_values = _seed(api)
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.client.app)
    key = {"none": "", "ingest": api.key("ingest"), "viewer@org-1": api.key("viewer", "org-1")}[caller]
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    seen: Counter[int] = Counter()
    failures: list[str] = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()
        known = {p.name: known_values[p.name] for p in operation.path_parameters}
        strategy = operation.as_strategy(generation_mode=GenerationMode.POSITIVE, path_parameters=known)
        try:
            _fuzz(strategy, headers, seen, max_examples=5)
        except Exception as exc:
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)
    refusal = 401 if caller == "none" else 403
    assert seen[refusal] > 0, seen
