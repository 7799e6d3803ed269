"""``GET /metrics`` (SPEC 17): the process families count what this app did, the state families what the
database says; names and types pass ``promtool check metrics``; access as the SPEC says."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import NOW_MS, Api
from tests.helpers import assert_error, ev
from voicemon.api import create_app
from voicemon.clock import FakeClock
from voicemon.domain.access import SYSTEM
from voicemon.domain.timeutil import MINUTE_MS
from voicemon.settings import Settings


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def _traffic(api: Api) -> None:
    events = []
    for i in range(5):
        aid = f"prom-{i}"
        events += [
            ev("artifact_received", aid, NOW_MS - 5 * MINUTE_MS, organization_id="org-p"),
            ev(
                "transcription_completed",
                aid,
                NOW_MS - 4 * MINUTE_MS,
                organization_id="org-p",
                duration_ms=1500,
            ),
        ]
    first = api.call("POST", "/v1/events", json={"events": events})
    assert first.json()["accepted"] == 10, first.text
    again = api.call("POST", "/v1/events", json={"events": [*events[:2], {"event_type": "nope"}]})
    assert again.json()["duplicates"] == 2, again.text


def test_the_families_count_what_this_process_did_and_the_database_says(api: Api) -> None:
    _traffic(api)
    reply = api.call("GET", "/metrics")
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    found = samples(reply.text)
    assert value(found, "voicemon_events_total", event_type="artifact_received", outcome="accepted") == 5
    assert (
        value(found, "voicemon_events_total", event_type="transcription_completed", outcome="accepted") == 5
    )
    assert value(found, "voicemon_events_total", event_type="artifact_received", outcome="duplicate") == 1
    assert value(found, "voicemon_events_total", event_type="unknown", outcome="rejected") == 1
    assert value(found, "voicemon_stage_duration_seconds_count", stage="transcription") == 5
    assert value(found, "voicemon_stage_duration_seconds_sum", stage="transcription") == pytest.approx(7.5)
    assert value(found, "voicemon_stage_duration_seconds_bucket", stage="transcription", le="2.0") == 5
    assert value(found, "voicemon_stage_duration_seconds_bucket", stage="transcription", le="1.0") == 0
    assert value(found, "voicemon_artifacts_active", status="received") == 0  # transcribed: still active
    assert value(found, "voicemon_artifacts_active", status="transcribed") == 5
    posts = [
        k
        for k in found
        if k[0] == "voicemon_http_request_duration_seconds_count" and ("route", "/v1/events") in k[1]
    ]
    assert sum(found[k] for k in posts) == 2
    assert "read from the database at most every 10 s" in reply.text


def test_promtool_finds_nothing_to_say(api: Api) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if "CI" in os.environ:
            pytest.fail("promtool is not installed (apt-get install prometheus), and CI must run this test")
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    _traffic(api)
    api.call("POST", "/v1/jobs/evaluate-alerts/runs")
    text = api.call("GET", "/metrics").text
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == "", checked.stdout
    assert checked.stderr.strip() == "", checked.stderr


def test_only_unscoped_viewers_and_staff_read_it_unless_it_is_public(api: Api, settings: Settings) -> None:
    assert_error(api.call("GET", "/metrics", ""), 401, "missing_key")
    assert_error(api.call("GET", "/metrics", api.key("ingest")), 403, "forbidden_role")
    assert_error(api.call("GET", "/metrics", api.key("viewer", "org-p")), 403, "forbidden_organization")
    assert api.call("GET", "/metrics", api.key("viewer")).status_code == 200
    public = create_app(settings.model_copy(update={"metrics_public": True}), clock=FakeClock(NOW_MS))
    with TestClient(public) as client:
        assert client.get("/metrics").status_code == 200
        assert client.get("/v1/orgs").status_code == 401  # only /metrics opens


def test_organization_families_appear_only_when_enabled_and_name_the_busiest_hundred(
    settings: Settings,
) -> None:
    clock = FakeClock(NOW_MS)
    plain = create_app(settings, clock=clock)
    with TestClient(plain) as client:
        svc = plain.state.services
        events = [
            ev("artifact_received", f"o-{k}-{i}", NOW_MS - MINUTE_MS, organization_id=f"org-{k:03d}")
            for k in range(105)
            for i in range(1 + (k % 3))
        ]
        assert svc.ingest_blocking(events, SYSTEM).accepted == len(events)
        key = svc.keys.create(SYSTEM, "viewer", None, "prom").secret
        text = client.get("/metrics", headers={"Authorization": f"Bearer {key}"}).text
        assert "organization_id" not in text
    labelled = create_app(settings.model_copy(update={"metrics_org_labels": True}), clock=clock)
    with TestClient(labelled) as client:
        text = client.get("/metrics", headers={"Authorization": f"Bearer {key}"}).text
    found = samples(text)
    named = {
        dict(labels)["organization_id"]: v
        for (name, labels), v in found.items()
        if name == "voicemon_organization_artifacts_active"
    }
    assert len(named) == 100
    # The 35 organizations with 3 active artifacts and the 35 with 2 are all in; 30 of the 35 with 1.
    assert sorted(named.values()).count(3.0) == 35
    assert sorted(named.values()).count(2.0) == 35
    assert sorted(named.values()).count(1.0) == 30
    assert value(found, "voicemon_artifacts_active", status="received") == len(events)  # unlabelled: all
