"""Alert rules and the life of an alert (SPEC 14), without I/O.

One evaluation works in three steps:

1. The service gathers, in a few grouped reads, one :class:`ScopeInputs` per scope: the platform, and
   every organization with traffic in the windows or an open alert.
2. :func:`evaluate` turns one scope's inputs and one rule's configuration into :class:`Reading` s, one
   per stage for the per-stage rules. Each reading is ``breaching`` (with the severity of the highest
   level passed), ``clear``, or ``insufficient_data`` (too little volume, or no baseline to compare
   with: it neither fires nor clears).
3. :func:`step` decides, per fingerprint (rule, scope, stage), from the reading, the streak of
   consecutive verdicts and the open alert if any: fire, escalate, resolve, or only record.

A value exactly at a threshold never breaches. An "above" rule breaches when its value is greater than
a level's threshold, and a "below" rule (inactivity) when its value is smaller.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

from voicemon.domain.model import MEASURED_STAGES, Stage
from voicemon.domain.rates import safe_divide
from voicemon.domain.snapshot import Latency, SnapshotParts
from voicemon.errors import ValidationError


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {s: i for i, s in enumerate(Severity)}


class RuleName(StrEnum):
    FAILURE_RATE = "failure_rate"
    STAGE_FAILURE_RATE = "stage_failure_rate"
    STAGE_LATENCY = "stage_latency"
    END_TO_END_LATENCY = "end_to_end_latency"
    STUCK_ARTIFACTS = "stuck_artifacts"
    QUEUE_DEPTH = "queue_depth"
    CIRCUIT_BREAKER = "circuit_breaker"
    INACTIVITY = "inactivity"
    COST_SPIKE = "cost_spike"
    BUDGET = "budget"
    RETRY_UNDELIVERABLE = "retry_undeliverable"


class AlertState(StrEnum):
    FIRING = "firing"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


OPEN_STATES = frozenset({AlertState.FIRING, AlertState.ACKNOWLEDGED})


class Verdict(StrEnum):
    BREACHING = "breaching"
    CLEAR = "clear"
    INSUFFICIENT_DATA = "insufficient_data"


class TransitionKind(StrEnum):
    FIRED = "fired"
    ESCALATED = "escalated"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


# --- configuration ----------------------------------------------------------------------------------------

MAX_EVALUATIONS = 100  # for_evaluations and clear_evaluations: at most this many in a row


@dataclass(frozen=True, slots=True)
class Level:
    severity: Severity
    threshold: float


@dataclass(frozen=True, slots=True)
class RuleConfig:
    """What an operator may change about a rule. ``levels`` are ordered from the mildest to the most
    severe; ``min_volume`` is in the unit of the rule's volume (ended artifacts, samples, ...)."""

    rule: RuleName
    enabled: bool
    levels: tuple[Level, ...]
    min_volume: float
    for_evaluations: int = 1
    clear_evaluations: int = 2

    # What :func:`with_changes` may change.
    CHANGEABLE: ClassVar[tuple[str, ...]] = (
        "enabled",
        "levels",
        "min_volume",
        "for_evaluations",
        "clear_evaluations",
    )

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule.value,
            "enabled": self.enabled,
            "levels": [{"severity": lv.severity.value, "threshold": lv.threshold} for lv in self.levels],
            "min_volume": self.min_volume,
            "for_evaluations": self.for_evaluations,
            "clear_evaluations": self.clear_evaluations,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RuleConfig:
        """The inverse of :meth:`to_dict`, checked by :func:`check_config`."""
        config = cls(
            rule=RuleName(data["rule"]),
            enabled=bool(data["enabled"]),
            levels=tuple(Level(Severity(lv["severity"]), float(lv["threshold"])) for lv in data["levels"]),
            min_volume=float(data["min_volume"]),
            for_evaluations=int(data["for_evaluations"]),
            clear_evaluations=int(data["clear_evaluations"]),
        )
        check_config(config)
        return config


