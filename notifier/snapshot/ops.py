"""Reads for operations: the reconciler's scan, `notifier status`, `notifier why`, start-up checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, String, cast, func, inspect, or_, select

from notifier import host, models
from notifier.snapshot.hosttime import message_time, parse_host_time

HOST_TABLES = ("users", "dialogs", "dialog_messages")


def host_tables_missing(engine: Engine) -> list[str]:
    """Host tables the worker reads that this database lacks (a fresh SQLite default has none)."""
    present = set(inspect(engine).get_table_names())
    return [t for t in HOST_TABLES if t not in present]


@dataclass(frozen=True)
class ScannedMessage:
    id: int
    dialog_id: int
    at: float  # epoch seconds, see hosttime
    handoff_status: str | None
    is_taken_over: bool
    ended_at: float | None
    covered_up_to: int | None


def first_id_since(conn: Connection, cutoff: float, now: float) -> int:
    """Largest message id older than `cutoff`, by binary search over ids (ids grow with time): the host keeps
    no index on `timestamp`, so this costs about 25 primary-key lookups instead of a full scan."""
    m = host.dialog_messages
    lo, hi = conn.execute(select(func.min(m.c.id), func.max(m.c.id))).one()
    if lo is None:
        return 0
    lo, hi = int(lo) - 1, int(hi)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        row = conn.execute(select(m.c.id, m.c.timestamp).where(m.c.id >= mid).order_by(m.c.id).limit(1)).one()
        if message_time(row.timestamp, now) < cutoff:
            lo = max(mid, int(row.id))
        else:
            hi = mid - 1
    return lo


def scan_visitor_messages(conn: Connection, after: int, batch: int, now: float) -> list[ScannedMessage]:
    """Visitor messages above `after` by primary key, with their dialog's state and our coverage mark.

    Timestamps are read as text and parsed here: a row whose timestamp no datetime can hold must cost its
    own dialog a failed check (and a parking), not stop the reconciler for everyone. An unreadable message
    time counts as old (the message is looked at now); an unreadable `ended_at` as not ended."""
    m, d, c = host.dialog_messages, host.dialogs, models.dialog_checks
    rows = conn.execute(
        select(
            m.c.id, m.c.dialog_id, cast(m.c.timestamp, String).label("at"), d.c.handoff_status, d.c.is_taken_over,
            cast(d.c.ended_at, String).label("ended_at"), c.c.covered_up_to,
        )
        .select_from(m.join(d, d.c.id == m.c.dialog_id).outerjoin(c, c.c.dialog_id == m.c.dialog_id))
        .where(m.c.id > after, m.c.sender == "user")
        .order_by(m.c.id)
        .limit(batch)
    ).all()
    out = []
    for r in rows:
        at, ended = parse_host_time(r.at), parse_host_time(r.ended_at)
        out.append(ScannedMessage(
            r.id, r.dialog_id, message_time(at, now) if at is not None or r.at is None else 0.0,
            r.handoff_status, bool(r.is_taken_over), None if ended is None else message_time(ended, now), r.covered_up_to,
        ))
    return out


def recent_decisions(conn: Connection, limit: int) -> list[Any]:
    dec = models.decisions
    return list(conn.execute(select(dec).order_by(dec.c.id.desc()).limit(limit)).all())


def delivery_counts(conn: Connection) -> list[tuple[str, str, int]]:
    dl = models.deliveries
    rows = conn.execute(
        select(dl.c.channel, dl.c.status, func.count()).group_by(dl.c.channel, dl.c.status).order_by(dl.c.channel, dl.c.status)
    ).all()
    return [(str(a), str(b), int(n)) for a, b, n in rows]


def failed_deliveries(conn: Connection, limit: int) -> list[Any]:
    dl = models.deliveries
    return list(conn.execute(select(dl).where(dl.c.status == "failed").order_by(dl.c.id.desc()).limit(limit)).all())


def dialog_history(conn: Connection, dialog_id: int, manager_id: int | None = None) -> tuple[list[Any], list[Any]]:
    """Every decision and every delivery of a dialog, oldest first; for one manager, theirs and the
    dialog-wide ones (no such dialog, check failed) that concern everyone."""
    dec, dl = models.decisions, models.deliveries
    q_dec = select(dec).where(dec.c.dialog_id == dialog_id)
    q_dl = select(dl).where(dl.c.dialog_id == dialog_id)
    if manager_id is not None:
        q_dec = q_dec.where(or_(dec.c.manager_id == manager_id, dec.c.manager_id.is_(None)))
        q_dl = q_dl.where(dl.c.manager_id == manager_id)
    return list(conn.execute(q_dec.order_by(dec.c.id)).all()), list(conn.execute(q_dl.order_by(dl.c.id)).all())
