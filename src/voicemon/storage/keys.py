"""API keys: only a SHA-256 of each secret is stored; the secret is shown once, at creation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Row, select, update

from voicemon.storage.tables import api_keys


@dataclass(frozen=True, slots=True)
class KeyRecord:
    key_id: str
    name: str | None
    role: str
    organization_id: str | None
    secret_hash: str
    created_ms: int
    revoked_ms: int | None


def insert_key(conn: Connection, record: KeyRecord) -> None:
    conn.execute(
        api_keys.insert().values(
            key_id=record.key_id,
            name=record.name,
            role=record.role,
            organization_id=record.organization_id,
            secret_hash=record.secret_hash,
            created_ms=record.created_ms,
            revoked_ms=record.revoked_ms,
        )
    )


def _from_row(row: Row[Any]) -> KeyRecord:
    return KeyRecord(**row._mapping)


def get_key(conn: Connection, key_id: str) -> KeyRecord | None:
    row = conn.execute(select(api_keys).where(api_keys.c.key_id == key_id)).first()
    return _from_row(row) if row is not None else None


def list_keys(conn: Connection) -> list[KeyRecord]:
    return [_from_row(r) for r in conn.execute(select(api_keys).order_by(api_keys.c.created_ms))]


def revoke_key(conn: Connection, key_id: str, now_ms: int) -> bool:
    """Mark a key revoked; returns False when no live key has that id."""
    result = conn.execute(
        update(api_keys)
        .where(api_keys.c.key_id == key_id, api_keys.c.revoked_ms.is_(None))
        .values(revoked_ms=now_ms)
        .returning(api_keys.c.key_id)
    )
    return result.first() is not None
