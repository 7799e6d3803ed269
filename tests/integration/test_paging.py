"""Keyset paging of ``GET /v1/events`` and ``GET /v1/artifacts`` (SPEC 7), their filters, and their cost.

A client that pages through a list while the pipeline keeps reporting must see every row that existed when
it started exactly once, in newest-first order: new rows never shift a page boundary.
"""

from __future__ import annotations

import itertools
import random
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import func, select

from tests.conftest import NOW_MS, STAFF, Api, StatementCounter
from tests.helpers import assert_error, ev, items_of
from voicemon.clock import FakeClock
from voicemon.domain.timeutil import HOUR_MS, MINUTE_MS, SECOND_MS, format_time, parse_time
from voicemon.service import Services
from voicemon.service.retention import Retention
from voicemon.settings import Settings
from voicemon.storage.tables import artifact_moves

ORGS = ("org-a", "org-b", "org-c")
TYPES = (
    "artifact_received",
    "transcription_started",
    "transcription_completed",
    "claims_extracted",
    "entity_needs_disambiguation",
    "drafts_generated",
    "artifact_completed",
    "artifact_failed",
    "draft_confirmed",
    "rate_limit_hit",
)
STAGE_OF = {
    "artifact_received": "ingestion",
    "transcription_started": "transcription",
    "transcription_completed": "transcription",
    "claims_extracted": "claims_extraction",
    "entity_needs_disambiguation": "entity_resolution",
    "drafts_generated": "draft_generation",
    "draft_confirmed": "confirmation",
}

Page = Callable[[str | None], tuple[list[dict[str, Any]], str | None]]


def post(api: Api, events: list[dict[str, Any]]) -> None:
    r = api.call("POST", "/v1/events", json={"events": events})
    assert r.status_code == 200, r.text
    assert r.json()["rejected"] == [], r.json()["rejected"][:3]
    assert r.json()["accepted"] == len(events)


def pager(api: Api, path: str, limit: int, **params: Any) -> Page:
    def page(cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        query = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        r = api.call("GET", f"{path}?{urlencode(query)}")
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"items", "next_cursor"}
        assert len(body["items"]) <= limit
        return body["items"], body["next_cursor"]

    return page


def page_all(
    page: Page, between: Callable[[int, dict[str, Any]], None] | None = None
) -> list[dict[str, Any]]:
    """Every item of every page; ``between(n, last_item)`` runs after page n."""
    out: list[dict[str, Any]] = []
    cursor: str | None = None
    for n in itertools.count():
        items, cursor = page(cursor)
        out.extend(items)
        if cursor is None:
            return out
        assert items, "a page with a cursor after it is not empty"
        if between is not None:
            between(n, items[-1])
        assert n < 1000


def event_key(item: dict[str, Any]) -> int:
    return parse_time(item["timestamp"])


# --- events -----------------------------------------------------------------------------------------


def seed_events(api: Api, count: int, seed: int) -> list[dict[str, Any]]:
    """Events at times with many ties (whole seconds), over several requests."""
    rng = random.Random(seed)
    sent = []
    for i in range(count):
        kind = rng.choice(TYPES)
        fields: dict[str, Any] = {}
        org = rng.choice((*ORGS, None))
        if org:
            fields["organization_id"] = org
        if kind in ("artifact_completed", "artifact_failed", "rate_limit_hit") and rng.random() < 0.5:
            fields["pipeline_stage"] = rng.choice(("transcription", "draft_generation"))
        artifact = None if kind == "rate_limit_hit" and rng.random() < 0.5 else f"art-{i % 9}"
        ts = NOW_MS - rng.randrange(0, 40) * 30 * SECOND_MS
        sent.append(ev(kind, artifact, ts, **fields))
    for i in range(0, count, 13):
        post(api, sent[i : i + 13])
    return sent


def test_event_pages_give_every_row_once_newest_first(api: Api) -> None:
    sent = seed_events(api, 50, seed=1)
    pages = page_all(pager(api, "/v1/events", 7))
    ids = [i["event_id"] for i in pages]
    assert len(ids) == len(set(ids)) == 50
    assert set(ids) == {e["event_id"] for e in sent}
    times = [event_key(i) for i in pages]
    assert times == sorted(times, reverse=True)
    # The same order as one big page: page boundaries do not reorder ties.
    assert ids == [i["event_id"] for i in items_of(api.call("GET", "/v1/events?limit=500"))]


