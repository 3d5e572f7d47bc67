"""The decision, pure: who hears about a dialog's unread visitor messages, by which channel, and why not.

No database, network or clock in here: the caller loads a frozen `CheckInput` (with `now`) and records what
comes back. `decide` runs when a dialog's check is due; `decide_delivery` runs the same rules again for one
delivery just before it is sent, because state changes during the grace period and during retries.
Every recipient gets a `Decision` with a reason, sent or not. A recipient whose deadline has not come yet
gets no decision; `recheck_at` says when to look again.

Precedence, first match wins, per recipient:
1. tenant guard (an assigned manager outside the tenant is refused; the owner takes their place);
   at send time, someone who is no longer a recipient at all (left the team, handoff reassigned);
2. inactive account; dialog ended (no visitor message since the host's `ended_at`); AI handling;
   the manager muted this dialog;
3. nothing unread for them (answered by a manager, or read up to their pointer); another recipient has
   read the whole burst (read by other);
4. grace deadline not reached -> wait (decision time only: at send time the deadline was already judged);
5. online on this dialog -> skip;
6. inside the manager's quiet hours -> hold until they end (action `hold`, decided again then);
7. push: once per burst, at the grace deadline, when push is on for them and they have a subscription
   (at send time: the subscription still exists and still belongs to them);
8. email: once per burst, at the grace deadline when they get no push, else `email_after` after the
   burst began (and never together with a first push that comes late: then `email_after - grace` after
   it); email off for them -> skip `channel_off`; no address -> skip.
A burst is what is unread above `max(read pointer, last manager message)`; that floor keys the ledger, so
a new burst begins only when the manager reads or answers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from notifier.enums import Action, Channel, Reason, Relation
from notifier.preferences import Preferences, quiet_until

HANDOFF_NEEDS_HUMAN = frozenset({"requested", "active"})


@dataclass(frozen=True)
class Person:
    id: int
    email: str | None
    first_name: str | None = None
    role: str | None = "user"
    status: str | None = "active"

    @property
    def active(self) -> bool:
        # The host's users.status has no default: a NULL status is a live account.
        return self.status is None or self.status.strip().lower() == "active"

    @property
    def is_admin(self) -> bool:
        return (self.role or "").strip().lower() == "admin"


@dataclass(frozen=True)
class DialogFacts:
    id: int
    owner_id: int
    handoff_status: str | None = None
    is_taken_over: bool = False
    assigned_manager_id: int | None = None
    # Epoch seconds. The host writes ended_at whenever the AI answers, so it means "ended" only while no
    # visitor has written since.
    ended_at: float | None = None
    last_visitor_at: float | None = None

    @property
    def needs_human(self) -> bool:
        return self.is_taken_over or (self.handoff_status or "none") in HANDOFF_NEEDS_HUMAN

    @property
    def ended(self) -> bool:
        return self.ended_at is not None and (self.last_visitor_at is None or self.last_visitor_at <= self.ended_at)


def dialog_reason(dialog: DialogFacts, skip_ai_handled: bool) -> Reason | None:
    """Why no visitor message of this dialog needs a fallback now, or None (also the reconciler's filter)."""
    if dialog.ended:
        return Reason.DIALOG_ENDED
    if skip_ai_handled and not dialog.needs_human:
        return Reason.AI_HANDLING
    return None


@dataclass(frozen=True)
class Unread:
    count: int  # exact, however long the burst
    first_id: int
    last_id: int


@dataclass(frozen=True)
class Messages:
    """The dialog's visitor messages as the decision needs them: ids and counts, never text."""

    last_manager_id: int = 0
    last_visitor_id: int = 0
    # threshold -> (count, first id) of visitor messages above it, for every threshold the loader was asked
    # about: the last manager message and each recipient's read pointer.
    above: Mapping[int, tuple[int, int]] = field(default_factory=dict)

    @classmethod
    def from_ids(cls, visitor_ids: Iterable[int], last_manager_id: int, thresholds: Iterable[int]) -> Messages:
        ids = sorted(visitor_ids)
        above = {}
        for t in {last_manager_id, *thresholds}:
            later = [i for i in ids if i > t]
            above[t] = (len(later), later[0] if later else 0)
        return cls(last_manager_id, ids[-1] if ids else 0, above)

    def unread_above(self, floor: int) -> Unread | None:
        if self.last_visitor_id <= floor:
            return None
        count, first = self.above[floor]
        return Unread(count, first, self.last_visitor_id) if count else None


@dataclass(frozen=True)
class Candidate:
    person: Person
    relation: Relation


@dataclass(frozen=True)
class RecipientState:
    """What the loader knows about one candidate when the decision is made."""

    candidate: Candidate
    read_pointer: int = 0
    online: bool = False
    has_push: bool = False
    # (channel, burst floor) pairs already in the ledger for this dialog and person.
    notified: frozenset[tuple[Channel, int]] = frozenset()
    prefs: Preferences = field(default_factory=Preferences)


@dataclass(frozen=True)
class Decision:
    manager_id: int | None
    action: Action
    reason: Reason
    channel: Channel | None = None
    burst_floor: int = 0
    first_message_id: int | None = None
    last_message_id: int | None = None
    due_at: float | None = None  # notify only: when it was due (its deadline), for lateness figures


@dataclass(frozen=True)
class CheckInput:
    dialog: DialogFacts
    messages: Messages
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


@dataclass(frozen=True)
class PendingDelivery:
    """A delivery about to be sent, as `decide_delivery` judges it."""

    manager_id: int
    channel: Channel
    burst_floor: int
    # Push only: the manager who owns the target subscription now (None: it was deleted).
    subscription_owner: int | None = None


def guard_allows(person: Person, owner_id: int, team_ids: frozenset[int]) -> bool:
    """The tenant guard: only the owner, a registered member of the owner's team, or a platform admin."""
    return person.id == owner_id or person.id in team_ids or person.is_admin


def may_see(viewer: Person, dialog: DialogFacts, team_ids: frozenset[int]) -> bool:
    """May `viewer` see this dialog: read it, mark it read, be present on it, have it in their missed list?

    The tenant's owner, a registered member of the owner's team (`team_ids`), the dialog's assigned
    manager if the tenant guard admits them, or a platform admin. The guard admits an assigned manager
    only as the owner, a member or an admin (`resolve_recipients` refuses anyone else), so the answer is
    the guard's: being assigned alone, which ReplyX allows across tenants, shows nothing. Account status
    is the host's business (it authenticated the viewer), as it is for the host's own dialog pages.
    """
    return guard_allows(viewer, dialog.owner_id, team_ids)


def visible_tenants(viewer: Person, member_of: frozenset[int]) -> frozenset[int] | None:
    """The owners whose dialogs `viewer` may see, for listing them: None means every tenant (a platform
    admin); else their own and those of the teams they are registered in (`member_of`, owner ids).
    Agrees with `may_see`: a dialog is in the list exactly when `may_see` admits the viewer to it."""
    if viewer.is_admin:
        return None
    return frozenset({viewer.id, *member_of})


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
        if assigned is not None and guard_allows(assigned, dialog.owner_id, team_ids):
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


def _stop(inp: CheckInput, state: RecipientState) -> tuple[Reason | None, int, Unread | None]:
    """Rules 2-3, for every channel: (reason not to notify or None, burst floor, the unread burst)."""
    if not state.candidate.person.active:
        return Reason.INACTIVE, 0, None
    if (reason := dialog_reason(inp.dialog, inp.skip_ai_handled)) is not None:
        return reason, 0, None
    if state.prefs.muted(inp.dialog.id):
        return Reason.MUTED, 0, None
    messages = inp.messages
    floor = max(state.read_pointer, messages.last_manager_id)
    unread = messages.unread_above(floor)
    if unread is None:
        answered = messages.last_manager_id > 0 and messages.last_visitor_id <= messages.last_manager_id
        return (Reason.ANSWERED if answered else Reason.READ), floor, None
    if read_by_other(inp, state):
        return Reason.READ_BY_OTHER, floor, None
    return None, floor, unread


def read_by_other(inp: CheckInput, state: RecipientState) -> bool:
    """Another recipient has read the dialog up to its newest visitor message: nobody else need be told."""
    me, newest = state.candidate.person.id, inp.messages.last_visitor_id
    return newest > 0 and any(s.read_pointer >= newest for s in inp.recipients if s.candidate.person.id != me)


def _channel_stop(
    person: Person, prefs: Preferences, channel: Channel, subscription_owner: int | None = None
) -> Reason | None:
    if not (prefs.email if channel is Channel.EMAIL else prefs.push):
        return Reason.CHANNEL_OFF
    if channel is Channel.EMAIL and not person.email:
        return Reason.NO_ADDRESS
    if channel is Channel.WEBPUSH and subscription_owner != person.id:
        return Reason.SUBSCRIPTION_GONE if subscription_owner is None else Reason.SUBSCRIPTION_MOVED
    return None


def burst_start(inp: CheckInput, unread: Unread) -> float:
    """When the burst began: its earliest scheduled message (a never-scheduled one counts as `unseen_at`)."""
    known = [t for m, t in inp.seen_at.items() if unread.first_id <= m <= unread.last_id]
    if len(known) < unread.count:
        known.append(inp.unseen_at)
    return min(known)


def _skip(manager_id: int, reason: Reason, floor: int = 0, channel: Channel | None = None) -> Decision:
    return Decision(manager_id, Action.SKIP, reason, channel, burst_floor=floor)


def _decide_one(inp: CheckInput, state: RecipientState) -> tuple[list[Decision], float | None]:
    person = state.candidate.person
    reason, floor, unread = _stop(inp, state)
    if reason is not None or unread is None:
        return [_skip(person.id, reason or Reason.READ, floor)], None
    start = burst_start(inp, unread)
    deadline = start + inp.grace_seconds
    if inp.now < deadline:
        return [], deadline
    if state.online:
        return [_skip(person.id, Reason.ONLINE, floor)], None
    out, recheck = _channels(inp, state, floor, unread, start, deadline)
    if any(d.action is Action.NOTIFY for d in out) and (held_until := quiet_until(inp.now, state.prefs)) is not None:
        hold = Decision(person.id, Action.HOLD, Reason.QUIET_HOURS, None, floor, unread.first_id, unread.last_id, held_until)
        return [hold], held_until
    return out, recheck


def _channels(
    inp: CheckInput, state: RecipientState, floor: int, unread: Unread, start: float, deadline: float
) -> tuple[list[Decision], float | None]:
    """Rules 7-8: which channels are due now, and when to look again."""
    person, prefs = state.candidate.person, state.prefs

    def notify(channel: Channel, why: Reason, due_at: float) -> Decision:
        return Decision(person.id, Action.NOTIFY, why, channel, floor, unread.first_id, unread.last_id, due_at)

    out: list[Decision] = []
    pushed = (Channel.WEBPUSH, floor) in state.notified
    push_now = state.has_push and prefs.push and not pushed
    if push_now:
        out.append(notify(Channel.WEBPUSH, Reason.UNREAD, deadline))
    went_push = push_now or pushed
    email_due = max(deadline, start + inp.email_after_seconds) if went_push else deadline
    if push_now and inp.now >= start + inp.email_after_seconds:
        # A first push that comes this late (held by quiet hours, an outage) gets its head start anyway.
        email_due = inp.now + max(0.0, inp.email_after_seconds - inp.grace_seconds)
    if (Channel.EMAIL, floor) in state.notified:
        if not out:
            out.append(_skip(person.id, Reason.ALREADY_NOTIFIED, floor))
        return out, None
    if inp.now < email_due:
        return out, email_due
    if (stop := _channel_stop(person, prefs, Channel.EMAIL)) is not None:
        if not out:
            out.append(_skip(person.id, stop, floor, Channel.EMAIL if stop is Reason.CHANNEL_OFF else None))
    else:
        out.append(notify(Channel.EMAIL, Reason.ESCALATED if went_push else Reason.UNREAD, email_due))
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


def decide_delivery(inp: CheckInput, pending: PendingDelivery) -> Decision:
    """The same rules for one delivery just before sending: NOTIFY means send now, HOLD means not before
    `due_at` (quiet hours), SKIP says why not."""
    manager_id, channel = pending.manager_id, pending.channel
    state = next((s for s in inp.recipients if s.candidate.person.id == manager_id), None)
    if state is None:
        refused = any(r.manager_id == manager_id for r in inp.refused)
        return _skip(manager_id, Reason.TENANT_GUARD if refused else Reason.NOT_RECIPIENT, pending.burst_floor, channel)
    reason, floor, unread = _stop(inp, state)
    if reason is not None or unread is None:
        return _skip(manager_id, reason or Reason.READ, pending.burst_floor, channel)
    if floor != pending.burst_floor:
        # This burst was read or answered; a newer burst has its own check and its own ledger key.
        answered = inp.messages.last_manager_id > pending.burst_floor
        return _skip(manager_id, Reason.ANSWERED if answered else Reason.READ, pending.burst_floor, channel)
    if state.online:
        return _skip(manager_id, Reason.ONLINE, floor, channel)
    if (stop := _channel_stop(state.candidate.person, state.prefs, channel, pending.subscription_owner)) is not None:
        return _skip(manager_id, stop, floor, channel)
    if (held_until := quiet_until(inp.now, state.prefs)) is not None:
        return Decision(manager_id, Action.HOLD, Reason.QUIET_HOURS, channel, floor, unread.first_id, unread.last_id, held_until)
    return Decision(manager_id, Action.NOTIFY, Reason.UNREAD, channel, floor, unread.first_id, unread.last_id)


def recipients_changed(decision: Decision) -> bool:
    """A send-time skip because the dialog's recipients changed: decide the dialog again, so whoever took
    over (a reassigned handoff, the owner after a refusal) hears about the burst."""
    return decision.action is Action.SKIP and decision.reason in (Reason.NOT_RECIPIENT, Reason.TENANT_GUARD)


@dataclass(frozen=True)
class PushedNotice:
    """A push that went out and may still be on a screen."""

    delivery_id: int
    manager_id: int
    subscription_id: int
    burst_floor: int
    last_message_id: int


def clears_due(notices: list[PushedNotice], pointers: Mapping[int, int], last_manager_id: int) -> list[PushedNotice]:
    """Pushes to take back: their manager has read the burst they were told about, or a manager answered
    after the burst began."""
    return [
        n for n in notices
        if pointers.get(n.manager_id, 0) >= n.last_message_id or last_manager_id > n.burst_floor
    ]
