"""Load what a decision needs from the host's tables and ours, in one short read transaction."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import Connection, func, select

from notifier import host, models
from notifier.decide import (
    Candidate,
    Decision,
    DialogFacts,
    Person,
    RecipientState,
    resolve_recipients,
)
from notifier.enums import Channel

# A dialog with more unanswered visitor messages than this is shown by its newest ones.
MAX_UNREAD_IDS = 500


@dataclass(frozen=True)
class DialogRow:
    facts: DialogFacts
    visitor_name: str | None
    site_name: str | None


def load_dialog(conn: Connection, dialog_id: int) -> DialogRow | None:
    d, a = host.dialogs, host.assistants
    row = conn.execute(
        select(
            d.c.id, d.c.user_id, d.c.handoff_status, d.c.is_taken_over, d.c.assigned_manager_id, d.c.ended_at,
            d.c.first_name, d.c.last_name, d.c.telegram_username, a.c.name,
        )
        .select_from(d.outerjoin(a, a.c.id == d.c.assistant_id))
        .where(d.c.id == dialog_id)
    ).one_or_none()
    if row is None:
        return None
    facts = DialogFacts(
        id=row.id,
        owner_id=row.user_id,
        handoff_status=row.handoff_status,
        is_taken_over=bool(row.is_taken_over),
        assigned_manager_id=row.assigned_manager_id,
        ended=row.ended_at is not None,
    )
    name = " ".join(p for p in (row.first_name, row.last_name) if p) or (
        f"@{row.telegram_username}" if row.telegram_username else None
    )
    return DialogRow(facts, name, row.name)


def load_message_ids(conn: Connection, dialog_id: int) -> tuple[int, tuple[int, ...]]:
    """(last manager message id or 0, visitor message ids above it ascending). Ordered by id, never time."""
    m = host.dialog_messages
    last_manager = conn.execute(
        select(func.max(m.c.id)).where(m.c.dialog_id == dialog_id, m.c.sender == "manager")
    ).scalar_one_or_none() or 0
    ids = conn.execute(
        select(m.c.id)
        .where(m.c.dialog_id == dialog_id, m.c.sender == "user", m.c.id > last_manager)
        .order_by(m.c.id.desc())
        .limit(MAX_UNREAD_IDS)
    ).scalars().all()
    return last_manager, tuple(sorted(ids))


def load_texts(conn: Connection, message_ids: list[int]) -> dict[int, str]:
    m = host.dialog_messages
    rows = conn.execute(select(m.c.id, m.c.text).where(m.c.id.in_(message_ids))).all()
    return {r.id: r.text or "" for r in rows}


def load_people(conn: Connection, ids: set[int]) -> dict[int, Person]:
    if not ids:
        return {}
    u, p = host.users, models.preferences
    rows = conn.execute(
        select(u.c.id, u.c.email, u.c.first_name, u.c.role, u.c.status, p.c.language)
        .select_from(u.outerjoin(p, p.c.manager_id == u.c.id))
        .where(u.c.id.in_(sorted(ids)))
    ).all()
    return {
        r.id: Person(r.id, (r.email or "").strip() or None, r.first_name, r.role or "user", r.status or "", r.language)
        for r in rows
    }


def load_team(conn: Connection, owner_id: int) -> frozenset[int]:
    t = models.team_members
    return frozenset(conn.execute(select(t.c.user_id).where(t.c.owner_id == owner_id)).scalars())


def load_recipient_states(
    conn: Connection, dialog_id: int, candidates: tuple[Candidate, ...], online: set[int], push_enabled: bool
) -> tuple[RecipientState, ...]:
    ids = [c.person.id for c in candidates]
    if not ids:
        return ()
    rp, ps, dl = models.read_pointers, models.push_subscriptions, models.deliveries
    pointer_rows = conn.execute(
        select(rp.c.manager_id, rp.c.message_id).where(rp.c.dialog_id == dialog_id, rp.c.manager_id.in_(ids))
    ).all()
    pointers = {r.manager_id: r.message_id for r in pointer_rows}
    with_push: set[int] = set()
    if push_enabled:
        with_push = set(conn.execute(select(ps.c.manager_id).where(ps.c.manager_id.in_(ids)).distinct()).scalars())
    notified: dict[int, set[tuple[Channel, int]]] = defaultdict(set)
    rows = conn.execute(
        select(dl.c.manager_id, dl.c.channel, dl.c.burst_floor)
        .where(dl.c.dialog_id == dialog_id, dl.c.manager_id.in_(ids))
        .distinct()
    ).all()
    for r in rows:
        notified[r.manager_id].add((Channel(r.channel), r.burst_floor))
    return tuple(
        RecipientState(
            candidate=c,
            read_pointer=pointers.get(c.person.id, 0),
            online=c.person.id in online,
            has_push=c.person.id in with_push,
            notified=frozenset(notified[c.person.id]),
        )
        for c in candidates
    )


def resolve(conn: Connection, dialog: DialogRow) -> tuple[tuple[Candidate, ...], tuple[Decision, ...]]:
    facts = dialog.facts
    team = load_team(conn, facts.owner_id)
    wanted = {facts.owner_id, *team}
    if facts.assigned_manager_id is not None:
        wanted.add(facts.assigned_manager_id)
    return resolve_recipients(facts, load_people(conn, wanted), team)
