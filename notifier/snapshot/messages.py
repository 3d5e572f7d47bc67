"""A dialog's visitor messages: ids and exact counts for the decision, text only for what is shown."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

from sqlalchemy import Connection, func, select, text

from notifier import host
from notifier.db import any_of
from notifier.decide import Messages
from notifier.snapshot.hosttime import message_time

m = host.dialog_messages

# Built once (see notifier.snapshot.dialog): the dialogs' ids travel as an expanding parameter.
_LAST_MANAGER = (
    select(m.c.dialog_id, func.max(m.c.id))
    .where(any_of(m.c.dialog_id, "dialogs"), m.c.sender == "manager")
    .group_by(m.c.dialog_id)
)
_newest = (
    select(m.c.dialog_id, func.max(m.c.id).label("id"))
    .where(any_of(m.c.dialog_id, "dialogs"), m.c.sender == "user")
    .group_by(m.c.dialog_id)
    .subquery()
)
_NEWEST_VISITOR = select(m.c.dialog_id, m.c.id, m.c.timestamp).join(_newest, m.c.id == _newest.c.id)


def last_manager_id(conn: Connection, dialog_id: int) -> int:
    return last_manager_ids(conn, [dialog_id]).get(dialog_id, 0)


def last_manager_ids(conn: Connection, dialog_ids: Collection[int]) -> dict[int, int]:
    """dialog -> id of its newest manager message (absent: none)."""
    rows = conn.execute(_LAST_MANAGER, {"dialogs": list(dialog_ids)})
    return {int(d): int(i) for d, i in rows if i is not None}


def newest_visitor(conn: Connection, dialog_ids: Collection[int]) -> dict[int, tuple[int, Any]]:
    """dialog -> (id, timestamp) of its newest visitor message (absent: none)."""
    rows = conn.execute(_NEWEST_VISITOR, {"dialogs": list(dialog_ids)})
    return {int(d): (int(i), ts) for d, i, ts in rows}


# A statement holds at most this many per-dialog parts (two bound values each): far below every
# database's limit on bound values (SQLite's was 999 before 3.32).
_PARTS_PER_STATEMENT = 200


class _Names:
    """The host's table and column names as this database wants them quoted."""

    def __init__(self, conn: Connection) -> None:
        quote = conn.dialect.identifier_preparer.quote
        self.table = quote(m.name)
        self.dialog_id, self.id, self.text = quote(m.c.dialog_id.name), quote(m.c.id.name), quote(m.c.text.name)
        self.sender = quote(m.c.sender.name)

    def visitor_rows_above(self, dialog: str, floor: str) -> str:
        return f"{self.dialog_id} = :{dialog} AND {self.sender} = 'user' AND {self.id} > :{floor}"


def _union(conn: Connection, parts: list[tuple[int, int]], part_sql: Callable[[str, str], str]) -> list[Any]:
    """Run `part_sql(dialog placeholder, floor placeholder)` for every (dialog, floor) of `parts`, joined by
    UNION ALL: one round trip per statement instead of one per part. Plain SQL text: built per call at
    the cost of a string join, where the same statement in SQLAlchemy's expression language cost more
    than its execution."""
    rows: list[Any] = []
    for start in range(0, len(parts), _PARTS_PER_STATEMENT):
        chunk = parts[start : start + _PARTS_PER_STATEMENT]
        sql = " UNION ALL ".join(part_sql(f"d{i}", f"f{i}") for i in range(len(chunk)))
        values = {}
        for i, (dialog_id, floor) in enumerate(chunk):
            values[f"d{i}"], values[f"f{i}"] = int(dialog_id), int(floor)
        rows += conn.execute(text(sql), values).all()
    return rows


def unread_counts(conn: Connection, thresholds: Mapping[int, Collection[int]]) -> dict[int, dict[int, tuple[int, int]]]:
    """dialog -> threshold -> (exact count, first id) of the dialog's visitor messages above it ((0, 0):
    none). One statement for all of them (per 200 thresholds): the (dialog, threshold) pairs as a VALUES
    list joined to the messages. (As 200 parts joined by UNION ALL, PostgreSQL spent longer planning the
    statement than running it: a third of a check chunk's reads.)"""
    parts = sorted({(d, t) for d, ts in thresholds.items() for t in ts})
    out: dict[int, dict[int, tuple[int, int]]] = {d: {} for d in thresholds}
    q = _Names(conn)
    for start in range(0, len(parts), _PARTS_PER_STATEMENT):
        chunk = parts[start : start + _PARTS_PER_STATEMENT]
        pairs = ", ".join(f"(CAST(:d{i} AS BIGINT), CAST(:f{i} AS BIGINT))" for i in range(len(chunk)))
        sql = (
            f"WITH wanted(d, f) AS (VALUES {pairs})"
            f" SELECT wanted.d, wanted.f, COUNT(*), MIN(msg.{q.id}) FROM wanted JOIN {q.table} AS msg"
            f" ON msg.{q.dialog_id} = wanted.d AND msg.{q.id} > wanted.f WHERE msg.{q.sender} = 'user'"
            " GROUP BY wanted.d, wanted.f"
        )
        values: dict[str, int] = {}
        for i, (dialog_id, floor) in enumerate(chunk):
            values[f"d{i}"], values[f"f{i}"] = int(dialog_id), int(floor)
        for d, f, n, first in conn.execute(text(sql), values):
            out[int(d)][int(f)] = (int(n or 0), int(first or 0))
    for d, t in parts:
        out[d].setdefault(t, (0, 0))  # no message above it: no row
    return out


def unread_messages(manager: int, newest: tuple[int, Any] | None, counts: Mapping[int, tuple[int, int]],
                    now: float) -> tuple[Messages, float | None]:
    """The decision's view of a dialog's visitor messages, from `unread_counts` for it (thresholds: the last
    manager message and every candidate's read pointer), and when the newest of them was written."""
    if newest is None:
        return Messages(manager, 0, {}), None
    return Messages(manager, newest[0], dict(counts)), message_time(newest[1], now)


def load_shown_many(conn: Connection, wanted: Collection[tuple[int, int]],
                    limit: int) -> dict[tuple[int, int], tuple[tuple[int, str], ...]]:
    """(dialog, floor) -> its newest `limit` visitor messages above `floor`, with their text, oldest first.
    One statement for all of them (per 200)."""
    parts = sorted(set(wanted))
    found: dict[tuple[int, int], list[tuple[int, str]]] = {p: [] for p in parts}
    q = _Names(conn)
    rows = _union(conn, parts, lambda d, f: (
        f"SELECT * FROM (SELECT {q.dialog_id} AS d, CAST(:{f} AS BIGINT) AS f, {q.id} AS id, {q.text} AS body"
        f" FROM {q.table} WHERE {q.visitor_rows_above(d, f)} ORDER BY {q.id} DESC LIMIT {int(limit)}) AS part_{d}"
    ))
    for d, f, message_id, body in rows:
        found[(int(d), int(f))].append((int(message_id), body or ""))
    return {p: tuple(sorted(found[p])) for p in parts}
