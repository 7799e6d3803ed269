"""Time-ordered identifiers: new rows land at the end of their index instead of at random places."""

from __future__ import annotations

import secrets
import uuid


def time_ordered_id(now_ms: int) -> str:
    """A UUID version 7 string: 48 bits of epoch milliseconds, then 74 random bits.

    >>> time_ordered_id(0).startswith("00000000-0000-7")
    True
    """
    rand = secrets.randbits(74)
    value = (now_ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= (rand >> 62) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))
