"""The host's timestamps, read as epoch seconds.

ReplyX writes most timestamps as naive UTC (`datetime.utcnow()`) and some in Moscow time (UTC+3), without
saying which. A naive timestamp that lies in the future when read as UTC is taken as Moscow time; so a
message is never judged older than it is.
"""

from __future__ import annotations

import datetime as dt

MOSCOW_OFFSET = 3 * 3600.0
FUTURE_TOLERANCE = 120.0


def message_time(ts: dt.datetime | None, now: float) -> float:
    """Epoch seconds of a host timestamp; a naive one is UTC unless that puts it in the future (then MSK)."""
    if ts is None:
        return now
    if ts.tzinfo is not None:
        return ts.timestamp()
    as_utc = ts.replace(tzinfo=dt.UTC).timestamp()
    return as_utc - MOSCOW_OFFSET if as_utc > now + FUTURE_TOLERANCE else as_utc


def parse_host_time(raw: object) -> dt.datetime | None:
    """A timestamp read as text (the reconciler reads it so, lest one corrupt row stop every run): the
    datetime, or None when it is NULL or no timestamp at all (PostgreSQL's 'infinity', garbage in SQLite)."""
    if raw is None or isinstance(raw, dt.datetime):
        return raw
    try:
        return dt.datetime.fromisoformat(str(raw).strip())
    except ValueError:
        return None
