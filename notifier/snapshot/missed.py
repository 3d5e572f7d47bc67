"""What a manager missed: every dialog they may see with visitor messages above their read pointer and
above the dialog's last manager answer, in one statement (no query per dialog).

The host's tables are the host's: we add no index to them. ReplyX's production indexes
(alembic revision 165e5d314eaf) include `idx_dialogs_user_started (user_id, started_at)` and
`idx_dialog_messages_dialog_timestamp (dialog_id, timestamp)`; `dialog_messages.dialog_id` has no index
of its own. The statement is built on those two (PostgreSQL's plan: tests/test_missed.py, README):

    WITH candidates AS MATERIALIZED (        -- the viewer's dialogs that need a human, once each
      SELECT d.id, coalesce(rp.message_id, 0) AS pointer,
             coalesce((SELECT max(id) FROM dialog_messages                    -- idx_..._dialog_timestamp
                       WHERE dialog_id = d.id AND sender = 'manager'), 0) AS answered
      FROM dialogs d LEFT JOIN notifier_read_pointers rp ON rp.dialog_id = d.id AND rp.manager_id = :viewer
      WHERE d.user_id IN (:tenants)                                           -- idx_dialogs_user_started
        AND (d.handoff_status IN ('active', 'requested') OR d.is_taken_over != 0))
    SELECT m.dialog_id, count(*), min(m.id), max(m.id)
      FROM candidates c JOIN dialog_messages m ON m.dialog_id = c.id          -- idx_..._dialog_timestamp
     WHERE m.sender = 'user' AND m.id > c.pointer AND m.id > c.answered
     GROUP BY m.dialog_id ORDER BY min(m.id) LIMIT :limit   -- then each first unread's timestamp, by id

The work is bounded by the viewer's dialogs that need a human and their messages, never the platform's
message table. A platform admin (every tenant) reads the dialogs table once (no index serves
"in handoff or taken over") and the messages of the dialogs that need a human. Counts are exact.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, Connection, and_, func, or_, select

from notifier import host, models
from notifier.decide import HANDOFF_NEEDS_HUMAN
from notifier.snapshot.hosttime import message_time

MISSED_LIMIT = 200  # dialogs per answer, oldest waiting first: an admin cannot ask for the whole platform


@dataclass(frozen=True)
class MissedDialog:
    dialog_id: int
    unread: int  # exact
    first_unread_message_id: int
    last_message_id: int  # the newest unread visitor message
    waiting_since: float | None  # epoch seconds of the first unread message (hosttime rules); None if unknown


def load_missed(
    conn: Connection, viewer_id: int, tenants: frozenset[int] | None, needs_human_only: bool, now: float,
    limit: int = MISSED_LIMIT,
) -> list[MissedDialog]:
    """Dialogs of `tenants` (None: every tenant) with visitor messages unread by `viewer_id`, oldest waiting
    first (by the first unread message's id: the host's timestamps do not order), at most `limit`.

    `needs_human_only` keeps the dialogs the notifier would notify about (handoff requested or active, or
    taken over), as NOTIFIER_SKIP_AI_HANDLED does: visitor messages the AI answers are not missed."""
    d, m, rp = host.dialogs, host.dialog_messages, models.read_pointers
    answers = host.dialog_messages.alias("answers")
    last_answer = func.coalesce(
        select(func.max(answers.c.id)).where(answers.c.dialog_id == d.c.id, answers.c.sender == "manager").scalar_subquery(),
        0,
    )
    where: list[ColumnElement[bool]] = []
    if tenants is not None:
        where.append(d.c.user_id.in_(sorted(tenants)))
    if needs_human_only:
        where.append(or_(d.c.handoff_status.in_(sorted(HANDOFF_NEEDS_HUMAN)), d.c.is_taken_over != 0))
    # MATERIALIZED (PostgreSQL 12+ would otherwise inline the CTE): each candidate's last answer is looked up
    # once per dialog, not once per message row of the join below.
    candidates = (
        select(d.c.id.label("dialog_id"), func.coalesce(rp.c.message_id, 0).label("pointer"), last_answer.label("answered"))
        .select_from(d.outerjoin(rp, and_(rp.c.dialog_id == d.c.id, rp.c.manager_id == viewer_id)))
        .where(*where)
        .cte("candidates")
        .prefix_with("MATERIALIZED", dialect="postgresql")
    )
    first = func.min(m.c.id)
    missed = (
        select(m.c.dialog_id, func.count().label("unread"), first.label("first_id"), func.max(m.c.id).label("last_id"))
        .select_from(candidates.join(m, m.c.dialog_id == candidates.c.dialog_id))
        .where(m.c.sender == "user", m.c.id > candidates.c.pointer, m.c.id > candidates.c.answered)
        .group_by(m.c.dialog_id)
        .order_by(first)
        .limit(limit)
        .subquery("missed")
    )
    first_message = host.dialog_messages.alias("first_message")
    rows = conn.execute(
        select(missed, first_message.c.timestamp)
        .select_from(missed.join(first_message, first_message.c.id == missed.c.first_id))
        .order_by(missed.c.first_id)
    ).all()
    return [
        MissedDialog(
            int(r.dialog_id), int(r.unread), int(r.first_id), int(r.last_id),
            None if r.timestamp is None else message_time(r.timestamp, now),
        )
        for r in rows
    ]
