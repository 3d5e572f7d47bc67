"""A dialog's visitor messages: ids and exact counts for the decision, text only for what is shown."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, case, func, select

from notifier import host
from notifier.decide import Messages
from notifier.snapshot.hosttime import message_time

m = host.dialog_messages


def last_manager_id(conn: Connection, dialog_id: int) -> int:
    found = conn.execute(select(func.max(m.c.id)).where(m.c.dialog_id == dialog_id, m.c.sender == "manager"))
    return int(found.scalar_one_or_none() or 0)


def load_messages(conn: Connection, dialog_id: int, pointers: Iterable[int], now: float) -> tuple[Messages, float | None]:
    """(Messages with an exact count above the last manager message and above each read pointer, the time
    of the newest visitor message or None). Ordered by id, never by timestamp."""
    manager = last_manager_id(conn, dialog_id)
    newest = conn.execute(
        select(m.c.id, m.c.timestamp).where(m.c.dialog_id == dialog_id, m.c.sender == "user").order_by(m.c.id.desc()).limit(1)
    ).one_or_none()
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
    return Messages(manager, int(newest.id), above), message_time(newest.timestamp, now)


def load_shown(conn: Connection, dialog_id: int, floor: int, limit: int) -> tuple[tuple[int, str], ...]:
    """The newest `limit` visitor messages above `floor`, with their text, oldest first."""
    rows = conn.execute(
        select(m.c.id, m.c.text)
        .where(m.c.dialog_id == dialog_id, m.c.sender == "user", m.c.id > floor)
        .order_by(m.c.id.desc())
        .limit(limit)
    ).all()
    return tuple((int(r.id), r.text or "") for r in reversed(rows))
