"""Realistic event streams for benchmarks, drawn from the simulated pipeline's model."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from voicemon.sim.model import SimConfig, organizations, pick_org, plan_journey


def events(count: int, start_ms: int, span_ms: int, seed: int = 1, orgs: int = 20) -> list[dict[str, Any]]:
    """About ``count`` JSON events of whole journeys, timestamped in ``[start_ms, start_ms + span_ms)``."""
    rng = random.Random(seed)
    config = SimConfig(organizations=orgs)
    org_list = organizations(config)
    out: list[dict[str, Any]] = []
    n = 0
    while len(out) < count:
        n += 1
        journey = plan_journey(f"b{seed}-{n}", pick_org(org_list, rng), rng, config)
        t0 = start_ms + rng.randrange(span_ms)
        for offset, event in journey.events:
            ts = t0 + int(offset)
            if ts >= start_ms + span_ms:
                break
            out.append(dict(event, event_id=f"b{seed}-{n}-{len(out)}", timestamp=ts))
            if len(out) >= count:
                break
    return out


def batches(items: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
