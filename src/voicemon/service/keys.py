"""API keys: creation (the secret is returned once), listing, revocation, and request authentication.

A key reads ``vm_<key_id>_<secret>``. The id finds the row; the secret's SHA-256 is compared in constant
time. Keys are 160-bit random secrets, so a fast hash is enough (no password stretching needed).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
from dataclasses import dataclass

from voicemon.clock import Clock
from voicemon.domain.access import STAFF_ONLY, Principal, Role, require_role
from voicemon.domain.events import MAX_ID_CHARS
from voicemon.domain.text import NAME, check_text, require_text
from voicemon.errors import AuthError, NotFoundError, ValidationError
from voicemon.storage import Database
from voicemon.storage import keys as key_store
from voicemon.storage.keys import KeyRecord

PREFIX = "vm"
# What ``create`` makes: 8 random bytes in hex. Anything else is refused before the database is asked.
_KEY_ID = re.compile(r"[0-9a-f]{16}")
MAX_KEY_NAME_CHARS = 200
_SESSION_ENDED = "the session's key is not valid any more: sign in again"


@dataclass(frozen=True, slots=True)
class CreatedKey:
    record: KeyRecord
    secret: str


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyService:
    def __init__(self, db: Database, clock: Clock, cache_ttl_s: float = 2.0) -> None:
        self._db = db
        self._clock = clock
        self._cache_ttl_ms = int(cache_ttl_s * 1000)
        self._cache: dict[str, tuple[int, Principal]] = {}  # presented key -> its principal
        self._sessions: dict[str, tuple[int, Principal]] = {}  # key id (a dashboard session's) -> same
        self._lock = threading.Lock()

    def create(
        self, principal: Principal, role: str, organization_id: str | None = None, name: str | None = None
    ) -> CreatedKey:
        """Make a key; the secret is in the result only. ``name`` is a display name like an
        organization's (1 to 200 characters, not blank, no control characters). Raises ValidationError
        naming the CLI option at fault (``role``, ``org``, ``name``). Staff only."""
        require_role(principal, *STAFF_ONLY)
        try:
            parsed_role = Role(role)
        except ValueError:
            allowed = ", ".join(r.value for r in Role)
            raise ValidationError(f"must be one of: {allowed}", code="invalid_enum", field="role") from None
        if parsed_role is Role.STAFF and organization_id is not None:
            raise ValidationError("staff keys are platform-wide", code="staff_scoped", field="org")
        if organization_id is not None and not 0 < len(organization_id) <= MAX_ID_CHARS:
            raise ValidationError(f"must be 1 to {MAX_ID_CHARS} characters", code="too_long", field="org")
        if name is not None:
            require_text("name", name, max_chars=MAX_KEY_NAME_CHARS, kind=NAME)
        problem = check_text(organization_id) if organization_id is not None else None
        if problem is not None:
            raise ValidationError(problem.message, code=problem.code, field="org")
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(20)
        record = KeyRecord(
            key_id=key_id,
            name=name,
            role=parsed_role.value,
            organization_id=organization_id,
            secret_hash=_hash(secret),
            created_ms=self._clock.now_ms(),
            revoked_ms=None,
        )
        with self._db.write() as conn:
            key_store.insert_key(conn, record)
        return CreatedKey(record, f"{PREFIX}_{key_id}_{secret}")

    def list(self, principal: Principal) -> list[KeyRecord]:
        """Every key, revoked ones included, never a secret (staff)."""
        require_role(principal, *STAFF_ONLY)
        with self._db.read() as conn:
            return key_store.list_keys(conn)

    def revoke(self, principal: Principal, key_id: str) -> None:
        """Revoke a live key (staff); NotFoundError ``key_not_found`` if there is none by that id."""
        require_role(principal, *STAFF_ONLY)
        with self._db.write() as conn:
            if not key_store.revoke_key(conn, key_id, self._clock.now_ms()):
                raise NotFoundError(f"no live key {key_id!r}", code="key_not_found")
        with self._lock:  # this process stops trusting it at once; others within key_cache_s
            for cache in (self._cache, self._sessions):
                for slot in [k for k, (_, p) in cache.items() if p.key_id == key_id]:
                    del cache[slot]

    def principal_of(self, key_id: str) -> Principal:
        """The principal of the key ``key_id`` (a dashboard session names its key by id, never holds its
        secret): looked up at most once per ``key_cache_s``, so a revoked key's sessions end within that
        delay. Raises AuthError (``invalid_key``) for a key that is unknown or revoked."""
        if not _KEY_ID.fullmatch(key_id):
            raise AuthError(_SESSION_ENDED, code="invalid_key")
        return self._principal(self._sessions, key_id, key_id, None, _SESSION_ENDED)

    def cached(self, presented: str | None) -> Principal | None:
        """The principal of a key verified less than ``key_cache_s`` ago, without touching the database."""
        if not presented:
            return None
        with self._lock:
            found = self._cache.get(presented)
        return found[1] if found is not None and found[0] > self._clock.now_ms() else None

    def authenticate(self, presented: str | None) -> Principal:
        """The principal behind a presented key; :class:`AuthError` if it is missing, unknown or revoked."""
        if not presented:
            raise AuthError("an API key is required: Authorization: Bearer <key>", code="missing_key")
        parts = presented.split("_", 2)
        if len(parts) != 3 or parts[0] != PREFIX or not _KEY_ID.fullmatch(parts[1]):
            raise AuthError("the API key is not valid", code="invalid_key")
        _, key_id, secret = parts
        return self._principal(self._cache, presented, key_id, secret, "the API key is not valid")

    def _principal(
        self,
        cache: dict[str, tuple[int, Principal]],
        slot: str,
        key_id: str,
        secret: str | None,
        refusal: str,
    ) -> Principal:
        """The key's principal from its slot of ``cache`` while it is fresh, else from its row (checking
        the secret when one is given), cached again. Presented keys and session key ids have a cache
        each: a key id must never answer for a presented key."""
        now_ms = self._clock.now_ms()
        with self._lock:
            cached = cache.get(slot)
        if cached is not None and cached[0] > now_ms:
            return cached[1]
        with self._db.read() as conn:
            record = key_store.get_key(conn, key_id)
        if record is None or record.revoked_ms is not None:
            raise AuthError(refusal, code="invalid_key")
        if secret is not None and not hmac.compare_digest(record.secret_hash, _hash(secret)):
            raise AuthError(refusal, code="invalid_key")
        principal = Principal(record.key_id, record.name, Role(record.role), record.organization_id)
        with self._lock:
            cache[slot] = (now_ms + self._cache_ttl_ms, principal)
        return principal
