"""Artifact summaries: locked bulk read, bulk write, keyset-paged lists."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import BigInteger, Connection, and_, exists, func, literal, select, tuple_, union_all

from voicemon.domain.artifacts import ArtifactState
from voicemon.domain.model import ACTIVE_STATUSES, ArtifactKey, Stage, Status
from voicemon.storage.dialect import Answer, ask_pairs, insert_sql, locks_rows, send_many
from voicemon.storage.events import STREAM_BATCH_ROWS
from voicemon.storage.tables import artifact_moves, artifacts, list_versions


@dataclass(frozen=True, slots=True)
class ArtifactFilter:
    """``status`` is a status value, ``active`` or ``stuck``; ``stuck_before_ms`` applies to ``stuck``;
    ``failed_stage`` keeps the artifacts whose last failure was in that stage."""

    status: str | None = None
    organization_id: str | None = None
    stuck_before_ms: int | None = None
    failed_stage: str | None = None


def lock_artifacts(
    conn: Connection, keys: Sequence[ArtifactKey], placeholder_ms: int
) -> dict[ArtifactKey, ArtifactState]:
    return ask_locked(conn, keys, placeholder_ms)()


def ask_locked(
    conn: Connection, keys: Sequence[ArtifactKey], placeholder_ms: int
) -> Answer[dict[ArtifactKey, ArtifactState]]:
    """Read the summaries of ``keys`` (owner, artifact_id) for update; rows missing so far come back
    absent.

    On PostgreSQL, several servers may ingest events of one artifact at once. Each first inserts an empty
    row for every key (sorted, so two writers never wait on each other in a cycle), then locks the rows:
    the second writer waits for the first to commit and folds its events onto the committed state. On
    SQLite, ``BEGIN IMMEDIATE`` already holds the one write lock.
    """
    ordered = sorted(set(keys))
    if not ordered:
        return dict
    lock = ""
    if locks_rows(conn):
        empty = Status.RECEIVED.value, placeholder_ms, placeholder_ms, placeholder_ms
        send_many(conn, _PLACEHOLDER_SQL, [(owner, aid, *empty) for owner, aid in ordered])
        lock = " FOR UPDATE"
    rows = ask_pairs(
        conn, f"{_SELECT} WHERE (owner, artifact_id) {{keys}} ORDER BY owner, artifact_id{lock}", ordered
    )

    def answer() -> dict[ArtifactKey, ArtifactState]:
        states = (_from_row(dict(zip(_COLUMNS, row, strict=True))) for row in rows())
        # A placeholder (no events yet) is a summary that does not exist so far.
        return {s.key: s for s in states if s.event_count > 0}

    return answer


def drop_placeholders(conn: Connection, keys: Sequence[ArtifactKey]) -> None:
    """Remove the empty rows :func:`ask_locked` inserted for ``keys`` when no event of theirs is saved."""
    if locks_rows(conn):
        send_many(conn, _DROP_PLACEHOLDER_SQL, list(keys))


_COLUMNS = [c.name for c in artifacts.columns]
_KEY_COLUMNS = ["owner", "artifact_id"]
_STATE_COLUMNS = [c for c in _COLUMNS if c not in _KEY_COLUMNS]
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM artifacts"
# An empty summary (no events yet): never listed, replaced within the same transaction.
_PLACEHOLDER_SQL = (
    "INSERT INTO artifacts (owner, artifact_id, status, first_event_at_ms, last_event_at_ms, listed_at_ms,"
    " event_count, retry_count, total_cost_nusd, stage_started)"
    " VALUES (?, ?, ?, ?, ?, ?, 0, 0, 0, '{}') ON CONFLICT (owner, artifact_id) DO NOTHING"
)
_DROP_PLACEHOLDER_SQL = "DELETE FROM artifacts WHERE owner = ? AND artifact_id = ? AND event_count = 0"
_INSERT_SQL = insert_sql(artifacts, [*_KEY_COLUMNS, *_STATE_COLUMNS])
_SETS = ", ".join(f"{c} = ?" for c in _STATE_COLUMNS)
_UPDATE_SQL = f"UPDATE artifacts SET {_SETS} WHERE owner = ? AND artifact_id = ?"


def save_artifacts(conn: Connection, states: Sequence[ArtifactState], existing: set[ArtifactKey]) -> None:
    """Write the new summaries: UPDATE the rows that exist, INSERT the others (one statement each)."""
    if locks_rows(conn):
        # ask_locked inserted a placeholder for every key: all are updates.
        existing = {s.key for s in states}
    insert_artifacts(conn, [s for s in states if s.key not in existing])
    send_many(conn, _UPDATE_SQL, [(*_to_row(s), *s.key) for s in states if s.key in existing])


def insert_artifacts(conn: Connection, states: Sequence[ArtifactState]) -> None:
    """INSERT summaries known to be new (a bulk load, outside ingestion)."""
    send_many(conn, _INSERT_SQL, [(*s.key, *_to_row(s)) for s in states])


def _to_row(s: ArtifactState) -> tuple[Any, ...]:
    """The summary's state as a tuple in :data:`_STATE_COLUMNS` order."""
    return (
        s.organization_id,
        s.voice_note_id,
        s.coach_user_id,
        s.source_channel,
        s.status.value,
        s.status_at_ms,
        s.current_stage.value if s.current_stage else None,
        s.stage_at_ms,
        s.failed_stage.value if s.failed_stage else None,
        s.last_error_code,
        s.last_error_message,
        s.error_at_ms,
        s.received_at_ms,
        s.completed_at_ms,
        s.first_event_at_ms,
        s.last_event_at_ms,
        s.listed_at_ms,
        s.event_count,
        s.retry_count,
        s.total_cost_nusd,
        orjson.dumps(s.stage_started_ms).decode(),
    )


