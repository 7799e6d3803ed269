"""The alert rules and lifecycle of :mod:`voicemon.domain.alerts`, without a database."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicemon.domain.alerts import (
    DEFAULT_CONFIGS,
    Action,
    AlertState,
    OpenAlert,
    Reading,
    RuleName,
    ScopeInputs,
    Severity,
    Streak,
    Verdict,
    evaluate,
    step,
    with_changes,
)
from voicemon.domain.model import Stage
from voicemon.domain.snapshot import SnapshotParts
from voicemon.errors import ValidationError


def _one(rule: RuleName, inputs: ScopeInputs) -> Reading:
    [reading] = evaluate(DEFAULT_CONFIGS[rule], inputs)
    return reading


def test_inactivity_is_a_below_rule_that_needs_a_busy_baseline() -> None:
    quiet = ScopeInputs("org-a", "Acme", last60=SnapshotParts(received=0), busy_days_this_hour=2)
    assert _one(RuleName.INACTIVITY, quiet).verdict is Verdict.INSUFFICIENT_DATA  # an empty system
    quiet.busy_days_this_hour = 3
    reading = _one(RuleName.INACTIVITY, quiet)
    assert (reading.verdict, reading.severity) == (Verdict.BREACHING, Severity.LOW)
    assert reading.message.startswith("0 voice notes received in the last 60 min (fewer than 1)")
    assert reading.message.endswith(", org Acme")
    quiet.last60 = SnapshotParts(received=1)  # at the threshold: not a breach
    assert _one(RuleName.INACTIVITY, quiet).verdict is Verdict.CLEAR


def test_stuck_artifacts_escalate_from_medium_to_high() -> None:
    assert _one(RuleName.STUCK_ARTIFACTS, ScopeInputs("", stuck=0)).verdict is Verdict.CLEAR
    assert _one(RuleName.STUCK_ARTIFACTS, ScopeInputs("", stuck=1)).severity is Severity.MEDIUM
    assert _one(RuleName.STUCK_ARTIFACTS, ScopeInputs("", stuck=9)).severity is Severity.MEDIUM
    assert _one(RuleName.STUCK_ARTIFACTS, ScopeInputs("", stuck=10)).severity is Severity.HIGH


def test_stage_latency_needs_a_baseline_and_reads_one_stage_each() -> None:
    inputs = ScopeInputs("")
    now = inputs.last60.stages[Stage.TRANSCRIPTION].latency
    week = inputs.week.stages[Stage.TRANSCRIPTION].latency
    for _ in range(30):
        now.add_us(5_000_000)
        week.add_us(1_000_000)
    readings = {r.stage: r for r in evaluate(DEFAULT_CONFIGS[RuleName.STAGE_LATENCY], inputs)}
    assert readings["transcription"].verdict is Verdict.INSUFFICIENT_DATA  # no hourly rows yet
    inputs.week_sampled_rows = {"transcription": 6}
    readings = {r.stage: r for r in evaluate(DEFAULT_CONFIGS[RuleName.STAGE_LATENCY], inputs)}
    hot = readings["transcription"]
    assert (hot.verdict, hot.severity) == (Verdict.BREACHING, Severity.MEDIUM)
    assert 4.9 < hot.value < 5.1
    assert hot.message.startswith(
        "transcription p95 5.0 s over the last 60 min is 5x the 7-day p95 of 1.0 s (threshold 2x)"
    )
    assert readings["draft_generation"].verdict is Verdict.INSUFFICIENT_DATA  # no samples at all


def test_cost_below_a_dollar_is_never_a_spike() -> None:
    inputs = ScopeInputs("", last60=SnapshotParts(cost_nusd=900_000_000), week_hours=168)
    inputs.week.cost_nusd = 168 * 10_000_000  # a mean of 1 cent an hour: 90x, but under $1
    assert _one(RuleName.COST_SPIKE, inputs).verdict is Verdict.CLEAR
    inputs.last60.cost_nusd = 2_000_000_000
    assert _one(RuleName.COST_SPIKE, inputs).severity is Severity.HIGH
    # A new installation's first day is no baseline: 23 aggregated hours cannot judge a spike.
    inputs.week_hours = 23
    inputs.week.cost_nusd = 23 * 10_000_000
    assert _one(RuleName.COST_SPIKE, inputs).verdict is Verdict.INSUFFICIENT_DATA


def test_a_rule_change_is_checked_whole() -> None:
    base = DEFAULT_CONFIGS[RuleName.FAILURE_RATE]
    assert with_changes(base, {"for_evaluations": 3}).for_evaluations == 3
    for changes, field in (
        ({"for_evaluations": 0}, "for_evaluations"),
        ({"clear_evaluations": 101}, "clear_evaluations"),
        ({"levels": []}, "levels"),
        ({"levels": [{"severity": "high", "threshold": math.inf}]}, "levels.0.threshold"),
        (
            {"levels": [{"severity": "critical", "threshold": 0.1}, {"severity": "high", "threshold": 0.2}]},
            "levels",
        ),
    ):
        with pytest.raises(ValidationError) as refused:
            with_changes(base, changes)
        assert refused.value.field == field, changes


verdicts = st.lists(
    st.sampled_from([Verdict.BREACHING, Verdict.CLEAR, Verdict.INSUFFICIENT_DATA]), max_size=40
)


@given(verdicts=verdicts, for_n=st.integers(1, 3), clear_n=st.integers(1, 3))
def test_one_fingerprint_fires_once_per_problem_and_resolves_only_after_enough_clears(
    verdicts: list[Verdict], for_n: int, clear_n: int
) -> None:
    config = with_changes(
        DEFAULT_CONFIGS[RuleName.FAILURE_RATE], {"for_evaluations": for_n, "clear_evaluations": clear_n}
    )
    streak, alert = Streak(), None
    breaches_in_a_row = clears_in_a_row = 0
    for i, verdict in enumerate(verdicts):
        severity = Severity.HIGH if verdict is Verdict.BREACHING else None
        reading = Reading(RuleName.FAILURE_RATE, "", "", verdict, severity, 0.5, 0.1, "m")
        decided = step(config, reading, streak, alert)
        if verdict is Verdict.BREACHING:
            breaches_in_a_row, clears_in_a_row = breaches_in_a_row + 1, 0
        elif verdict is Verdict.CLEAR:
            breaches_in_a_row, clears_in_a_row = 0, clears_in_a_row + 1
        if decided.action is Action.FIRE:
            assert alert is None
            assert breaches_in_a_row >= for_n
            alert = OpenAlert(f"a{i}", Severity.HIGH, AlertState.FIRING)
        elif decided.action is Action.RESOLVE:
            assert alert is not None
            assert clears_in_a_row >= clear_n
            alert = None
            clears_in_a_row = 0
        else:
            assert decided.action is Action.NONE
            # Nothing happened although it should have: never.
            assert not (alert is None and verdict is Verdict.BREACHING and breaches_in_a_row >= for_n)
            assert not (alert is not None and verdict is Verdict.CLEAR and clears_in_a_row >= clear_n)
        streak = decided.streak


def _ended(completed: int, failed: int) -> SnapshotParts:
    return SnapshotParts(completed=completed, failed=failed)


def _stage_ended(completed: int, failed: int) -> SnapshotParts:
    p = SnapshotParts()
    p.stages[Stage.CLAIMS_EXTRACTION].completed = completed
    p.stages[Stage.CLAIMS_EXTRACTION].failed = failed
    return p


def _cost(now_usd: float) -> ScopeInputs:
    """A week costing $1 an hour on average, and ``now_usd`` in the last 60 minutes."""
    return ScopeInputs(
        "org-a",
        last60=SnapshotParts(cost_nusd=round(now_usd * 1e9)),
        week=SnapshotParts(cost_nusd=168 * 10**9),
        week_hours=168,
    )


# Per rule (its first level): inputs exactly at the threshold, just above it, and below the minimum
# volume (None where the rule has no volume to fall short of). Stage rules read claims_extraction.
AT_ABOVE_BELOW = {
    RuleName.FAILURE_RATE: (
        ScopeInputs("org-a", last30=_ended(18, 2)),  # 10 %
        ScopeInputs("org-a", last30=_ended(18, 3)),  # 14.3 %
        ScopeInputs("org-a", last30=_ended(5, 14)),  # 19 ended: below 20
    ),
    RuleName.STAGE_FAILURE_RATE: (
        ScopeInputs("org-a", last30=_stage_ended(16, 4)),  # 20 %
        ScopeInputs("org-a", last30=_stage_ended(16, 5)),
        ScopeInputs("org-a", last30=_stage_ended(4, 15)),
    ),
    RuleName.QUEUE_DEPTH: (ScopeInputs("org-a", active=50), ScopeInputs("org-a", active=51), None),
    RuleName.STUCK_ARTIFACTS: (ScopeInputs("org-a", stuck=0), ScopeInputs("org-a", stuck=1), None),
    RuleName.CIRCUIT_BREAKER: (ScopeInputs("org-a"), ScopeInputs("org-a", breaker_open=True), None),
    RuleName.COST_SPIKE: (_cost(3.0), _cost(3.01), None),
    RuleName.BUDGET: (ScopeInputs("org-a"), ScopeInputs("org-a", budget=Severity.MEDIUM), None),
    RuleName.RETRY_UNDELIVERABLE: (
        ScopeInputs("org-a"),
        ScopeInputs("org-a", undeliverable_retries=1),
        None,
    ),
}


@pytest.mark.parametrize("rule", list(AT_ABOVE_BELOW), ids=str)
def test_each_rule_at_its_threshold_is_clear_just_above_breaches_and_below_volume_is_unknown(
    rule: RuleName,
) -> None:
    at, above, below = AT_ABOVE_BELOW[rule]
    mildest = DEFAULT_CONFIGS[rule].levels[0]

    def reading(inputs: ScopeInputs) -> Reading:
        found = evaluate(DEFAULT_CONFIGS[rule], inputs)
        if rule is RuleName.STAGE_FAILURE_RATE:
            [found_one] = [r for r in found if r.stage == Stage.CLAIMS_EXTRACTION.value]
            return found_one
        [only] = found
        return only

    assert reading(at).verdict is Verdict.CLEAR, reading(at)
    breach = reading(above)
    assert (breach.verdict, breach.severity, breach.threshold) == (
        Verdict.BREACHING,
        mildest.severity,
        mildest.threshold,
    )
    assert breach.scope == "org-a"
    assert math.isfinite(breach.value)
    if below is not None:
        assert reading(below).verdict is Verdict.INSUFFICIENT_DATA