def test_events_arriving_while_paging_never_duplicate_or_hide_a_row(api: Api) -> None:
    sent = seed_events(api, 50, seed=2)
    original = {e["event_id"] for e in sent}
    arrived: list[dict[str, Any]] = []
    rng = random.Random(3)

    def meanwhile(n: int, last: dict[str, Any]) -> None:
        at = event_key(last)
        batch = [
            ev("transcription_started", "art-1", at + SECOND_MS),  # newer than the cursor
            ev("artifact_received", f"new-{n}", min(at + HOUR_MS, NOW_MS)),  # much newer, new artifact
            ev("claims_extracted", "art-2", at),  # the cursor's own timestamp
            ev("drafts_generated", "art-3", at - rng.randrange(1, 5) * 30 * SECOND_MS),  # older
            ev("artifact_received", f"old-{n}", at - 25 * MINUTE_MS),  # older than all: new artifact
        ]
        post(api, batch)
        arrived.extend(batch)

    pages = page_all(pager(api, "/v1/events", 7), meanwhile)
    ids = [i["event_id"] for i in pages]
    assert len(ids) == len(set(ids)), "a row came twice"
    assert original <= set(ids), f"rows missed: {original - set(ids)}"
    times = [event_key(i) for i in pages]
    assert times == sorted(times, reverse=True)
    assert arrived, "the test inserted rows while paging"
    # Rows that arrived behind the cursor show up in their place; none from before the cursor.
    assert any(i.startswith("e-") and i not in original for i in ids)


def _query_time(value: str) -> int:
    """A time as the query string gives it: epoch ms as digits, or RFC 3339."""
    return int(value) if value.isdigit() else parse_time(value)


def _expected(sent: list[dict[str, Any]], **f: Any) -> list[str]:
    def keep(e: dict[str, Any]) -> bool:
        ts = parse_time(e["timestamp"])
        stage = e.get("pipeline_stage", STAGE_OF.get(e["event_type"]))
        return (
            ("event_type" not in f or e["event_type"] == f["event_type"])
            and ("pipeline_stage" not in f or stage == f["pipeline_stage"])
            and ("organization_id" not in f or e.get("organization_id") == f["organization_id"])
            and ("artifact_id" not in f or e.get("artifact_id") == f["artifact_id"])
            and ("start" not in f or ts >= _query_time(f["start"]))
            and ("end" not in f or ts < _query_time(f["end"]))
        )

    return sorted(e["event_id"] for e in sent if keep(e))


FILTERS: list[dict[str, Any]] = [
    {"event_type": "artifact_received"},
    {"event_type": "artifact_failed", "pipeline_stage": "transcription"},
    {"pipeline_stage": "transcription"},
    {"pipeline_stage": "ingestion", "organization_id": "org-a"},
    {"organization_id": "org-b"},
    {"artifact_id": "art-3"},
    {"artifact_id": "art-3", "event_type": "draft_confirmed"},
    {"organization_id": "org-c", "artifact_id": "art-4", "pipeline_stage": "confirmation"},
    {"start": format_time(NOW_MS - 10 * MINUTE_MS)},
    {"end": format_time(NOW_MS - 10 * MINUTE_MS)},
    {"start": format_time(NOW_MS - 12 * MINUTE_MS), "end": format_time(NOW_MS - 6 * MINUTE_MS)},
    {"start": str(NOW_MS - 15 * MINUTE_MS), "end": str(NOW_MS - 15 * MINUTE_MS + 30 * SECOND_MS)},
    {"event_type": "claims_extracted", "pipeline_stage": "transcription"},
    {"start": format_time(NOW_MS), "end": format_time(NOW_MS - MINUTE_MS)},
]
SIX_FILTERS = {
    "event_type": "transcription_completed",
    "pipeline_stage": "transcription",
    "organization_id": "org-a",
    "artifact_id": "art-2",
    "start": format_time(NOW_MS - 20 * MINUTE_MS),
    "end": format_time(NOW_MS),
}


