"""Everything a decision about one dialog needs from the database, read in one short transaction."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, replace

from sqlalchemy import Connection, select

from notifier import host, models
from notifier.decide import Candidate, Decision, DialogFacts, Messages, Person, resolve_recipients
from notifier.enums import Channel
from notifier.preferences import Stored
from notifier.snapshot.hosttime import message_time
from notifier.snapshot.messages import load_messages
from notifier.snapshot.prefs import load_stored


@dataclass(frozen=True)
class DialogSnapshot:
    facts: DialogFacts
    visitor_name: str | None
    site_name: str | None
    candidates: tuple[Candidate, ...]
    refused: tuple[Decision, ...]
    pointers: Mapping[int, int]  # manager -> read pointer (absent: 0)
    with_push: frozenset[int]  # managers with at least one push subscription
    notified: Mapping[int, frozenset[tuple[Channel, int]]]  # manager -> (channel, burst floor) in the ledger
    messages: Messages
    stored: Mapping[int, Stored]  # manager -> stored preferences (muted_dialogs: this dialog, if muted)


@dataclass(frozen=True)
class Subscription:
    id: int
    manager_id: int
    endpoint: str
    p256dh: str
    auth: str


def load_people(conn: Connection, ids: set[int]) -> dict[int, Person]:
    if not ids:
        return {}
    u = host.users
    rows = conn.execute(
        select(u.c.id, u.c.email, u.c.first_name, u.c.role, u.c.status).where(u.c.id.in_(sorted(ids)))
    ).all()
    return {r.id: Person(r.id, (r.email or "").strip() or None, r.first_name, r.role, r.status) for r in rows}


def load_team(conn: Connection, owner_id: int) -> frozenset[int]:
    t = models.team_members
    return frozenset(conn.execute(select(t.c.user_id).where(t.c.owner_id == owner_id)).scalars())


def load_dialog(conn: Connection, dialog_id: int, now: float, push_enabled: bool) -> DialogSnapshot | None:
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
        ended_at=None if row.ended_at is None else message_time(row.ended_at, now),
    )
    team = load_team(conn, facts.owner_id)
    wanted = {facts.owner_id, *team} | ({facts.assigned_manager_id} if facts.assigned_manager_id is not None else set())
    candidates, refused = resolve_recipients(facts, load_people(conn, wanted), team)
    ids = [c.person.id for c in candidates]
    pointers = _pointers(conn, dialog_id, ids)
    messages, last_visitor_at = load_messages(conn, dialog_id, pointers.values(), now)
    name = " ".join(p for p in (row.first_name, row.last_name) if p) or (
        f"@{row.telegram_username}" if row.telegram_username else None
    )
    return DialogSnapshot(
        facts=replace(facts, last_visitor_at=last_visitor_at),
        visitor_name=name,
        site_name=row.name,
        candidates=candidates,
        refused=refused,
        pointers=pointers,
        with_push=_with_push(conn, ids) if push_enabled else frozenset(),
        notified=_notified(conn, dialog_id, ids, messages.last_manager_id),
        messages=messages,
        stored=load_stored(conn, ids, dialog_id),
    )


def _pointers(conn: Connection, dialog_id: int, ids: list[int]) -> dict[int, int]:
    if not ids:
        return {}
    rp = models.read_pointers
    rows = conn.execute(select(rp.c.manager_id, rp.c.message_id).where(rp.c.dialog_id == dialog_id, rp.c.manager_id.in_(ids)))
    return {int(r.manager_id): int(r.message_id) for r in rows}


def _with_push(conn: Connection, ids: list[int]) -> frozenset[int]:
    if not ids:
        return frozenset()
    ps = models.push_subscriptions
    return frozenset(conn.execute(select(ps.c.manager_id).where(ps.c.manager_id.in_(ids)).distinct()).scalars())


def _notified(conn: Connection, dialog_id: int, ids: list[int], floor_at_least: int) -> dict[int, frozenset[tuple[Channel, int]]]:
    if not ids:
        return {}
    dl = models.deliveries
    # A burst's floor is never below the last manager message: older bursts cannot matter any more.
    rows = conn.execute(
        select(dl.c.manager_id, dl.c.channel, dl.c.burst_floor)
        .where(dl.c.dialog_id == dialog_id, dl.c.manager_id.in_(ids), dl.c.burst_floor >= floor_at_least)
        .distinct()
    ).all()
    out: dict[int, set[tuple[Channel, int]]] = defaultdict(set)
    for r in rows:
        out[int(r.manager_id)].add((Channel(r.channel), int(r.burst_floor)))
    return {k: frozenset(v) for k, v in out.items()}


def push_targets(conn: Connection, manager_id: int) -> list[str]:
    """The manager's push subscriptions, as delivery targets (one delivery per browser)."""
    ps = models.push_subscriptions
    return [str(i) for i in conn.execute(select(ps.c.id).where(ps.c.manager_id == manager_id).order_by(ps.c.id)).scalars()]


def load_subscription(conn: Connection, subscription_id: int) -> Subscription | None:
    ps = models.push_subscriptions
    r = conn.execute(select(ps).where(ps.c.id == subscription_id)).one_or_none()
    return None if r is None else Subscription(r.id, r.manager_id, r.endpoint, r.p256dh, r.auth)