def _from_row(m: Mapping[Any, Any]) -> ArtifactState:
    return ArtifactState(
        artifact_id=m["artifact_id"],
        organization_id=m["organization_id"],
        voice_note_id=m["voice_note_id"],
        coach_user_id=m["coach_user_id"],
        source_channel=m["source_channel"],
        status=Status(m["status"]),
        status_at_ms=m["status_at_ms"],
        current_stage=Stage(m["current_stage"]) if m["current_stage"] else None,
        stage_at_ms=m["stage_at_ms"],
        failed_stage=Stage(m["failed_stage"]) if m["failed_stage"] else None,
        last_error_code=m["last_error_code"],
        last_error_message=m["last_error_message"],
        error_at_ms=m["error_at_ms"],
        received_at_ms=m["received_at_ms"],
        completed_at_ms=m["completed_at_ms"],
        first_event_at_ms=m["first_event_at_ms"],
        last_event_at_ms=m["last_event_at_ms"],
        event_count=m["event_count"],
        retry_count=m["retry_count"],
        total_cost_nusd=m["total_cost_nusd"],
        stage_started_ms=orjson.loads(m["stage_started"]),
    )


def get_artifact(conn: Connection, key: ArtifactKey) -> ArtifactState | None:
    owner, artifact_id = key
    a = artifacts.c
    row = conn.execute(
        select(artifacts).where(a.owner == owner, a.artifact_id == artifact_id, a.event_count > 0)
    ).first()
    return _from_row(row._mapping) if row is not None else None


def find_artifacts(conn: Connection, artifact_id: str) -> list[ArtifactState]:
    """Every stored artifact with this id, whatever its organization (a request names an id alone)."""
    a = artifacts.c
    query = select(artifacts).where(a.artifact_id == artifact_id, a.event_count > 0).order_by(a.owner)
    return [_from_row(r._mapping) for r in conn.execute(query)]


# The artifact list's row in list_versions.
_LIST_NAME = "artifacts"
_BUMP_SQL = (
    "INSERT INTO list_versions (list_name, version) VALUES (?, 1)"
    " ON CONFLICT (list_name) DO UPDATE SET version = list_versions.version + 1"
)
_MOVE_SQL = (
    "INSERT INTO artifact_moves (owner, artifact_id, version, from_listed_at_ms)"
    " VALUES (?, ?, (SELECT version FROM list_versions WHERE list_name = ?), ?)"
)


def record_moves(
    conn: Connection, before: Mapping[ArtifactKey, ArtifactState], after: Sequence[ArtifactState]
) -> None:
    """Record the place in the list (``listed_at_ms``) each summary of ``after`` left, when it differs
    from its summary ``before`` the write, under a new version of the list.

    The bump takes the version row's lock and holds it to the commit, so the versions of moves commit in
    their order. Call it last in the transaction: a writer that holds it then waits for no other lock.
    """
    moves = [
        (*s.key, _LIST_NAME, old.listed_at_ms)
        for s in after
        if (old := before.get(s.key)) is not None and old.listed_at_ms != s.listed_at_ms
    ]
    if moves:
        send_many(conn, _BUMP_SQL, [(_LIST_NAME,)])
        send_many(conn, _MOVE_SQL, moves)


@dataclass(frozen=True, slots=True)
class ListedArtifact:
    """An artifact as a page lists it: ``place_ms`` is the time it is listed by as of the page's list
    version (its ``listed_at_ms`` then; the summary is as it is now)."""

    state: ArtifactState
    place_ms: int


@dataclass(frozen=True, slots=True)
class ArtifactListPage:
    """Rows of the artifact list, and the list ``version`` they were placed at."""

    rows: list[ListedArtifact]
    version: int


ListPosition = tuple[int, int, str, str]
"""Where a page ended: (list version, place_ms, artifact_id, owner) of its last row."""


