"""Who may do what (SPEC 10): roles, organization scope, and the checks every use case makes."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from voicemon.errors import ForbiddenError


class Role(StrEnum):
    INGEST = "ingest"
    VIEWER = "viewer"
    STAFF = "staff"


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller behind an API key. ``organization_id`` set means the key sees that organization only."""

    key_id: str
    name: str | None
    role: Role
    organization_id: str | None = None

    @property
    def is_staff(self) -> bool:
        return self.role is Role.STAFF


# voicemon itself, behind no API key: scheduled job runs and the operator's own CLI commands.
SYSTEM = Principal(key_id="system", name="voicemon", role=Role.STAFF)


READERS = (Role.VIEWER, Role.STAFF)
"""Who may read events, artifacts, counters and snapshots."""
WRITERS = (Role.INGEST, Role.STAFF)
"""Who may send events."""
STAFF_ONLY = (Role.STAFF,)
"""Who may run jobs, retry, see the organization breakdown and keep the directory and keys."""


def require_role(principal: Principal, *roles: Role) -> None:
    if principal.role not in roles:
        allowed = " or ".join(r.value for r in roles)
        article = "an" if allowed[0] in "aeiou" else "a"
        raise ForbiddenError(f"this needs {article} {allowed} key", code="forbidden_role")


def visible_organization(principal: Principal, requested: str | None) -> str | None:
    """The organization a list is filtered to: the request's, narrowed by the key's scope.

    A scoped key that names another organization is refused; one that names none sees its own.
    """
    if principal.organization_id is None:
        return requested
    if requested is not None and requested != principal.organization_id:
        raise ForbiddenError("this key is scoped to another organization", code="forbidden_organization")
    return principal.organization_id


def aggregate_scope(principal: Principal, requested: str | None) -> str | None:
    """The scope of an aggregate view; a scoped key must name its own organization explicitly."""
    if principal.organization_id is not None and requested != principal.organization_id:
        raise ForbiddenError(
            "an organization-scoped key must ask for its own organization_id", code="forbidden_organization"
        )
    return requested


def can_see_organization(principal: Principal, organization_id: str | None) -> bool:
    return principal.organization_id is None or principal.organization_id == organization_id