def test_event_filters_combine_with_and(api: Api) -> None:
    sent = seed_events(api, 300, seed=4)
    # One event that meets all six filters of the last combination, and six that each miss one.
    t = NOW_MS - 7 * MINUTE_MS
    target = {"organization_id": "org-a", "pipeline_stage": "transcription"}
    crafted = [
        ev("transcription_completed", "art-2", t, **target),
        ev("transcription_started", "art-2", t, **target),
        ev("artifact_completed", "art-2", t, **target),  # same stage, given: type differs
        ev("transcription_completed", "art-2", t, organization_id="org-b"),
        ev("transcription_completed", "art-x", t, **target),
        ev("transcription_completed", "art-2", NOW_MS - 20 * MINUTE_MS - 1, **target),
        ev("transcription_completed", "art-2", NOW_MS, **target),  # end is exclusive
        ev("claims_extracted", "art-4", t, organization_id="org-c"),
        ev("draft_confirmed", "art-4", t, organization_id="org-c"),
    ]
    post(api, crafted)
    sent += crafted
    empty = []
    for f in [*FILTERS, SIX_FILTERS]:
        got = [i["event_id"] for i in page_all(pager(api, "/v1/events", 23, **f))]
        assert len(got) == len(set(got)), f
        assert sorted(got) == _expected(sent, **f), f
        if not got:
            empty.append(f)
    # Only the contradictory filters select nothing.
    assert empty == [FILTERS[-2], FILTERS[-1]]
    six = [i["event_id"] for i in page_all(pager(api, "/v1/events", 23, **SIX_FILTERS))]
    assert six == [crafted[0]["event_id"]]


def test_filtered_items_match_every_filter(api: Api) -> None:
    seed_events(api, 120, seed=5)
    start, end = NOW_MS - 15 * MINUTE_MS, NOW_MS - 2 * MINUTE_MS
    f = {"organization_id": "org-a", "pipeline_stage": "transcription", "start": start, "end": end}
    items = page_all(pager(api, "/v1/events", 5, **f))
    assert items
    for item in items:
        assert item["organization_id"] == "org-a"
        assert item["pipeline_stage"] == "transcription"
        assert start <= event_key(item) < end


@pytest.mark.parametrize(
    "query",
    ["event_type=nope", "pipeline_stage=billing", "start=yesterday", "end=2026-01-01T00:00:00", "cursor=xyz"],
)
def test_bad_filters_are_refused(api: Api, query: str) -> None:
    r = api.call("GET", f"/v1/events?{query}")
    assert r.status_code in (400, 422), r.text
    assert set(r.json()["error"]) >= {"code", "message"}


def test_a_cursor_of_one_list_is_refused_by_the_other(api: Api) -> None:
    seed_events(api, 10, seed=6)
    _, cursor = pager(api, "/v1/events", 3)(None)
    assert cursor is not None
    assert_error(api.call("GET", f"/v1/artifacts?cursor={cursor}"), 400, "invalid_cursor", "cursor")
    _, cursor = pager(api, "/v1/artifacts", 3)(None)
    assert cursor is not None
    assert_error(api.call("GET", f"/v1/events?cursor={cursor}"), 400, "invalid_cursor", "cursor")


@pytest.mark.parametrize(
    ("taken", "replayed"),
    [
        ({"event_type": "artifact_received"}, {"event_type": "transcription_started"}),
        ({"event_type": "artifact_received"}, {}),
        ({}, {"event_type": "artifact_received"}),
        ({"pipeline_stage": "transcription"}, {"pipeline_stage": "ingestion"}),
        ({"organization_id": "org-a"}, {"organization_id": "org-b"}),
        ({"artifact_id": "art-1"}, {"artifact_id": "art-2"}),
        ({"start": str(NOW_MS - HOUR_MS)}, {"start": str(NOW_MS - HOUR_MS + 1)}),
        ({"end": str(NOW_MS)}, {"start": str(NOW_MS)}),
    ],
)
def test_an_event_cursor_replayed_with_other_filters_is_refused(
    api: Api, taken: dict[str, str], replayed: dict[str, str]
) -> None:
    post(
        api,
        [ev("artifact_received", "art-1", NOW_MS - i * SECOND_MS, organization_id="org-a") for i in range(4)],
    )
    post(
        api,
        [
            ev("transcription_started", "art-2", NOW_MS - i * SECOND_MS, organization_id="org-b")
            for i in range(4)
        ],
    )
    post(
        api,
        [
            ev("artifact_received", "art-2", NOW_MS - 2 * HOUR_MS - i, organization_id="org-b")
            for i in range(4)
        ],
    )
    _, cursor = pager(api, "/v1/events", 1, **taken)(None)
    assert cursor is not None
    r = api.call("GET", f"/v1/events?{urlencode({**replayed, 'cursor': cursor})}")
    assert_error(r, 400, "invalid_cursor", "cursor")


