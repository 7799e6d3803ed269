"""The organization directory use cases."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection

from voicemon.clock import Clock
from voicemon.domain.access import STAFF_ONLY, Principal, require_role
from voicemon.domain.events import MAX_ID_CHARS
from voicemon.domain.records import OrgRecord
from voicemon.domain.text import NAME, check_text, require_text
from voicemon.errors import ValidationError
from voicemon.storage import Database
from voicemon.storage import orgs as org_store

MAX_NAME_CHARS = 200
UNKNOWN_ORG_NAME = "Unknown"


class OrgService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def list(self, principal: Principal) -> list[OrgRecord]:
        """The directory, by id (staff)."""
        require_role(principal, *STAFF_ONLY)
        with self._db.read() as conn:
            return org_store.list_orgs(conn)

    def put(self, principal: Principal, organization_id: str, name: str) -> OrgRecord:
        """Name an organization. The name is one line of display text: 1 to 200 characters, not blank,
        no control characters (:data:`~voicemon.domain.text.NAME`). Staff only; raises ValidationError."""
        require_role(principal, *STAFF_ONLY)
        if not 0 < len(organization_id) <= MAX_ID_CHARS:
            raise ValidationError(
                f"must be 1 to {MAX_ID_CHARS} characters", code="invalid_length", field="organization_id"
            )
        problem = check_text(organization_id)
        if problem is not None:
            raise ValidationError(problem.message, code=problem.code, field="organization_id")
        require_text("name", name, max_chars=MAX_NAME_CHARS, kind=NAME)
        with self._db.write() as conn:
            return org_store.put_org(conn, organization_id, name, self._clock.now_ms())


def display_names(conn: Connection, ids: Iterable[str]) -> dict[str, str]:
    """Display name of every id, ``Unknown`` for those not in the directory, inside the caller's read."""
    wanted = list(ids)
    found = org_store.names_of(conn, wanted)
    return {i: found.get(i, UNKNOWN_ORG_NAME) for i in wanted}