def list_artifacts(
    conn: Connection, f: ArtifactFilter, after: ListPosition | None, limit: int
) -> ArtifactListPage:
    """Newest received first, by (place, artifact_id, owner); ``after`` is where the last page ended.

    An artifact's place is its ``listed_at_ms`` as of one version of the list: the current one for a
    first page, the version of ``after`` for the pages after it. A receipt or an older event arriving
    while a client pages moves the artifact (a new version); the client's pages still list it at the
    place it had when they began, so it is listed once, neither twice nor never. Rows that are new since
    then appear in their place. One statement: a first page reads the version beside its rows; a later
    page reads the rows that have not moved since its version by their index, and those that have at the
    place their first move since then left.
    """
    c = artifacts.c
    conds = _filter_conditions(f)
    if after is None:
        version = func.coalesce(
            select(list_versions.c.version).where(list_versions.c.list_name == _LIST_NAME).scalar_subquery(),
            0,
        )
        query = select(*artifacts.c, c.listed_at_ms.label("place_ms"), version.label("list_version"))
        rows = conn.execute(query.where(*conds).order_by(*_order(c.listed_at_ms)).limit(limit)).all()
        listed = [ListedArtifact(_from_row(r._mapping), r.place_ms) for r in rows]
        return ArtifactListPage(listed, rows[0].list_version if rows else 0)

    since, place, artifact_id, owner = after
    m = artifact_moves.c
    moved_since = exists().where(m.owner == c.owner, m.artifact_id == c.artifact_id, m.version > since)
    unmoved = (
        select(*artifacts.c, c.listed_at_ms.label("place_ms"))
        .where(*conds, ~moved_since, _before(c.listed_at_ms, place, artifact_id, owner))
        .order_by(*_order(c.listed_at_ms))
        .limit(limit)
    )
    earlier = artifact_moves.alias("earlier")
    e = earlier.c
    first_move_since = ~exists().where(
        e.owner == m.owner, e.artifact_id == m.artifact_id, e.version > since, e.version < m.version
    )
    moved = (
        select(*artifacts.c, m.from_listed_at_ms.label("place_ms"))
        .select_from(artifact_moves.join(artifacts, and_(c.owner == m.owner, c.artifact_id == m.artifact_id)))
        .where(
            m.version > since,
            first_move_since,
            *conds,
            _before(m.from_listed_at_ms, place, artifact_id, owner),
        )
        .order_by(*_order(m.from_listed_at_ms))
        .limit(limit)
    )
    # Each part is sorted and limited on its own (its index does the work), then the two are merged.
    both = union_all(select(unmoved.subquery()), select(moved.subquery())).subquery()
    query = select(both).order_by(both.c.place_ms.desc(), both.c.artifact_id.desc(), both.c.owner.desc())
    rows = conn.execute(query.limit(limit)).all()
    return ArtifactListPage([ListedArtifact(_from_row(r._mapping), r.place_ms) for r in rows], since)


def stream_artifacts(conn: Connection, f: ArtifactFilter) -> Iterator[ArtifactState]:
    """Every artifact of the filter, oldest listed first, fetched :data:`STREAM_BATCH_ROWS` at a time
    (a server-side cursor on PostgreSQL): memory stays flat whatever the count. Iterate it inside the
    read that ``conn`` belongs to; that read is one moment, so no artifact moves while it runs."""
    c = artifacts.c
    query = select(artifacts).where(*_filter_conditions(f)).order_by(c.listed_at_ms, c.artifact_id, c.owner)
    result = conn.execution_options(yield_per=STREAM_BATCH_ROWS).execute(query)
    try:
        for row in result:
            yield _from_row(row._mapping)
    finally:
        result.close()


def count_artifacts(conn: Connection, f: ArtifactFilter) -> int:
    query = select(func.count()).select_from(artifacts).where(*_filter_conditions(f))
    return int(conn.execute(query).scalar_one())


def _filter_conditions(f: ArtifactFilter) -> list[Any]:
    c = artifacts.c
    conds: list[Any] = [c.event_count > 0]
    if f.organization_id is not None:
        conds.append(c.organization_id == f.organization_id)
    if f.status == "active":
        conds.append(c.status.in_([s.value for s in ACTIVE_STATUSES]))
    elif f.status == "stuck":
        conds.append(c.status.in_([s.value for s in ACTIVE_STATUSES]))
        if f.stuck_before_ms is not None:
            conds.append(c.last_event_at_ms < f.stuck_before_ms)
    elif f.status is not None:
        conds.append(c.status == f.status)
    if f.failed_stage is not None:
        conds.append(c.failed_stage == f.failed_stage)
    return conds


def _order(place: Any) -> tuple[Any, ...]:
    c = artifacts.c
    return place.desc(), c.artifact_id.desc(), c.owner.desc()


def _before(place: Any, place_ms: int, artifact_id: str, owner: str) -> Any:
    """The rows after (place_ms, artifact_id, owner) in the list's order, newest first. A row-value
    comparison, so that both databases start the index scan there instead of filtering every newer row."""
    c = artifacts.c
    return tuple_(place, c.artifact_id, c.owner) < tuple_(
        literal(place_ms, BigInteger), literal(artifact_id), literal(owner)
    )