@pytest.mark.parametrize(
    ("taken", "replayed"),
    [
        ({"status": "received"}, {"status": "active"}),
        ({"status": "received"}, {}),
        ({}, {"status": "received"}),
        ({"organization_id": "org-a"}, {"organization_id": "org-b"}),
        ({"organization_id": "org-a"}, {}),
    ],
)
def test_an_artifact_cursor_replayed_with_other_filters_is_refused(
    api: Api, taken: dict[str, str], replayed: dict[str, str]
) -> None:
    post(
        api,
        [ev("artifact_received", f"a{i}", NOW_MS - i * SECOND_MS, organization_id="org-a") for i in range(4)],
    )
    _, cursor = pager(api, "/v1/artifacts", 1, **taken)(None)
    assert cursor is not None
    r = api.call("GET", f"/v1/artifacts?{urlencode({**replayed, 'cursor': cursor})}")
    assert_error(r, 400, "invalid_cursor", "cursor")


def test_a_cursor_goes_on_with_the_same_filter_however_it_is_spelled(api: Api) -> None:
    """The filter a cursor is bound to is the normalised one: a time as epoch ms or RFC 3339, the
    organization of a scoped key named or left out. The page size is not a filter."""
    post(
        api,
        [ev("artifact_received", f"s{i}", NOW_MS - i * SECOND_MS, organization_id="org-a") for i in range(6)],
    )
    start = NOW_MS - MINUTE_MS
    _, cursor = pager(api, "/v1/events", 2, start=str(start))(None)
    assert cursor is not None
    items, _ = pager(api, "/v1/events", 3, start=format_time(start))(cursor)
    assert [i["artifact_id"] for i in items] == ["s2", "s3", "s4"]

    scoped = api.key("viewer", "org-a")
    first = api.call("GET", "/v1/artifacts?limit=2", scoped).json()
    assert first["next_cursor"]
    r = api.call("GET", f"/v1/artifacts?limit=2&organization_id=org-a&cursor={first['next_cursor']}", scoped)
    assert [a["artifact_id"] for a in items_of(r)] == ["s2", "s3"]
    # The same cursor under an unscoped key names another list: all organizations.
    assert_error(api.call("GET", f"/v1/artifacts?cursor={first['next_cursor']}"), 400, "invalid_cursor")


# --- artifacts --------------------------------------------------------------------------------------


def seed_artifacts(api: Api, count: int) -> list[str]:
    """Artifacts received at times with ties, each with a few later events; returns ids newest first."""
    rng = random.Random(7)
    events = []
    received: dict[str, int] = {}
    for i in range(count):
        artifact = f"pa-{i:03d}"
        at = NOW_MS - 30 * MINUTE_MS + rng.randrange(0, 20) * MINUTE_MS
        received[artifact] = at
        org = ORGS[i % 3]
        events.append(ev("artifact_received", artifact, at, organization_id=org))
        events.append(ev("transcription_started", artifact, at + SECOND_MS, organization_id=org))
        if i % 4 == 0:
            events.append(ev("artifact_failed", artifact, at + 2 * SECOND_MS, organization_id=org))
    rng.shuffle(events)
    for i in range(0, len(events), 40):
        post(api, events[i : i + 40])
    return sorted(received, key=lambda a: (received[a], a), reverse=True)


def test_artifact_pages_give_every_row_once_newest_received_first(api: Api) -> None:
    expected = seed_artifacts(api, 50)
    pages = page_all(pager(api, "/v1/artifacts", 7))
    assert [a["artifact_id"] for a in pages] == expected
    received = [parse_time(a["received_at"]) for a in pages]
    assert received == sorted(received, reverse=True)


