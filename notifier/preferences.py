"""A manager's preferences: what is stored (every field optional), and what applies (one pure function).

Precedence, `resolve_preferences`: a stored value wins; a stored None (or no row at all) inherits the
deployment's default: push on, email on, NOTIFIER_DEFAULT_LANGUAGE, NOTIFIER_DEFAULT_TIME_ZONE, no quiet
hours, nothing muted. Light on purpose (stdlib only): the host's API process validates with it.

Quiet hours are wall-clock times in the manager's zone, `start` inclusive and `end` exclusive; a window
whose start is later than its end crosses midnight (22:00-07:00). `quiet_until` answers "is this instant
inside the window, and when does the window end?", daylight-saving changes included.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from notifier.config import LANGUAGES
from notifier.errors import InvalidInput
from notifier.validate import check_id

FIELDS = ("push", "email", "language", "time_zone", "quiet_hours", "muted_dialogs")
MAX_MUTED = 10_000
_HHMM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")


@dataclass(frozen=True)
class QuietHours:
    start: dt.time
    end: dt.time

    def as_json(self) -> dict[str, str]:
        return {"start": self.start.strftime("%H:%M"), "end": self.end.strftime("%H:%M")}


@dataclass(frozen=True)
class Stored:
    """A manager's row as stored: None means "the default"."""

    push: bool | None = None
    email: bool | None = None
    language: str | None = None
    time_zone: str | None = None
    quiet_hours: QuietHours | None = None
    muted_dialogs: frozenset[int] = frozenset()

    def as_json(self) -> dict[str, object]:
        """The shape `GET /preferences` returns and `PUT /preferences` takes."""
        return {
            "push": self.push,
            "email": self.email,
            "language": self.language,
            "time_zone": self.time_zone,
            "quiet_hours": self.quiet_hours.as_json() if self.quiet_hours else None,
            "muted_dialogs": sorted(self.muted_dialogs),
        }


@dataclass(frozen=True)
class Defaults:
    language: str = "ru"
    time_zone: str = "Europe/Moscow"


@dataclass(frozen=True)
class Preferences:
    """What applies to one manager."""

    push: bool = True
    email: bool = True
    language: str = "ru"
    time_zone: str = "Europe/Moscow"
    quiet_hours: QuietHours | None = None
    muted_dialogs: frozenset[int] = field(default_factory=frozenset)

    def muted(self, dialog_id: int) -> bool:
        return dialog_id in self.muted_dialogs


def resolve_preferences(stored: Stored | None, defaults: Defaults) -> Preferences:
    stored = stored or Stored()
    return Preferences(
        push=True if stored.push is None else stored.push,
        email=True if stored.email is None else stored.email,
        language=stored.language or defaults.language,
        time_zone=stored.time_zone or defaults.time_zone,
        quiet_hours=stored.quiet_hours,
        muted_dialogs=stored.muted_dialogs,
    )


@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def quiet_until(now: float, prefs: Preferences) -> float | None:
    """If `now` lies inside the manager's quiet hours, the epoch second the window ends; else None."""
    window = prefs.quiet_hours
    if window is None or window.start == window.end:
        return None
    tz = zone(prefs.time_zone)
    local = dt.datetime.fromtimestamp(now, tz)
    t = local.time().replace(tzinfo=None)
    crosses_midnight = window.start > window.end
    inside = (window.start <= t or t < window.end) if crosses_midnight else (window.start <= t < window.end)
    if not inside:
        return None
    end_day = local.date() + dt.timedelta(days=1) if crosses_midnight and t >= window.start else local.date()
    return max(_wall_clock_reaches(end_day, window.end, tz), now + 1)


def _wall_clock_reaches(day: dt.date, at: dt.time, tz: ZoneInfo) -> float:
    """The first instant the wall clock in `tz` shows `at` (or later) on `day`.

    When `at` falls into a spring-forward gap (02:30 in Berlin on the last Sunday of March never shows),
    that is the moment of the change itself; when it shows twice (fall back), the first time."""
    naive = dt.datetime.combine(day, at)
    early = naive.replace(tzinfo=tz, fold=0).timestamp()
    if dt.datetime.fromtimestamp(early, tz).replace(tzinfo=None) == naive:
        return early
    lo = naive.replace(tzinfo=tz, fold=1).timestamp()  # before the change: wall clock < at
    hi = early  # after it: wall clock past at
    while hi - lo > 0.5:
        mid = (lo + hi) / 2
        if dt.datetime.fromtimestamp(mid, tz).replace(tzinfo=None) < naive:
            lo = mid
        else:
            hi = mid
    return float(round(hi))


# --- validation of what callers hand us -----------------------------------------------------------------


def parse_time(name: str, value: object) -> dt.time:
    if not isinstance(value, str) or not (m := _HHMM.fullmatch(value)):
        raise InvalidInput(f"{name} must be a time as HH:MM (00:00 to 23:59), got {value!r}")
    return dt.time(int(m.group(1)), int(m.group(2)))


def parse_quiet_hours(value: object) -> QuietHours | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidInput(f'quiet_hours must be {{"start": "HH:MM", "end": "HH:MM"}} or null, got {type(value).__name__}')
    unknown = sorted(set(value) - {"start", "end"})
    if unknown:
        raise InvalidInput(f"quiet_hours has unknown field(s): {', '.join(map(str, unknown))}")
    start, end = parse_time("quiet_hours.start", value.get("start")), parse_time("quiet_hours.end", value.get("end"))
    if start == end:
        raise InvalidInput("quiet_hours.start and quiet_hours.end must differ (an empty window is null)")
    return QuietHours(start, end)


def parse_time_zone(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > 64:
        raise InvalidInput(f"time_zone must be an IANA time zone name such as Europe/Moscow, got {value!r}")
    try:
        zone(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"time_zone {value!r} is not a known IANA time zone") from None
    return value


def _flag(name: str, value: object) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise InvalidInput(f"{name} must be true, false or null, got {value!r}")
    return value


def parse_fields(fields: Mapping[str, object]) -> dict[str, object]:
    """Validate some preference fields (as JSON or as Python values); InvalidInput names the bad one."""
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise InvalidInput(f"unknown preference field(s): {', '.join(map(str, unknown))}")
    out: dict[str, object] = {}
    for name, value in fields.items():
        if name in ("push", "email"):
            out[name] = _flag(name, value)
        elif name == "language":
            if value is not None and value not in LANGUAGES:
                raise InvalidInput(f"language must be one of {', '.join(LANGUAGES)} or null, got {value!r}")
            out[name] = value
        elif name == "time_zone":
            out[name] = parse_time_zone(value)
        elif name == "quiet_hours":
            out[name] = parse_quiet_hours(value)
        else:
            out[name] = parse_muted(value)
    return out


def parse_muted(value: object) -> frozenset[int]:
    if value is None:
        return frozenset()
    if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
        raise InvalidInput(f"muted_dialogs must be a list of dialog ids, got {type(value).__name__}")
    ids = frozenset(check_id("muted_dialogs[]", v) for v in value)
    if len(ids) > MAX_MUTED:
        raise InvalidInput(f"muted_dialogs holds at most {MAX_MUTED} dialog ids, got {len(ids)}")
    return ids
