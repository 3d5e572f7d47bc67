"""Managers' stored preferences (NULL = the default; resolved by notifier.preferences)."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Collection
from typing import Any

from sqlalchemy import Connection, select

from notifier import models
from notifier.db import any_of
from notifier.preferences import QuietHours, Stored

_p, _md = models.preferences, models.muted_dialogs
# Built once (see notifier.snapshot.dialog).
_PREFERENCES = select(_p).where(any_of(_p.c.manager_id, "managers"))
_MUTED = select(_md.c.manager_id, _md.c.dialog_id).where(any_of(_md.c.manager_id, "managers"))
_MUTED_OF = _MUTED.where(any_of(_md.c.dialog_id, "dialogs"))


def _quiet(start: str | None, end: str | None) -> QuietHours | None:
    if not start or not end:
        return None
    return QuietHours(dt.time.fromisoformat(start), dt.time.fromisoformat(end))


def load_stored(conn: Connection, manager_ids: list[int], dialog_ids: Collection[int] | None = None) -> dict[int, Stored]:
    """Stored preferences per manager. `muted_dialogs` holds every muted dialog, or with `dialog_ids` only
    those of them that are muted (what decisions about them need)."""
    if not manager_ids:
        return {}
    rows: dict[int, Any] = {r.manager_id: r for r in conn.execute(_PREFERENCES, {"managers": manager_ids})}
    if dialog_ids is None:
        muted_rows = conn.execute(_MUTED, {"managers": manager_ids})
    else:
        muted_rows = conn.execute(_MUTED_OF, {"managers": manager_ids, "dialogs": list(dialog_ids)})
    muted: dict[int, set[int]] = defaultdict(set)
    for m in muted_rows:
        muted[int(m.manager_id)].add(int(m.dialog_id))
    out: dict[int, Stored] = {}
    for manager_id in manager_ids:
        row = rows.get(manager_id)
        mutes = frozenset(muted.get(manager_id, ()))
        out[manager_id] = Stored(muted_dialogs=mutes) if row is None else Stored(
            push=row.push, email=row.email, language=row.language, time_zone=row.time_zone,
            quiet_hours=_quiet(row.quiet_start, row.quiet_end), muted_dialogs=mutes,
        )
    return out