def check_config(config: RuleConfig) -> None:
    """Refuse a configuration that cannot be evaluated sensibly, naming the field and the rule broken."""
    spec = RULES[config.rule]
    if not config.levels:
        raise ValidationError("needs at least one level", code="invalid_rule", field="levels")
    for i, level in enumerate(config.levels):
        if not math.isfinite(level.threshold) or level.threshold < 0:
            raise ValidationError(
                "must be a finite number, 0 or more", code="invalid_rule", field=f"levels.{i}.threshold"
            )
    severities = [lv.severity.rank for lv in config.levels]
    if severities != sorted(set(severities)):
        raise ValidationError(
            "levels must go from the mildest severity to the most severe, each severity once",
            code="invalid_rule",
            field="levels",
        )
    thresholds = [lv.threshold for lv in config.levels]
    ordered = sorted(set(thresholds), reverse=spec.below)
    if thresholds != ordered:
        way = "fall" if spec.below else "rise"
        raise ValidationError(
            f"thresholds must {way} strictly with severity", code="invalid_rule", field="levels"
        )
    if not math.isfinite(config.min_volume) or config.min_volume < 0:
        raise ValidationError("must be a finite number, 0 or more", code="invalid_rule", field="min_volume")
    for name in ("for_evaluations", "clear_evaluations"):
        value = getattr(config, name)
        if not 1 <= value <= MAX_EVALUATIONS:
            raise ValidationError(f"must be between 1 and {MAX_EVALUATIONS}", code="invalid_rule", field=name)


# --- what one evaluation reads, per scope -----------------------------------------------------------------

BASELINE_MIN_ROWS = 6  # hourly rows with enough samples before a latency baseline counts
BASELINE_MIN_SAMPLES = 20
INACTIVITY_BUSY_RECEIVED = 10  # an hour of day is busy on a day with at least this many received
INACTIVITY_BUSY_DAYS = 3  # ... and it is expected to be busy after this many busy days of the last 7
COST_SPIKE_MIN_USD = 1.0
# A cost baseline needs this many aggregated hours in its 7 days: a new installation's first hours would
# otherwise make any ordinary hour look like a spike.
COST_BASELINE_MIN_HOURS = 24


@dataclass(slots=True)
class ScopeInputs:
    """Everything the rules read for one scope ("" = platform). ``last30`` and ``last60`` are the parts
    of the raw events of the last 30 and 60 minutes; ``week`` the merge of the hourly rows of the last
    7 days (``week_hours``: how many hours of them were aggregated, the mean cost's denominator), and
    ``week_sampled_rows`` how many of those rows held at
    least :data:`BASELINE_MIN_SAMPLES` samples, per stage ("" = end to end)."""

    scope: str
    name: str | None = None
    last30: SnapshotParts = field(default_factory=SnapshotParts)
    last60: SnapshotParts = field(default_factory=SnapshotParts)
    week: SnapshotParts = field(default_factory=SnapshotParts)
    week_hours: int = 0
    week_sampled_rows: dict[str, int] = field(default_factory=dict)
    busy_days_this_hour: int = 0
    stuck: int = 0
    active: int = 0
    breaker_open: bool = False
    budget: Severity | None = None
    undeliverable_retries: int = 0


@dataclass(frozen=True, slots=True)
class Reading:
    """One rule's verdict for one fingerprint. ``threshold`` is that of the level breached (the highest),
    or of the mildest level when not breaching. ``value`` is always finite."""

    rule: RuleName
    scope: str
    stage: str
    verdict: Verdict
    severity: Severity | None
    value: float
    threshold: float
    message: str

    @property
    def fingerprint(self) -> tuple[str, str, str]:
        return (self.rule.value, self.scope, self.stage)


@dataclass(frozen=True, slots=True)
class _Measure:
    """A rule's raw figures before judging: ``volume`` decides sufficiency; ``ready`` is False when a
    baseline it compares with is missing."""

    stage: str
    value: float
    volume: float
    ready: bool
    describe: Callable[[float], str]


@dataclass(frozen=True, slots=True)
class RuleSpec:
    rule: RuleName
    per_stage: bool
    below: bool
    default: RuleConfig
    measure: Callable[[ScopeInputs], list[_Measure]]


def _pct(x: float) -> str:
    return f"{x * 100:.1f} %".replace(".0 %", " %")


