"""UTC cron schedules, pure arithmetic on times: the one place croniter is used."""

from __future__ import annotations

from datetime import UTC, datetime

from croniter import croniter

from voicemon.errors import ValidationError


def validate(expression: str) -> str:
    if not croniter.is_valid(expression):
        raise ValidationError(
            f"{expression!r} is not a cron expression", code="invalid_schedule", field="schedule"
        )
    return expression


def previous_fire(expression: str, now_ms: int) -> int:
    """The latest fire time at or before ``now_ms`` (epoch ms, UTC)."""
    base = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
    if base.second == 0 and base.microsecond == 0 and croniter.match(expression, base):
        return now_ms
    return int(croniter(expression, base).get_prev(float) * 1000)


def next_fire(expression: str, now_ms: int) -> int:
    """The first fire time strictly after ``now_ms`` (epoch ms, UTC)."""
    base = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
    return int(croniter(expression, base).get_next(float) * 1000)


def interval_ms(expression: str, now_ms: int) -> int:
    """The gap between the next two fire times after ``now_ms``: a schedule's period where it is regular
    (``*/5 * * * *``: five minutes)."""
    first = next_fire(expression, now_ms)
    return next_fire(expression, first) - first
