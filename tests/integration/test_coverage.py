"""Range replies say what they cover (SPEC 7): aligned bounds of what was merged, live periods computed
from raw events, missing and stale periods, and how fresh the answer is."""

from __future__ import annotations

from typing import Any

from tests.conftest import NOW_MS, STAFF, Api
from tests.helpers import ev
from voicemon.domain.timeutil import DAY_MS, HOUR_MS, MINUTE_MS, floor_to, format_time
from voicemon.service import Services

THIS_HOUR = floor_to(NOW_MS, HOUR_MS)  # 02:00, so the two hours before it are today's
TODAY = floor_to(NOW_MS, DAY_MS)


def _get(api: Api, path: str, **params: Any) -> Any:
    r = api.call("GET", path, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def _run_hour(api: Api, hour: int) -> None:
    run = api.call("POST", "/v1/jobs/aggregate-hourly/runs", json={"target": format_time(hour)})
    assert run.json()["status"] == "succeeded", run.text


def test_an_unaligned_range_names_the_periods_it_merged(api: Api, services: Services) -> None:
    h7, h8 = THIS_HOUR - 6 * HOUR_MS, THIS_HOUR - 5 * HOUR_MS
    batch = [ev("artifact_received", f"a{i}", h + 10 * MINUTE_MS) for i, h in enumerate((h7, h8))]
    services.ingest_blocking(batch, STAFF)
    _run_hour(api, h7)
    _run_hour(api, h8)
    params = {
        "period": "hourly",
        "start": format_time(h7 - 30 * MINUTE_MS),
        "end": format_time(h8 + 30 * MINUTE_MS),
    }
    for path in ("/v1/metrics/summary", "/v1/metrics/stages", "/v1/metrics/history", "/v1/metrics/orgs"):
        coverage = _get(api, path, **params)["coverage"]
        assert (coverage["period_start"], coverage["period_end"]) == (
            format_time(h7),
            format_time(h8 + HOUR_MS),
        )
        assert (coverage["periods_expected"], coverage["periods_aggregated"], coverage["periods_live"]) == (
            2,
            2,
            0,
        )
        assert (coverage["missing"], coverage["stale"]) == ([], [])
        assert coverage["data_through"] == format_time(h8 + HOUR_MS)
    summary = _get(api, "/v1/metrics/summary", **params)
    assert (summary["period_start"], summary["period_end"]) == (format_time(h7), format_time(h8 + HOUR_MS))
    assert summary["artifacts_received"] == 2


def test_the_last_24_hours_include_the_hour_in_progress_and_say_so(api: Api, services: Services) -> None:
    earlier = THIS_HOUR - 2 * HOUR_MS  # midnight: its run rolls up no day (today is not complete)
    batch = [ev("artifact_received", "old", earlier + MINUTE_MS)]
    batch += [ev("artifact_received", f"prev{i}", THIS_HOUR - HOUR_MS + i * MINUTE_MS) for i in range(2)]
    batch += [ev("artifact_received", f"now{i}", THIS_HOUR + i * MINUTE_MS) for i in range(3)]
    services.ingest_blocking(batch, STAFF)
    _run_hour(api, earlier)  # the two hours after it wait for their runs
    summary = _get(api, "/v1/metrics/summary")
    assert summary["artifacts_received"] == 6  # 1 aggregated + 2 + 3 computed live
    coverage = summary["coverage"]
    assert coverage["periods_expected"] == 24
    assert coverage["periods_live"] == 2
    assert coverage["live_from"] == format_time(THIS_HOUR - HOUR_MS)
    assert coverage["data_through"] == format_time(NOW_MS)
    assert coverage["period_end"] == format_time(THIS_HOUR + HOUR_MS)
    # The hour 24 h ago began before the range: it is not expected. The hours before the aggregated one
    # were never aggregated here: they are missing rather than silently zero, and not merged.
    assert coverage["period_start"] == format_time(earlier)
    assert coverage["periods_aggregated"] == 1
    assert len(coverage["missing"]) == 24 - 1 - 2
    assert format_time(earlier) not in coverage["missing"]

    history = _get(api, "/v1/metrics/history")
    live = [row for row in history["items"] if row.get("live")]
    assert [(r["period_start"], r["artifacts_received"]) for r in live] == [
        (format_time(THIS_HOUR - HOUR_MS), 2),
        (format_time(THIS_HOUR), 3),
    ]
    assert sum(r["artifacts_received"] for r in history["items"]) == summary["artifacts_received"]
    assert _get(api, "/v1/metrics/realtime")["data_through"] == format_time(NOW_MS)


def test_live_figures_are_for_the_scope_asked(api: Api, services: Services) -> None:
    batch = [ev("artifact_received", f"a{i}", THIS_HOUR + i, organization_id="org-a") for i in range(3)]
    batch += [ev("artifact_received", f"b{i}", THIS_HOUR + i, organization_id="org-b") for i in range(2)]
    services.ingest_blocking(batch, STAFF)
    assert _get(api, "/v1/metrics/summary", organization_id="org-a")["artifacts_received"] == 3
    assert _get(api, "/v1/metrics/summary")["artifacts_received"] == 5
    orgs = _get(api, "/v1/metrics/orgs")
    assert [(i["organization_id"], i["artifacts_received"]) for i in orgs["items"]] == [
        ("org-a", 3),
        ("org-b", 2),
    ]
    rows = _get(api, "/v1/metrics/history", organization_id="org-b")["items"]
    assert [r["artifacts_received"] for r in rows] == [2]


def test_a_daily_range_with_no_complete_day_answers_zeros_and_says_so(api: Api) -> None:
    params = {
        "period": "daily",
        "start": format_time(TODAY - 2 * DAY_MS + 12 * HOUR_MS),
        "end": format_time(TODAY - DAY_MS + 12 * HOUR_MS),
    }
    body = _get(api, "/v1/metrics/summary", **params)
    coverage = body["coverage"]
    assert body["artifacts_received"] == 0
    # The day starting at midnight is in the range and complete; with nothing aggregated and raw events
    # kept, it is computed live rather than reported as zero without a word.
    assert coverage["periods_expected"] == 1
    assert coverage["periods_aggregated"] + coverage["periods_live"] + len(coverage["missing"]) == 1


def test_a_stale_hour_is_listed_until_its_run_redoes_it(api: Api, services: Services) -> None:
    hour = THIS_HOUR - 4 * HOUR_MS
    services.ingest_blocking([ev("artifact_received", "a", hour + MINUTE_MS)], STAFF)
    _run_hour(api, hour)
    services.ingest_blocking([ev("artifact_received", "late", hour + 2 * MINUTE_MS)], STAFF)
    params = {"period": "hourly", "start": format_time(hour), "end": format_time(hour + HOUR_MS)}
    coverage = _get(api, "/v1/metrics/summary", **params)["coverage"]
    assert coverage["stale"] == [format_time(hour)]
    _run_hour(api, hour)
    body = _get(api, "/v1/metrics/summary", **params)
    assert (body["coverage"]["stale"], body["artifacts_received"]) == ([], 2)


def test_after_a_late_event_one_hourly_run_makes_hourly_and_daily_agree(api: Api, services: Services) -> None:
    yesterday = TODAY - DAY_MS
    hour = yesterday + 9 * HOUR_MS
    services.ingest_blocking(
        [ev("artifact_received", f"a{i}", hour + i * MINUTE_MS) for i in range(3)], STAFF
    )
    assert api.call("POST", "/v1/jobs/aggregate-hourly/runs", json={}).json()["status"] == "succeeded"
    assert api.call("POST", "/v1/jobs/aggregate-daily/runs", json={}).json()["status"] == "succeeded"
    services.ingest_blocking([ev("artifact_received", "late", hour + 30 * MINUTE_MS)], STAFF)
    run = api.call("POST", "/v1/jobs/aggregate-hourly/runs", json={}).json()
    assert run["summary"]["days_redone"] == [format_time(yesterday)]
    day = {"start": format_time(yesterday), "end": format_time(TODAY)}
    hourly = _get(api, "/v1/metrics/summary", period="hourly", **day)["artifacts_received"]
    daily = _get(api, "/v1/metrics/summary", period="daily", **day)["artifacts_received"]
    assert hourly == daily == 4