def _times(x: float) -> str:
    return f"{x:.1f}x".replace(".0x", "x")


def _count(x: float) -> str:
    return f"{x:.0f}"


def _ms(ms: float) -> str:
    return f"{ms / 1000:.1f} s" if ms >= 1000 else f"{ms:.0f} ms"


def _p95_ms(latency: Latency) -> float | None:
    if latency.count == 0:
        return None
    q = latency.sketch.quantile(0.95)
    return None if q is None or not math.isfinite(q) else q


def _failure_rate(i: ScopeInputs) -> list[_Measure]:
    ended = i.last30.completed + i.last30.failed
    rate = safe_divide(i.last30.failed, ended)
    return [
        _Measure(
            "",
            rate,
            ended,
            True,
            lambda t: (
                f"Failure rate {_pct(rate)} over the last 30 min (threshold {_pct(t)}), "
                f"{ended} ended artifacts"
            ),
        )
    ]


def _stage_failure_measure(stage: Stage, part: Any) -> _Measure:
    ended = part.completed + part.failed
    rate = safe_divide(part.failed, ended)

    def describe(t: float) -> str:
        return (
            f"{stage.value} failure rate {_pct(rate)} over the last 30 min (threshold {_pct(t)}), "
            f"{ended} ended"
        )

    return _Measure(stage.value, rate, ended, True, describe)


def _stage_failure_rate(i: ScopeInputs) -> list[_Measure]:
    return [_stage_failure_measure(stage, i.last30.stages[stage]) for stage in MEASURED_STAGES]


def _latency_measure(label: str, key: str, now: Latency, week: Latency, sampled_rows: int) -> _Measure:
    now_p95, base_p95 = _p95_ms(now), _p95_ms(week)
    ready = sampled_rows >= BASELINE_MIN_ROWS and base_p95 is not None and base_p95 > 0
    ratio = safe_divide(now_p95 or 0.0, base_p95 or 0.0) if ready else 0.0

    def describe(t: float) -> str:
        return (
            f"{label} p95 {_ms(now_p95 or 0)} over the last 60 min is {_times(ratio)} the 7-day p95 of "
            f"{_ms(base_p95 or 0)} (threshold {_times(t)}), {now.count} samples"
        )

    return _Measure(key, ratio, now.count, ready, describe)


def _stage_latency(i: ScopeInputs) -> list[_Measure]:
    return [
        _latency_measure(
            s.value,
            s.value,
            i.last60.stages[s].latency,
            i.week.stages[s].latency,
            i.week_sampled_rows.get(s.value, 0),
        )
        for s in MEASURED_STAGES
    ]


def _end_to_end_latency(i: ScopeInputs) -> list[_Measure]:
    m = _latency_measure(
        "End-to-end", "", i.last60.end_to_end, i.week.end_to_end, i.week_sampled_rows.get("", 0)
    )
    return [m]


def _stuck(i: ScopeInputs) -> list[_Measure]:
    return [
        _Measure("", i.stuck, i.active, True, lambda t: f"{i.stuck} stuck artifacts (more than {_count(t)})")
    ]


def _queue(i: ScopeInputs) -> list[_Measure]:
    return [
        _Measure(
            "", i.active, i.active, True, lambda t: f"{i.active} active artifacts (more than {_count(t)})"
        )
    ]


def _breaker(i: ScopeInputs) -> list[_Measure]:
    state = "open" if i.breaker_open else "closed"
    return [
        _Measure(
            "",
            1.0 if i.breaker_open else 0.0,
            1,
            True,
            lambda _t: f"Circuit breaker {state} (its newest event of the last 24 h)",
        )
    ]


def _inactivity(i: ScopeInputs) -> list[_Measure]:
    received = i.last60.received
    ready = i.busy_days_this_hour >= INACTIVITY_BUSY_DAYS
    return [
        _Measure(
            "",
            received,
            i.busy_days_this_hour,
            ready,
            lambda t: (
                f"{received} voice notes received in the last 60 min (fewer than {_count(t)}), while "
                f"this hour of day had {INACTIVITY_BUSY_RECEIVED} or more on {i.busy_days_this_hour} of the "
                "last 7 days"
            ),
        )
    ]


