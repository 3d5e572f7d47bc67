"""How long to wait before trying again: one rule for deliveries and checks."""

from __future__ import annotations

import random

BACKOFF_CAP = 900.0
HINT_CAP = 3600.0


def backoff(attempt: int, retry_after: float | None, base_seconds: float = 10.0, rng: random.Random | None = None) -> float:
    """Exponential with +-20% jitter, capped; a server's Retry-After wins when it asks for longer."""
    base = min(BACKOFF_CAP, base_seconds * 2 ** max(0, attempt - 1))
    jittered: float = base * (rng or random).uniform(0.8, 1.2)
    return min(HINT_CAP, max(jittered, retry_after or 0.0))


def describe(exc: BaseException) -> str:
    """A short, single-line description of an error for records and logs: its type and first line.

    A database error shows the driver's own message, never SQLAlchemy's rendering of the statement and its
    parameters (which could carry message text or addresses).
    """
    inner = getattr(exc, "orig", None)
    text = str(inner if inner is not None else exc).strip().splitlines()
    first = text[0][:200] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
