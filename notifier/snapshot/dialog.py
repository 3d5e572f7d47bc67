"""Everything a decision about one dialog needs from the database, read in one short transaction."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace

from sqlalchemy import Connection, bindparam, select

from notifier import host, models
from notifier.db import any_of
from notifier.decide import Candidate, Decision, DialogFacts, Messages, Person, resolve_recipients
from notifier.enums import Channel
from notifier.preferences import Stored
from notifier.snapshot.hosttime import message_time
from notifier.snapshot.messages import last_manager_ids, newest_visitor, unread_counts, unread_messages
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


# The statements of a snapshot, built once: a chunk's reads run for every check and every delivery group,
# and building a statement cost more CPU than running it. Lists of ids travel as expanding parameters.
_d, _a, _u = host.dialogs, host.assistants, host.users
_t, _rp, _ps, _dl = models.team_members, models.read_pointers, models.push_subscriptions, models.deliveries
_DIALOGS = (
    select(
        _d.c.id, _d.c.user_id, _d.c.handoff_status, _d.c.is_taken_over, _d.c.assigned_manager_id, _d.c.ended_at,
        _d.c.first_name, _d.c.last_name, _d.c.telegram_username, _a.c.name,
    )
    .select_from(_d.outerjoin(_a, _a.c.id == _d.c.assistant_id))
    .where(any_of(_d.c.id, "ids"))
)
_PEOPLE = select(_u.c.id, _u.c.email, _u.c.first_name, _u.c.role, _u.c.status).where(
    any_of(_u.c.id, "ids"))
_TEAMS = select(_t.c.owner_id, _t.c.user_id).where(any_of(_t.c.owner_id, "ids"))
_POINTERS = select(_rp.c.dialog_id, _rp.c.manager_id, _rp.c.message_id).where(
    any_of(_rp.c.dialog_id, "dialogs"), any_of(_rp.c.manager_id, "managers"))
_WITH_PUSH = select(_ps.c.manager_id).where(any_of(_ps.c.manager_id, "managers")).distinct()
_NOTIFIED = (
    select(_dl.c.dialog_id, _dl.c.manager_id, _dl.c.channel, _dl.c.burst_floor)
    .where(any_of(_dl.c.dialog_id, "dialogs"),
           any_of(_dl.c.manager_id, "managers"), _dl.c.burst_floor >= bindparam("floor"))
    .distinct()
)
_TARGETS = select(_ps.c.id, _ps.c.manager_id).where(
    any_of(_ps.c.manager_id, "managers")).order_by(_ps.c.id)
_SUBSCRIPTIONS = select(_ps.c.id, _ps.c.manager_id, _ps.c.endpoint, _ps.c.p256dh, _ps.c.auth).where(
    any_of(_ps.c.id, "ids"))


def load_people(conn: Connection, ids: set[int]) -> dict[int, Person]:
    if not ids:
        return {}
    rows = conn.execute(_PEOPLE, {"ids": sorted(ids)}).all()
    return {r.id: Person(r.id, (r.email or "").strip() or None, r.first_name, r.role, r.status) for r in rows}


def load_team(conn: Connection, owner_id: int) -> frozenset[int]:
    return _teams(conn, {owner_id}).get(owner_id, frozenset())


def _teams(conn: Connection, owner_ids: Collection[int]) -> dict[int, frozenset[int]]:
    teams: dict[int, set[int]] = defaultdict(set)
    for owner_id, user_id in conn.execute(_TEAMS, {"ids": list(owner_ids)}):
        teams[int(owner_id)].add(int(user_id))
    return {k: frozenset(v) for k, v in teams.items()}


def load_dialog(conn: Connection, dialog_id: int, now: float, push_enabled: bool) -> DialogSnapshot | None:
    return load_dialogs(conn, [dialog_id], now, push_enabled).get(dialog_id)


def load_dialogs(conn: Connection, dialog_ids: Collection[int], now: float, push_enabled: bool) -> dict[int, DialogSnapshot]:
    """The snapshots of several dialogs (a chunk of checks, or the one dialog of a delivery), each exactly
    what reading it alone would give: one statement per kind of fact for all of them. Dialogs that do not
    exist are left out."""
    rows = conn.execute(_DIALOGS, {"ids": sorted(set(dialog_ids))}).all()
    if not rows:
        return {}
    facts = {
        int(row.id): DialogFacts(
            id=row.id,
            owner_id=row.user_id,
            handoff_status=row.handoff_status,
            is_taken_over=bool(row.is_taken_over),
            assigned_manager_id=row.assigned_manager_id,
            ended_at=None if row.ended_at is None else message_time(row.ended_at, now),
        )
        for row in rows
    }
    teams = _teams(conn, {f.owner_id for f in facts.values()})
    wanted: set[int] = set()
    for f in facts.values():
        wanted |= {f.owner_id, *teams.get(f.owner_id, ())}
        if f.assigned_manager_id is not None:
            wanted.add(f.assigned_manager_id)
    people = load_people(conn, wanted)
    resolved = {i: resolve_recipients(f, people, teams.get(f.owner_id, frozenset())) for i, f in facts.items()}
    ids_of = {i: [c.person.id for c in candidates] for i, (candidates, _refused) in resolved.items()}
    everyone = sorted({m for ids in ids_of.values() for m in ids})
    pointers = _pointers(conn, list(facts), everyone)
    managers = last_manager_ids(conn, list(facts))
    newest = newest_visitor(conn, list(facts))
    with_push = _with_push(conn, everyone) if push_enabled else frozenset()
    notified = _notified(conn, list(facts), everyone, min(managers.get(i, 0) for i in facts))
    stored = load_stored(conn, everyone, list(facts))
    mine_of = {i: {m: p for (dd, m), p in pointers.items() if dd == i and m in ids_of[i]} for i in facts}
    # Exact counts above the last manager message and above every candidate's read pointer.
    counts = unread_counts(conn, {i: {managers.get(i, 0), *mine_of[i].values()} for i in facts if i in newest})
    out: dict[int, DialogSnapshot] = {}
    for row in rows:
        dialog_id = int(row.id)
        ids = ids_of[dialog_id]
        mine = mine_of[dialog_id]
        messages, last_visitor_at = unread_messages(managers.get(dialog_id, 0), newest.get(dialog_id),
                                                    counts.get(dialog_id, {}), now)
        name = " ".join(p for p in (row.first_name, row.last_name) if p) or (
            f"@{row.telegram_username}" if row.telegram_username else None
        )
        floors = notified.get(dialog_id, {})
        kept = {m: frozenset(x for x in floors.get(m, ()) if x[1] >= messages.last_manager_id) for m in ids}
        out[dialog_id] = DialogSnapshot(
            facts=replace(facts[dialog_id], last_visitor_at=last_visitor_at),
            visitor_name=name,
            site_name=row.name,
            candidates=resolved[dialog_id][0],
            refused=resolved[dialog_id][1],
            pointers=mine,
            with_push=frozenset(with_push & set(ids)),
            # A burst's floor is never below the last manager message: older bursts cannot matter any more.
            notified={m: found for m, found in kept.items() if found},
            messages=messages,
            stored={m: replace(stored[m], muted_dialogs=stored[m].muted_dialogs & {dialog_id}) for m in ids},
        )
    return out


def _pointers(conn: Connection, dialog_ids: list[int], ids: list[int]) -> dict[tuple[int, int], int]:
    if not ids:
        return {}
    rows = conn.execute(_POINTERS, {"dialogs": dialog_ids, "managers": ids})
    return {(int(r.dialog_id), int(r.manager_id)): int(r.message_id) for r in rows}


def _with_push(conn: Connection, ids: list[int]) -> frozenset[int]:
    if not ids:
        return frozenset()
    return frozenset(conn.execute(_WITH_PUSH, {"managers": ids}).scalars())


def _notified(conn: Connection, dialog_ids: list[int], ids: list[int],
              floor_at_least: int) -> dict[int, dict[int, set[tuple[Channel, int]]]]:
    """dialog -> manager -> (channel, burst floor) already in the ledger, floors from `floor_at_least` up."""
    if not ids:
        return {}
    rows = conn.execute(_NOTIFIED, {"dialogs": dialog_ids, "managers": ids, "floor": floor_at_least}).all()
    out: dict[int, dict[int, set[tuple[Channel, int]]]] = defaultdict(lambda: defaultdict(set))
    for r in rows:
        out[int(r.dialog_id)][int(r.manager_id)].add((Channel(r.channel), int(r.burst_floor)))
    return out


def push_targets_many(conn: Connection, manager_ids: Collection[int]) -> dict[int, list[str]]:
    """manager -> push subscriptions as delivery targets (one delivery per browser), oldest first (absent:
    none)."""
    if not manager_ids:
        return {}
    out: dict[int, list[str]] = defaultdict(list)
    for subscription_id, manager_id in conn.execute(_TARGETS, {"managers": sorted(manager_ids)}):
        out[int(manager_id)].append(str(subscription_id))
    return dict(out)


def load_subscription(conn: Connection, subscription_id: int) -> Subscription | None:
    return load_subscriptions(conn, [subscription_id]).get(subscription_id)


def load_subscriptions(conn: Connection, subscription_ids: Collection[int]) -> dict[int, Subscription]:
    if not subscription_ids:
        return {}
    rows = conn.execute(_SUBSCRIPTIONS, {"ids": list(subscription_ids)})
    return {int(r.id): Subscription(r.id, r.manager_id, r.endpoint, r.p256dh, r.auth) for r in rows}
