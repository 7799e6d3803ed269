"""Division that never yields NaN or Infinity (seed lesson 5)."""

from __future__ import annotations


def safe_divide(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, or 0 when the denominator is 0 (a share of nothing is 0).

    >>> safe_divide(2, 9) == 2 / 9, safe_divide(1, 0)
    (True, 0.0)
    """
    return numerator / denominator if denominator > 0 else 0.0


def failure_rate(completed: int, failed: int) -> float:
    """The share of finished things that failed: failed / (completed + failed)."""
    return safe_divide(failed, completed + failed)
