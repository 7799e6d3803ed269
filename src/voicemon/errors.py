"""The one exception tree of voicemon.

    VoicemonError
    ├── BadRequest             a body or request that cannot be read at all (HTTP 400)
    ├── PayloadTooLarge        a body or batch over its limit (HTTP 413)
    ├── ValidationError        bad input; names the field and the rule (HTTP 422)
    ├── NotFoundError          no such thing, or not visible to the caller (HTTP 404)
    ├── AuthError              missing or unknown API key (HTTP 401)
    ├── ForbiddenError         role or organization scope refuses it (HTTP 403)
    ├── ConflictError          the state does not allow it (HTTP 409)
    │   └── IntegrityConflict  a unique rule of the database refused a write
    ├── RateLimitError         too many of something in a window (HTTP 429)
    ├── StorageError           the database failed; wraps the driver error (HTTP 503)
    ├── UnavailableError       what the request needs is not set up, e.g. no retry handler (HTTP 503)
    └── DeliveryError          an outbox transport could not deliver; the dispatcher tries again
                               later, and no API caller ever sees it

The API maps these to HTTP in one handler; every other layer raises them and never returns error codes.
"""

from __future__ import annotations


class VoicemonError(Exception):
    """Root of every error voicemon raises on purpose."""

    code = "error"

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code


class BadRequest(VoicemonError):
    code = "bad_request"


class PayloadTooLarge(VoicemonError):
    code = "payload_too_large"


class ValidationError(VoicemonError):
    code = "invalid"


class NotFoundError(VoicemonError):
    code = "not_found"


class AuthError(VoicemonError):
    code = "unauthorized"


class ForbiddenError(VoicemonError):
    code = "forbidden"


class ConflictError(VoicemonError):
    code = "conflict"


class IntegrityConflict(ConflictError):
    code = "conflict"


class RateLimitError(VoicemonError):
    code = "rate_limited"


class StorageError(VoicemonError):
    code = "storage_unavailable"


class UnavailableError(VoicemonError):
    """The request is valid, but this deployment lacks what it needs (a setting, a handler); asking
    again helps only once it is configured."""

    code = "unavailable"


class DeliveryError(VoicemonError):
    """A transport could not deliver (the message says why); the dispatcher tries again later."""

    code = "delivery_failed"
