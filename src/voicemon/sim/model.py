"""A realistic voice-notes pipeline as numbers: organizations, latencies, failures, costs (no I/O).

:func:`plan_journey` draws one artifact's whole trip through the pipeline: the events it will emit, each
at an offset from its start, and the derived data (transcript, claims, resolutions, drafts) each stage
produces. The simulator emits the events at their times, in real time or in the past (backfill).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from voicemon.sdk.stage import STAGE_EVENTS

STAGES = ("transcription", "claims_extraction", "entity_resolution", "draft_generation")

# (started, completed, failed) event types of each stage: the SDK's table.
STAGE_TYPES = STAGE_EVENTS

ERRORS = {
    "transcription": ("asr_timeout", "audio could not be decoded"),
    "claims_extraction": ("llm_rate_limited", "the model provider returned 429"),
    "entity_resolution": ("roster_unavailable", "team roster service timed out"),
    "draft_generation": ("llm_invalid_output", "the model returned malformed JSON"),
}


@dataclass(frozen=True, slots=True)
class StageProfile:
    """Lognormal latency (median ms, sigma), failure probability, and the AI model it bills."""

    median_ms: float
    sigma: float
    failure_p: float
    model: str
    usd_per_call: float


@dataclass(frozen=True, slots=True)
class SimConfig:
    organizations: int = 8
    zipf_s: float = 1.2
    stages: dict[str, StageProfile] = field(
        default_factory=lambda: {
            # About 4 % of notes fail somewhere: enough failures to retry, and well below the 10 % of
            # the failure_rate alert, which an incident (not chance) should cross.
            "transcription": StageProfile(2500, 0.5, 0.015, "asr-large-v3", 0.006),
            "claims_extraction": StageProfile(3500, 0.45, 0.01, "llm-extract-mini", 0.012),
            "entity_resolution": StageProfile(700, 0.6, 0.005, "resolver-v2", 0.0),
            "draft_generation": StageProfile(3000, 0.5, 0.01, "llm-draft-small", 0.009),
        }
    )
    disambiguation_share: float = 0.18
    gap_ms: float = 150.0


class Incident(StrEnum):
    """A condition the simulated pipeline can produce on demand, for one organization, so that the alert
    rule of the same name fires (and, once the incident ends, resolves)."""

    FAILURE_RATE = "failure_rate"  # most notes fail in transcription
    STAGE_LATENCY = "stage_latency"  # transcription takes six times as long
    STUCK_ARTIFACTS = "stuck_artifacts"  # notes stop after transcription starts: a lost worker
    COST_SPIKE = "cost_spike"  # every model call costs twenty times as much
    CIRCUIT_BREAKER = "circuit_breaker"  # the pipeline opens its breaker (closed when the incident ends)
    BUDGET = "budget"  # the organization's budget is exceeded


INCIDENT_FAILURE_P = 0.6
INCIDENT_SLOWDOWN = 6.0
INCIDENT_COST_FACTOR = 20.0


def under_incident(config: SimConfig, incident: Incident | None) -> SimConfig:
    """The pipeline as one organization sees it during ``incident`` (a journey-shaping incident; the
    one-off events of a breaker or a budget leave the journeys alone)."""
    if incident is None:
        return config
    stages = dict(config.stages)
    asr = stages["transcription"]
    if incident is Incident.FAILURE_RATE:
        stages["transcription"] = replace(asr, failure_p=INCIDENT_FAILURE_P)
    elif incident is Incident.STAGE_LATENCY:
        stages["transcription"] = replace(asr, median_ms=asr.median_ms * INCIDENT_SLOWDOWN)
    elif incident is Incident.COST_SPIKE:
        stages = {
            name: replace(p, usd_per_call=p.usd_per_call * INCIDENT_COST_FACTOR) for name, p in stages.items()
        }
    return replace(config, stages=stages)


def stalled(journey: Journey) -> Journey:
    """The journey of a note whose worker was lost: it stops once its first stage has started."""
    first_start = next(i for i, (_, e) in enumerate(journey.events) if e["event_type"].endswith("_started"))
    return Journey(journey.artifact_id, journey.events[: first_start + 1], {}, None)


def incident_events(incident: Incident, org: Org, ending: bool) -> list[dict[str, Any]]:
    """The one-off events an incident emits when it begins (``ending``: when it ends)."""
    base = {"organization_id": org.organization_id}
    if incident is Incident.CIRCUIT_BREAKER:
        kind = "circuit_breaker_closed" if ending else "circuit_breaker_opened"
        return [dict(base, event_type=kind, metadata={"breaker": "asr-provider"})]
    if incident is Incident.BUDGET and not ending:
        return [dict(base, event_type="budget_exceeded", metadata={"budget_usd": 50, "spent_usd": 51.3})]
    return []


@dataclass(frozen=True, slots=True)
class Org:
    organization_id: str
    name: str
    weight: float


ORG_NAMES = (
    "Riverside FC",
    "Northgate Academy",
    "Harbor City United",
    "Oakfield Rangers",
    "Summit Athletics",
    "Lakeshore SC",
    "Westbrook Youth",
    "Granite Hill FC",
    "Meadowlark Club",
    "Pinecrest Rovers",
)


def organizations(config: SimConfig) -> list[Org]:
    """Organizations with Zipf-like volumes: the k-th has weight 1/k^s."""
    out = []
    for k in range(1, config.organizations + 1):
        name = ORG_NAMES[(k - 1) % len(ORG_NAMES)] + ("" if k <= len(ORG_NAMES) else f" {k}")
        out.append(Org(f"org-{k:03d}", name, 1 / k**config.zipf_s))
    return out


def pick_org(orgs: list[Org], rng: random.Random) -> Org:
    return rng.choices(orgs, weights=[o.weight for o in orgs])[0]


@dataclass(slots=True)
class Journey:
    """Events as (offset ms from start, event fields), and derived rows per stage."""

    artifact_id: str
    events: list[tuple[float, dict[str, Any]]]
    derived: dict[str, list[str]]
    failed_stage: str | None


def _lognormal(profile: StageProfile, rng: random.Random) -> float:
    return profile.median_ms * math.exp(rng.gauss(0, profile.sigma))


def plan_journey(
    artifact_id: str,
    org: Org,
    rng: random.Random,
    config: SimConfig,
    *,
    from_stage: str | None = None,
    can_fail: bool = True,
) -> Journey:
    """Draw one trip. ``from_stage`` starts a retry at that stage (no ``artifact_received``)."""
    base = {"artifact_id": artifact_id, "organization_id": org.organization_id}
    events: list[tuple[float, dict[str, Any]]] = []
    derived: dict[str, list[str]] = {}
    t = 0.0
    if from_stage is None:
        note = f"vn-{artifact_id}"
        coach = f"coach-{rng.randint(1, 40):02d}"
        channel = rng.choice(("app_voice", "app_voice", "whatsapp", "web_text"))
        base.update(voice_note_id=note, coach_user_id=coach)
        events.append((t, dict(base, event_type="artifact_received", metadata={"source_channel": channel})))
        t += config.gap_ms
    stages = STAGES if from_stage is None else STAGES[STAGES.index(from_stage) :]
    for stage in stages:
        profile = config.stages[stage]
        started, _, failed = STAGE_TYPES[stage]
        events.append((t, dict(base, event_type=started)))
        duration = _lognormal(profile, rng)
        t += duration
        if can_fail and rng.random() < profile.failure_p:
            code, message = ERRORS[stage]
            fail = dict(
                base,
                event_type=failed,
                duration_ms=round(duration, 1),
                error_code=code,
                error_message=message,
            )
            events.append((t, fail))
            events.append(
                (t + 1, dict(base, event_type="artifact_failed", error_code=code, error_message=message))
            )
            return Journey(artifact_id, events, derived, stage)
        event_type, metadata, rows = _stage_output(stage, profile, rng, config)
        derived[stage] = rows
        events.append(
            (t, dict(base, event_type=event_type, duration_ms=round(duration, 1), metadata=metadata))
        )
        t += config.gap_ms
    events.append((t, dict(base, event_type="artifact_completed")))
    if rng.random() < 0.6:
        verdict = "draft_confirmed" if rng.random() < 0.8 else "draft_rejected"
        events.append((t + rng.uniform(30_000, 600_000), dict(base, event_type=verdict)))
    return Journey(artifact_id, events, derived, None)


def _stage_output(
    stage: str, profile: StageProfile, rng: random.Random, config: SimConfig
) -> tuple[str, dict[str, Any], list[str]]:
    cost = round(profile.usd_per_call * rng.uniform(0.6, 1.6), 6)
    meta: dict[str, Any] = {"ai_model": profile.model, "ai_cost_usd": cost} if profile.usd_per_call else {}
    if stage == "transcription":
        words = rng.randint(40, 400)
        meta.update(confidence_score=round(min(1.0, rng.betavariate(18, 2)), 4), transcript_word_count=words)
        meta["transcript_duration_s"] = round(words / 2.5, 1)
        return "transcription_completed", meta, [f"transcript of {words} words"]
    if stage == "claims_extraction":
        claims = rng.randint(1, 8)
        meta.update(
            claim_count=claims, confidence_score=round(rng.betavariate(12, 3), 4), prompt_version="claims-v7"
        )
        return "claims_extracted", meta, [f"claim {i + 1}" for i in range(claims)]
    if stage == "entity_resolution":
        entities = rng.randint(1, 6)
        unclear = rng.random() < config.disambiguation_share
        ambiguous = rng.randint(1, entities) if unclear else 0
        meta.update(
            entity_count=entities, auto_resolved_count=entities - ambiguous, disambiguation_count=ambiguous
        )
        event = "entity_needs_disambiguation" if unclear else "entity_resolution_completed"
        return event, meta, [f"player match {i + 1}" for i in range(entities)]
    drafts = rng.randint(1, 5)
    meta.update(draft_count=drafts, prompt_version="insights-v3")
    return "drafts_generated", meta, [f"draft insight {i + 1}" for i in range(drafts)]
