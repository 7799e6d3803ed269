"""Dashboard sessions (SPEC 16): a signed, expiring cookie that names the API key it was opened with, and
the CSRF token of every form that changes something.

The cookie holds the key's id and a random nonce, signed with the session secret (itsdangerous); never
the key's secret. Each request looks the key up by id (:meth:`~voicemon.service.keys.KeyService.
principal_of`, cached for ``key_cache_s``), so a revoked key's sessions end within that delay. The CSRF
token is an HMAC of the nonce: a form posted from another site cannot know it, and ``SameSite=Strict``
keeps the cookie off such requests anyway.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer

COOKIE = "voicemon_session"
# Before sign-in, the login form's own token travels in this cookie and in the form (double submit), so
# that another site cannot sign a browser in with a key of its choosing.
LOGIN_COOKIE = "voicemon_login"
_SALT = "voicemon.session"


@dataclass(frozen=True, slots=True)
class Session:
    key_id: str
    nonce: str


class Sessions:
    def __init__(self, secret: bytes, max_age_s: int) -> None:
        self._secret = secret
        self._signer = URLSafeTimedSerializer(secret, salt=_SALT)
        self.max_age_s = max_age_s

    def issue(self, key_id: str) -> str:
        """A new session's cookie value."""
        return self._signer.dumps({"k": key_id, "n": secrets.token_urlsafe(16)})

    def read(self, value: str | None) -> Session | None:
        """The session of a cookie value; None when it is absent, forged or expired."""
        if not value:
            return None
        try:
            data = self._signer.loads(value, max_age=self.max_age_s)
        except BadSignature:  # SignatureExpired is one
            return None
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("k"), str)
            or not isinstance(data.get("n"), str)
        ):
            return None
        return Session(data["k"], data["n"])

    def csrf(self, session: Session) -> str:
        return self._mac(f"csrf:{session.nonce}")

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(self.csrf(session), token)

    def login_token(self) -> str:
        return secrets.token_urlsafe(16)

    @staticmethod
    def login_ok(cookie: str | None, form: str | None) -> bool:
        return bool(cookie) and form is not None and hmac.compare_digest(cookie or "", form)

    def _mac(self, text: str) -> str:
        return hmac.new(self._secret, text.encode(), hashlib.sha256).hexdigest()[:40]