def test_artifacts_arriving_while_paging_never_duplicate_or_hide_a_row(api: Api) -> None:
    expected = seed_artifacts(api, 50)
    rng = random.Random(8)

    def meanwhile(n: int, last: dict[str, Any]) -> None:
        at = parse_time(last["received_at"])
        seen_one, seen_org = last["artifact_id"], last["organization_id"]
        not_yet = expected[-1 - n]
        not_yet_org = ORGS[int(not_yet.removeprefix("pa-")) % 3]
        post(
            api,
            [
                ev("artifact_received", f"newer-{n}", min(at + 5 * MINUTE_MS, NOW_MS)),
                ev("artifact_received", f"older-{n}", at - rng.randrange(1, 20) * MINUTE_MS),
                ev("artifact_received", f"tied-{n}", at),
                # existing artifacts, already listed or not, with newer and older events
                ev("claims_extracted", seen_one, NOW_MS - SECOND_MS, organization_id=seen_org),
                ev("transcription_completed", seen_one, at - 40 * MINUTE_MS, organization_id=seen_org),
                ev("artifact_completed", not_yet, NOW_MS, organization_id=not_yet_org),
                ev("draft_confirmed", not_yet, at - 45 * MINUTE_MS, organization_id=not_yet_org),
            ],
        )

    pages = page_all(pager(api, "/v1/artifacts", 7), meanwhile)
    ids = [a["artifact_id"] for a in pages]
    assert len(ids) == len(set(ids)), "an artifact came twice"
    assert [a for a in ids if a in set(expected)] == expected
    listed = [(parse_time(a["received_at"]), a["artifact_id"]) for a in pages]
    assert listed == sorted(listed, reverse=True)
    assert any(a.startswith("older-") for a in ids), "new rows behind the cursor show up in their place"
    assert not any(a.startswith("newer-") for a in ids)


def test_a_receipt_arriving_late_does_not_list_its_artifact_twice(api: Api) -> None:
    """An artifact first seen by a later stage is listed by that time until its receipt arrives; the
    receipt moves it (newest received first). A client that listed it before the move does not see it
    again at its new place."""
    events = [ev("artifact_received", f"r{i}", NOW_MS - i * MINUTE_MS) for i in range(10)]
    events.append(ev("transcription_started", "late", NOW_MS - 30 * SECOND_MS))  # between r0 and r1
    post(api, events)

    def meanwhile(n: int, _last: dict[str, Any]) -> None:
        if n == 0:
            post(api, [ev("artifact_received", "late", NOW_MS - 5 * MINUTE_MS - 1)])

    seen = [a["artifact_id"] for a in page_all(pager(api, "/v1/artifacts", 3), meanwhile)]
    assert sorted(seen) == sorted({*seen}) == sorted(["late", *(f"r{i}" for i in range(10))])