def _cost_spike(i: ScopeInputs) -> list[_Measure]:
    cost = i.last60.cost_nusd / 1e9
    mean = safe_divide(i.week.cost_nusd / 1e9, i.week_hours)
    ratio = safe_divide(cost, mean)
    # Below $1 in the hour there is no spike worth a person, whatever the ratio: clear, not unknown.
    value = ratio if cost >= COST_SPIKE_MIN_USD else 0.0
    return [
        _Measure(
            "",
            value,
            1,
            mean > 0 and i.week_hours >= COST_BASELINE_MIN_HOURS,
            lambda t: (
                f"AI cost ${cost:.2f} over the last 60 min is {_times(ratio)} the 7-day mean of "
                f"${mean:.2f} an hour (threshold {_times(t)})"
            ),
        )
    ]


_BUDGET_VALUE = {None: 0.0, Severity.MEDIUM: 1.0, Severity.HIGH: 2.0}


def _budget(i: ScopeInputs) -> list[_Measure]:
    what = {
        None: "No budget event",
        Severity.MEDIUM: "Budget threshold reached",
        Severity.HIGH: "Budget exceeded",
    }[i.budget]
    return [_Measure("", _BUDGET_VALUE.get(i.budget, 0.0), 1, True, lambda _t: f"{what} in the last 60 min")]


def _undeliverable(i: ScopeInputs) -> list[_Measure]:
    n = i.undeliverable_retries
    return [_Measure("", n, 1, True, lambda _t: f"{n} retries undeliverable in the last 60 min")]


def _cfg(rule: RuleName, levels: list[tuple[Severity, float]], min_volume: float) -> RuleConfig:
    return RuleConfig(rule, True, tuple(Level(s, t) for s, t in levels), min_volume)


S = Severity
RULES: dict[RuleName, RuleSpec] = {
    spec.rule: spec
    for spec in (
        RuleSpec(
            RuleName.FAILURE_RATE,
            False,
            False,
            _cfg(RuleName.FAILURE_RATE, [(S.HIGH, 0.10), (S.CRITICAL, 0.25)], 20),
            _failure_rate,
        ),
        RuleSpec(
            RuleName.STAGE_FAILURE_RATE,
            True,
            False,
            _cfg(RuleName.STAGE_FAILURE_RATE, [(S.HIGH, 0.20)], 20),
            _stage_failure_rate,
        ),
        RuleSpec(
            RuleName.STAGE_LATENCY,
            True,
            False,
            _cfg(RuleName.STAGE_LATENCY, [(S.MEDIUM, 2.0)], 20),
            _stage_latency,
        ),
        RuleSpec(
            RuleName.END_TO_END_LATENCY,
            False,
            False,
            _cfg(RuleName.END_TO_END_LATENCY, [(S.MEDIUM, 2.0)], 20),
            _end_to_end_latency,
        ),
        RuleSpec(
            RuleName.STUCK_ARTIFACTS,
            False,
            False,
            _cfg(RuleName.STUCK_ARTIFACTS, [(S.MEDIUM, 0), (S.HIGH, 9)], 0),
            _stuck,
        ),
        RuleSpec(
            RuleName.QUEUE_DEPTH,
            False,
            False,
            _cfg(RuleName.QUEUE_DEPTH, [(S.MEDIUM, 50)], 0),
            _queue,
        ),
        RuleSpec(
            RuleName.CIRCUIT_BREAKER,
            False,
            False,
            _cfg(RuleName.CIRCUIT_BREAKER, [(S.CRITICAL, 0)], 0),
            _breaker,
        ),
        RuleSpec(
            RuleName.INACTIVITY,
            False,
            True,
            _cfg(RuleName.INACTIVITY, [(S.LOW, 1)], 0),
            _inactivity,
        ),
        RuleSpec(
            RuleName.COST_SPIKE,
            False,
            False,
            _cfg(RuleName.COST_SPIKE, [(S.HIGH, 3.0)], 0),
            _cost_spike,
        ),
        RuleSpec(
            RuleName.BUDGET,
            False,
            False,
            _cfg(RuleName.BUDGET, [(S.MEDIUM, 0), (S.HIGH, 1)], 0),
            _budget,
        ),
        RuleSpec(
            RuleName.RETRY_UNDELIVERABLE,
            False,
            False,
            _cfg(RuleName.RETRY_UNDELIVERABLE, [(S.MEDIUM, 0)], 0),
            _undeliverable,
        ),
    )
}
DEFAULT_CONFIGS: dict[RuleName, RuleConfig] = {name: spec.default for name, spec in RULES.items()}


