"""The decision, pure: who hears about a dialog's unread visitor messages, by which channel, and why not.

No database, network or clock in here: the caller loads a frozen `CheckInput` (with `now`) and records what
`decide` returns. Every recipient gets a `Decision` with a reason, sent or not, so "why was I not notified?"
always has an answer. A recipient whose deadline has not come yet gets no decision; `recheck_at` says when
to look again.

Precedence, first match wins, per recipient:
1. tenant guard (an assigned manager outside the tenant is refused; the owner takes their place);
2. inactive account; dialog ended; AI handling (no handoff, not taken over);
3. nothing unread for them (answered by a manager, or read up to their pointer);
4. grace deadline not reached -> wait;
5. online on this dialog -> skip;
6. push: once per burst, at the grace deadline, when they have a subscription;
7. email: once per burst, at the grace deadline when they have no push, else `email_after` after the
   burst began; no address -> skip.
A burst is what is unread above `max(read pointer, last manager message)`; that floor keys the ledger, so
a new burst begins only when the manager reads or answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from notifier.enums import Action, Channel, Reason, Relation

HANDOFF_NEEDS_HUMAN = frozenset({"requested", "active"})


@dataclass(frozen=True)
class Person:
    id: int
    email: str | None
    first_name: str | None = None
    role: str = "user"
    status: str = "active"
    language: str | None = None


@dataclass(frozen=True)
class DialogFacts:
    id: int
    owner_id: int
    handoff_status: str | None = None
    is_taken_over: bool = False
    assigned_manager_id: int | None = None
    ended: bool = False

    @property
    def needs_human(self) -> bool:
        return self.is_taken_over or (self.handoff_status or "none") in HANDOFF_NEEDS_HUMAN


@dataclass(frozen=True)
class Candidate:
    person: Person
    relation: Relation


@dataclass(frozen=True)
class RecipientState:
    """What the loader knows about one candidate at check time."""

    candidate: Candidate
    read_pointer: int = 0
    online: bool = False
    has_push: bool = False
    # (channel, burst floor) pairs already in the ledger for this dialog and person.
    notified: frozenset[tuple[Channel, int]] = frozenset()


@dataclass(frozen=True)
class Decision:
    manager_id: int | None
    action: Action
    reason: Reason
    channel: Channel | None = None
    burst_floor: int = 0
    first_message_id: int | None = None
    last_message_id: int | None = None


@dataclass(frozen=True)
class CheckInput:
    dialog: DialogFacts
    # Visitor messages with an id above the last manager message, ascending.
    visitor_message_ids: tuple[int, ...]
    last_manager_message_id: int
    recipients: tuple[RecipientState, ...]
    refused: tuple[Decision, ...]
    now: float
    # message id -> when it was first scheduled; a recipient's burst starts at its earliest unread message.
    seen_at: Mapping[int, float]
    unseen_at: float  # the start assumed for a message with no scheduled time
    grace_seconds: float
    email_after_seconds: float
    skip_ai_handled: bool = True


@dataclass(frozen=True)
class Outcome:
    decisions: tuple[Decision, ...]
    recheck_at: float | None = None
    notify: tuple[Decision, ...] = field(default=())


def _guard_allows(person: Person, owner_id: int, team_ids: frozenset[int]) -> bool:
    return person.id == owner_id or person.id in team_ids or person.role == "admin"


def resolve_recipients(
    dialog: DialogFacts, people: Mapping[int, Person], team_ids: frozenset[int]
) -> tuple[tuple[Candidate, ...], tuple[Decision, ...]]:
    """Candidates for a dialog, and refusals recorded by the tenant guard.

    An active handoff's assigned manager is the only candidate when the guard allows them; otherwise
    (no handoff, or refused) the tenant owner and the owner's registered team are.
    """
    refused: list[Decision] = []
    assigned_id = dialog.assigned_manager_id
    if dialog.handoff_status == "active" and assigned_id is not None:
        assigned = people.get(assigned_id)
        if assigned is not None and _guard_allows(assigned, dialog.owner_id, team_ids):
            relation = Relation.OWNER if assigned_id == dialog.owner_id else Relation.ASSIGNED
            return (Candidate(assigned, relation),), ()
        refused.append(Decision(assigned_id, Action.SKIP, Reason.TENANT_GUARD))
    candidates: list[Candidate] = []
    owner = people.get(dialog.owner_id)
    if owner is not None:
        candidates.append(Candidate(owner, Relation.OWNER))
    for member_id in sorted(team_ids):
        member = people.get(member_id)
        if member is not None and member_id != dialog.owner_id:
            candidates.append(Candidate(member, Relation.TEAM))
    return tuple(candidates), tuple(refused)


def _skip(state: RecipientState, reason: Reason, floor: int = 0) -> Decision:
    return Decision(state.candidate.person.id, Action.SKIP, reason, burst_floor=floor)


def blocking_reason(
    dialog: DialogFacts,
    person: Person,
    visitor_message_ids: tuple[int, ...],
    last_manager_message_id: int,
    read_pointer: int,
    skip_ai_handled: bool,
) -> tuple[Reason | None, int, tuple[int, ...]]:
    """(reason not to notify or None, burst floor, unread ids): rules 2-3, shared by the check and the
    re-check a delivery makes just before sending."""
    if person.status != "active":
        return Reason.INACTIVE, 0, ()
    if dialog.ended:
        return Reason.DIALOG_ENDED, 0, ()
    if skip_ai_handled and not dialog.needs_human:
        return Reason.AI_HANDLING, 0, ()
    floor = max(read_pointer, last_manager_message_id)
    unread = tuple(m for m in visitor_message_ids if m > floor)
    if not unread:
        answered = not visitor_message_ids and last_manager_message_id > 0
        return (Reason.ANSWERED if answered else Reason.READ), floor, ()
    return None, floor, unread


def _decide_one(inp: CheckInput, state: RecipientState) -> tuple[list[Decision], float | None]:
    person = state.candidate.person
    reason, floor, unread = blocking_reason(
        inp.dialog, person, inp.visitor_message_ids, inp.last_manager_message_id, state.read_pointer,
        inp.skip_ai_handled,
    )
    if reason is not None:
        return [_skip(state, reason, floor)], None
    started = min(inp.seen_at.get(m, inp.unseen_at) for m in unread)
    deadline = started + inp.grace_seconds
    if inp.now < deadline:
        return [], deadline
    if state.online:
        return [_skip(state, Reason.ONLINE, floor)], None

    def notify(channel: Channel, why: Reason) -> Decision:
        return Decision(person.id, Action.NOTIFY, why, channel, floor, unread[0], unread[-1])

    out: list[Decision] = []
    pushed = (Channel.WEBPUSH, floor) in state.notified
    if state.has_push and not pushed:
        out.append(notify(Channel.WEBPUSH, Reason.UNREAD))
    went_push = state.has_push or pushed
    email_due = max(deadline, started + inp.email_after_seconds) if went_push else deadline
    if (Channel.EMAIL, floor) in state.notified:
        if not out:
            out.append(_skip(state, Reason.ALREADY_NOTIFIED, floor))
        return out, None
    if inp.now < email_due:
        return out, email_due
    if not person.email:
        out.append(_skip(state, Reason.NO_ADDRESS, floor))
    else:
        out.append(notify(Channel.EMAIL, Reason.ESCALATED if went_push else Reason.UNREAD))
    return out, None


def decide(inp: CheckInput) -> Outcome:
    decisions: list[Decision] = list(inp.refused)
    rechecks: list[float] = []
    for state in inp.recipients:
        made, recheck = _decide_one(inp, state)
        decisions.extend(made)
        if recheck is not None:
            rechecks.append(recheck)
    notify = tuple(d for d in decisions if d.action is Action.NOTIFY)
    return Outcome(tuple(decisions), min(rechecks) if rechecks else None, notify)