def test_a_receipt_arriving_late_does_not_hide_its_artifact(api: Api) -> None:
    """The other way round: an artifact not listed yet, first seen long ago by a later stage, whose
    receipt arrives newer than the cursor's place, is still listed once (at the place it had)."""
    events = [ev("artifact_received", f"r{i}", NOW_MS - i * MINUTE_MS) for i in range(10)]
    events.append(ev("transcription_started", "late", NOW_MS - 50 * MINUTE_MS))  # after r9
    post(api, events)

    def meanwhile(n: int, _last: dict[str, Any]) -> None:
        if n == 0:
            post(api, [ev("artifact_received", "late", NOW_MS - 30 * SECOND_MS)])  # between r0 and r1

    seen = [a["artifact_id"] for a in page_all(pager(api, "/v1/artifacts", 3), meanwhile)]
    assert sorted(seen) == sorted({*seen}) == sorted(["late", *(f"r{i}" for i in range(10))])
    assert seen[-1] == "late"
    # A new listing places it by its receipt.
    fresh = [a["artifact_id"] for a in items_of(api.call("GET", "/v1/artifacts?limit=500"))]
    assert fresh[:3] == ["r0", "late", "r1"]


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_artifacts_moving_while_paging_are_listed_once(api: Api, seed: int) -> None:
    """Artifacts first seen by later stages get their receipts, older events and second, older
    receipts while a client pages, some several times in one listing, some before the cursor and some
    after it: every artifact there when the listing began is listed exactly once, and no row twice."""
    rng = random.Random(seed)
    at = {f"m{i:02d}": NOW_MS - rng.randrange(0, 60) * MINUTE_MS for i in range(40)}
    first: list[dict[str, Any]] = []
    for i, (artifact, t) in enumerate(at.items()):
        org = ORGS[i % 3] if i % 4 else None
        kind = (
            "artifact_received" if i % 3 == 0 else rng.choice(("transcription_started", "claims_extracted"))
        )
        fields = {"organization_id": org} if org else {}
        first.append(ev(kind, artifact, t, **fields))
    post(api, first)
    org_of = {e["artifact_id"]: e.get("organization_id") for e in first}
    original = set(at)

    def meanwhile(n: int, _last: dict[str, Any]) -> None:
        batch = []
        for artifact in rng.sample(sorted(original), 6):
            fields = {"organization_id": org_of[artifact]} if org_of[artifact] else {}
            kind = rng.choice(("artifact_received", "transcription_completed"))
            t = max(NOW_MS - 90 * MINUTE_MS, min(NOW_MS, at[artifact] + rng.randrange(-40, 40) * MINUTE_MS))
            batch.append(ev(kind, artifact, t, **fields))
        batch.append(ev("artifact_received", f"new-{n}", NOW_MS - rng.randrange(0, 60) * MINUTE_MS))
        # One request per event: several moves of one artifact land under different list versions.
        for item in batch:
            post(api, [item])

    pages = page_all(pager(api, "/v1/artifacts", 4), meanwhile)
    ids = [a["artifact_id"] for a in pages]
    assert len(ids) == len(set(ids)), "an artifact came twice"
    assert original <= set(ids), f"artifacts missed: {original - set(ids)}"
    # A new listing is in the order of the artifacts' places now, every artifact once.
    fresh = items_of(api.call("GET", "/v1/artifacts?limit=500"))
    assert len(fresh) == len({a["artifact_id"] for a in fresh}) >= len(original)


def test_cursors_of_the_longest_ids_page_on(api: Api) -> None:
    """A cursor holds the last row's artifact id and organization, up to 128 characters each, of any
    kind (a control character takes 6 bytes in JSON)."""
    org = "\x01" * 64 + "é" * 64
    ids = [f"{i}" + "\x7f" * 63 + "ü" * 64 for i in range(5)]
    post(
        api,
        [ev("artifact_received", a, NOW_MS - i * SECOND_MS, organization_id=org) for i, a in enumerate(ids)],
    )
    listed = page_all(pager(api, "/v1/artifacts", 2))
    assert [a["artifact_id"] for a in listed] == ids
    events = page_all(pager(api, "/v1/events", 2, organization_id=org, artifact_id=ids[0]))
    assert len(events) == 1


def test_a_listing_stays_whole_while_several_servers_move_artifacts(
    services: Services, settings: Settings, clock: FakeClock
) -> None:
    """Three servers on one database store receipts and older events of shared artifacts at once (on
    PostgreSQL, concurrent transactions that move artifacts), while a client pages: no artifact comes
    twice, none there before the listing began is missed, and no write fails."""
    artifacts = [f"c{i:02d}" for i in range(30)]
    seed = [ev("claims_extracted", a, NOW_MS - i * MINUTE_MS) for i, a in enumerate(artifacts)]
    assert services.ingest_blocking(seed, STAFF).accepted == len(seed)
    servers = [Services(settings, clock) for _ in range(3)]
    for s in servers:
        s.start()
    stop = threading.Event()
    failures: list[BaseException] = []

    def write(server: Services, rng: random.Random) -> None:
        try:
            while not stop.is_set():
                batch = [
                    ev(
                        rng.choice(("artifact_received", "transcription_started")),
                        a,
                        NOW_MS - rng.randrange(90) * MINUTE_MS,
                    )
                    for a in rng.sample(artifacts, 3)
                ]
                server.ingest_blocking(batch, STAFF)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(s, random.Random(n))) for n, s in enumerate(servers)]
    for t in threads:
        t.start()
    try:
        for _ in range(5):
            before = {
                s.artifact_id for s, _ in services.queries.list_artifacts(STAFF, None, None, None, 500).items
            }
            seen: list[str] = []
            cursor: str | None = None
            while True:
                page = services.queries.list_artifacts(STAFF, None, None, cursor, 4)
                seen += [s.artifact_id for s, _ in page.items]
                cursor = page.next_cursor
                if cursor is None:
                    break
            assert len(seen) == len(set(seen)), "an artifact came twice"
            assert before <= set(seen), f"artifacts missed: {before - set(seen)}"
    finally:
        stop.set()
        for t in threads:
            t.join()
        for s in servers:
            s.stop()
    assert not failures, failures
    with services.db.read() as conn:
        moves = conn.execute(select(func.count()).select_from(artifact_moves)).scalar_one()
    assert moves > 0, "the writers moved artifacts"


