"""The organization directory: display names by id."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, select

from voicemon.storage.database import upsert_replace
from voicemon.storage.tables import orgs

IN_CHUNK = 1000


@dataclass(frozen=True, slots=True)
class OrgRecord:
    organization_id: str
    name: str
    updated_ms: int


def names_of(conn: Connection, ids: Iterable[str]) -> dict[str, str]:
    """Names of many organizations in one query per 1000 ids (seed lessons 3, 4); unknown ids are absent."""
    wanted = sorted(set(ids))
    names: dict[str, str] = {}
    for i in range(0, len(wanted), IN_CHUNK):
        chunk = wanted[i : i + IN_CHUNK]
        rows = conn.execute(
            select(orgs.c.organization_id, orgs.c.name).where(orgs.c.organization_id.in_(chunk))
        )
        names.update({r.organization_id: r.name for r in rows})
    return names


def list_orgs(conn: Connection) -> list[OrgRecord]:
    rows = conn.execute(select(orgs).order_by(orgs.c.organization_id))
    return [OrgRecord(r.organization_id, r.name, r.updated_ms) for r in rows]


def put_org(conn: Connection, organization_id: str, name: str, now_ms: int) -> OrgRecord:
    conn.execute(
        upsert_replace(conn, orgs, ["organization_id"], ["name", "updated_ms"]),
        [{"organization_id": organization_id, "name": name, "updated_ms": now_ms}],
    )
    return OrgRecord(organization_id, name, now_ms)
