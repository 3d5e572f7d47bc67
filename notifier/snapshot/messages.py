"""A dialog's visitor messages: ids and exact counts for the decision, text only for what is shown."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

from sqlalchemy import Connection, case, func, select

from notifier import host
from notifier.decide import Messages
from notifier.snapshot.hosttime import message_time

m = host.dialog_messages


def last_manager_id(conn: Connection, dialog_id: int) -> int:
    return last_manager_ids(conn, [dialog_id]).get(dialog_id, 0)


def last_manager_ids(conn: Connection, dialog_ids: Collection[int]) -> dict[int, int]:
    """dialog -> id of its newest manager message (absent: none)."""
    rows = conn.execute(
        select(m.c.dialog_id, func.max(m.c.id))
        .where(m.c.dialog_id.in_(list(dialog_ids)), m.c.sender == "manager")
        .group_by(m.c.dialog_id)
    )
    return {int(d): int(i) for d, i in rows if i is not None}


def newest_visitor(conn: Connection, dialog_ids: Collection[int]) -> dict[int, tuple[int, Any]]:
    """dialog -> (id, timestamp) of its newest visitor message (absent: none)."""
    newest = (
        select(m.c.dialog_id, func.max(m.c.id).label("id"))
        .where(m.c.dialog_id.in_(list(dialog_ids)), m.c.sender == "user")
        .group_by(m.c.dialog_id)
        .subquery()
    )
    rows = conn.execute(select(m.c.dialog_id, m.c.id, m.c.timestamp).join(newest, m.c.id == newest.c.id))
    return {int(d): (int(i), ts) for d, i, ts in rows}


def count_unread(conn: Connection, dialog_id: int, manager: int, newest: tuple[int, Any] | None,
                 pointers: Iterable[int], now: float) -> tuple[Messages, float | None]:
    """One statement: the exact count and the first id of visitor messages above each threshold."""
    if newest is None:
        return Messages(manager, 0, {}), None
    thresholds = sorted({manager, *pointers})
    columns = []
    for t in thresholds:
        columns += [func.count(case((m.c.id > t, 1))), func.min(case((m.c.id > t, m.c.id)))]
    row = conn.execute(
        select(*columns).where(m.c.dialog_id == dialog_id, m.c.sender == "user", m.c.id > thresholds[0])
    ).one()
    above = {t: (int(row[2 * i] or 0), int(row[2 * i + 1] or 0)) for i, t in enumerate(thresholds)}
    return Messages(manager, newest[0], above), message_time(newest[1], now)


def load_shown(conn: Connection, dialog_id: int, floor: int, limit: int) -> tuple[tuple[int, str], ...]:
    """The newest `limit` visitor messages above `floor`, with their text, oldest first."""
    rows = conn.execute(
        select(m.c.id, m.c.text)
        .where(m.c.dialog_id == dialog_id, m.c.sender == "user", m.c.id > floor)
        .order_by(m.c.id.desc())
        .limit(limit)
    ).all()
    return tuple((int(r.id), r.text or "") for r in reversed(rows))