def test_moves_live_as_long_as_their_artifact(api: Api, clock: FakeClock, settings: Settings) -> None:
    """Where an artifact was listed before it moved is kept while its summary is, and goes with it."""
    post(
        api,
        [ev("transcription_started", "moved", NOW_MS - MINUTE_MS), ev("artifact_received", "still", NOW_MS)],
    )
    post(api, [ev("artifact_received", "moved", NOW_MS - 5 * MINUTE_MS)])
    post(api, [ev("artifact_received", "moved", NOW_MS - 10 * MINUTE_MS)])
    post(api, [ev("transcription_started", "still", NOW_MS)])  # no move: it was received already
    retention = Retention(api.services.db, clock, settings)
    clock.advance(2 * 24 * HOUR_MS)
    assert retention.cleanup_events()["artifact_moves_deleted"] == 0
    clock.advance(89 * 24 * HOUR_MS)
    summary = retention.cleanup_events()
    assert (summary["artifacts_deleted"], summary["artifact_moves_deleted"]) == (2, 2)


def test_artifact_filters_page_too(api: Api) -> None:
    seed_artifacts(api, 50)
    failed = [a["artifact_id"] for a in page_all(pager(api, "/v1/artifacts", 4, status="failed"))]
    assert failed == [
        a["artifact_id"] for a in items_of(api.call("GET", "/v1/artifacts?status=failed&limit=500"))
    ]
    assert len(failed) == 13
    org_b = page_all(pager(api, "/v1/artifacts", 6, organization_id="org-b", status="active"))
    assert {a["organization_id"] for a in org_b} == {"org-b"}
    assert {a["status"] for a in org_b} == {"transcribing"}
    assert (
        len(org_b)
        == len({a["artifact_id"] for a in org_b})
        == 17 - len([i for i in range(50) if i % 3 == 1 and i % 4 == 0])
    )


# --- cost -------------------------------------------------------------------------------------------


def test_a_page_of_500_takes_as_many_statements_as_a_page_of_5(
    api: Api, sql_counter: StatementCounter
) -> None:
    def measure(path: str) -> int:
        with sql_counter:
            r = api.call("GET", path)
        assert r.status_code == 200, r.text
        return sql_counter.count

    big, small = "big", "small"
    events = []
    for i in range(300):
        org = ORGS[i % 3]
        at = NOW_MS - i * SECOND_MS
        events.append(ev("artifact_received", f"{big}-{i}", at, organization_id=org))
        events.append(ev("transcription_failed", f"{big}-{i}", at + 1, organization_id=org, error_code="x"))
    for i in range(5):
        events.append(ev("artifact_received", f"{small}-{i}", NOW_MS - HOUR_MS, organization_id="org-s"))
    for i in range(0, len(events), 500):
        post(api, events[i : i + 500])

    for path in ("/v1/events", "/v1/artifacts"):
        full = measure(f"{path}?limit=500")
        few = measure(f"{path}?limit=500&organization_id=org-s")
        assert full == few, (path, full, few)
        # one to authenticate the key (the test settings disable the key cache), one to read the page
        assert full == 2, (path, sql_counter.statements)
        _, cursor = pager(api, path, 200)(None)
        assert cursor is not None
        assert measure(f"{path}?limit=500&cursor={cursor}") == full
    assert measure("/v1/artifacts?limit=500&status=stuck") == measure("/v1/artifacts?limit=5&status=failed")