def _breaches(spec: RuleSpec, value: float, threshold: float) -> bool:
    return value < threshold if spec.below else value > threshold


def evaluate(config: RuleConfig, inputs: ScopeInputs) -> list[Reading]:
    """The readings of one enabled rule for one scope (one per stage for per-stage rules)."""
    spec = RULES[config.rule]
    where = f", org {inputs.name or inputs.scope}" if inputs.scope else ", platform-wide"
    out = []
    for m in spec.measure(inputs):
        value = m.value if math.isfinite(m.value) else 0.0
        passed = [lv for lv in config.levels if _breaches(spec, value, lv.threshold)]
        if m.volume < config.min_volume or not m.ready:
            verdict, severity, threshold = Verdict.INSUFFICIENT_DATA, None, config.levels[0].threshold
            reason = (
                f"not enough data: volume {_count(m.volume)}, needs {_count(config.min_volume)}"
                if m.volume < config.min_volume
                else "not enough data: no baseline to compare with yet"
            )
            message = f"{config.rule.value}: {reason}{where}"
        elif passed:
            top = passed[-1]
            verdict, severity, threshold = Verdict.BREACHING, top.severity, top.threshold
            message = m.describe(threshold) + where
        else:
            verdict, severity, threshold = Verdict.CLEAR, None, config.levels[0].threshold
            message = m.describe(threshold) + where
        out.append(Reading(config.rule, inputs.scope, m.stage, verdict, severity, value, threshold, message))
    return out


# --- the life of one fingerprint --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Streak:
    """Consecutive breaching and clear verdicts of a fingerprint (one of them is always 0)."""

    breaches: int = 0
    clears: int = 0


@dataclass(frozen=True, slots=True)
class OpenAlert:
    alert_id: str
    severity: Severity
    state: AlertState


class Action(StrEnum):
    NONE = "none"  # record the evaluation on the open alert, if any
    FIRE = "fire"
    ESCALATE = "escalate"
    RESOLVE = "resolve"


@dataclass(frozen=True, slots=True)
class Step:
    action: Action
    streak: Streak


def step(config: RuleConfig, reading: Reading, streak: Streak, alert: OpenAlert | None) -> Step:
    """What one reading does to its fingerprint.

    - breaching: the streak of breaches grows; with no open alert, it fires once the streak reaches
      ``for_evaluations``; an open alert escalates when the reading's severity is higher than its own
      (it never de-escalates while open: the worst seen stays on record).
    - clear: the streak of clears grows; an open alert resolves once it reaches ``clear_evaluations``.
    - insufficient data: nothing changes; the open alert records that it could not tell.
    """
    if reading.verdict is Verdict.BREACHING:
        grown = Streak(breaches=streak.breaches + 1)
        assert reading.severity is not None
        if alert is None:
            return Step(Action.FIRE if grown.breaches >= config.for_evaluations else Action.NONE, grown)
        if reading.severity.rank > alert.severity.rank:
            return Step(Action.ESCALATE, grown)
        return Step(Action.NONE, grown)
    if reading.verdict is Verdict.CLEAR:
        grown = Streak(clears=streak.clears + 1)
        if alert is not None and grown.clears >= config.clear_evaluations:
            return Step(Action.RESOLVE, Streak())
        return Step(Action.NONE, grown if alert is not None else Streak())
    return Step(Action.NONE, streak)


def with_changes(config: RuleConfig, changes: Mapping[str, Any]) -> RuleConfig:
    """A copy of ``config`` with ``changes`` applied and checked (the keys of :meth:`RuleConfig.to_dict`
    other than ``rule``)."""
    return RuleConfig.from_dict({**config.to_dict(), **changes, "rule": config.rule.value})
