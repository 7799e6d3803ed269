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

Each class carries its HTTP status (``http_status``), which the API's one handler and the dashboard both
answer with; every other layer raises them and never returns error codes.
"""

from __future__ import annotations


class VoicemonError(Exception):
    """Root of every error voicemon raises on purpose."""

    code = "error"
    http_status = 500

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code


class BadRequest(VoicemonError):
    code = "bad_request"
    http_status = 400


class PayloadTooLarge(VoicemonError):
    code = "payload_too_large"
    http_status = 413


class ValidationError(VoicemonError):
    code = "invalid"
    http_status = 422


class NotFoundError(VoicemonError):
    code = "not_found"
    http_status = 404


class AuthError(VoicemonError):
    code = "unauthorized"
    http_status = 401


class ForbiddenError(VoicemonError):
    code = "forbidden"
    http_status = 403


class ConflictError(VoicemonError):
    code = "conflict"
    http_status = 409


class IntegrityConflict(ConflictError):
    code = "conflict"


class RateLimitError(VoicemonError):
    code = "rate_limited"
    http_status = 429


class StorageError(VoicemonError):
    code = "storage_unavailable"
    http_status = 503


class UnavailableError(VoicemonError):
    """The request is valid, but this deployment lacks what it needs (a setting, a handler); asking
    again helps only once it is configured."""

    code = "unavailable"
    http_status = 503


class DeliveryError(VoicemonError):
    """A transport could not deliver (the message says why); the dispatcher tries again later."""

    code = "delivery_failed"
