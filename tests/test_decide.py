"""The pure decision, with plain values: every reason, both sides of every deadline."""

from __future__ import annotations

from dataclasses import replace

import pytest

from notifier.decide import (
    Candidate,
    CheckInput,
    DialogFacts,
    Messages,
    Person,
    RecipientState,
    decide,
    resolve_recipients,
)
from notifier.enums import Action, Channel, Reason, Relation

T0 = 1_800_000_000.0
OWNER = Person(1, "owner@example.com", "Ирина")
MEMBER = Person(2, "member@example.com", "Олег")
STRANGER = Person(9, "stranger@example.com", "Чужой")
ADMIN = Person(7, "admin@example.com", "Админ", role="admin")
HANDOFF = DialogFacts(id=100, owner_id=1, handoff_status="requested")


def state(person: Person = OWNER, **kw: object) -> RecipientState:
    return RecipientState(candidate=Candidate(person, Relation.OWNER), **kw)  # type: ignore[arg-type]


def inp(now: float, *states: RecipientState, dialog: DialogFacts = HANDOFF, ids: tuple[int, ...] = (11, 12, 13),
        last_manager: int = 10, grace: float = 60, email_after: float = 300, skip_ai: bool = True) -> CheckInput:
    states = states or (state(),)
    return CheckInput(
        dialog=dialog, messages=Messages.from_ids(ids, last_manager, [s.read_pointer for s in states]),
        recipients=states, refused=(), now=now, seen_at=dict.fromkeys(ids, T0), unseen_at=now - grace,
        grace_seconds=grace, email_after_seconds=email_after, skip_ai_handled=skip_ai,
    )


def only(outcome_decisions: tuple) -> object:  # type: ignore[type-arg]
    assert len(outcome_decisions) == 1, outcome_decisions
    return outcome_decisions[0]


class TestGraceDeadline:
    def test_one_second_before_waits_without_a_decision(self) -> None:
        out = decide(inp(T0 + 59))
        assert out.decisions == ()
        assert out.recheck_at == T0 + 60

    def test_one_second_after_emails_a_recipient_without_push(self) -> None:
        out = decide(inp(T0 + 61))
        d = only(out.decisions)
        assert (d.action, d.channel, d.reason) == (Action.NOTIFY, Channel.EMAIL, Reason.UNREAD)
        assert (d.first_message_id, d.last_message_id, d.burst_floor, d.due_at) == (11, 13, 10, T0 + 60)
        assert out.recheck_at is None


class TestEscalation:
    def test_push_at_grace_then_email_after_email_after(self) -> None:
        s = state(has_push=True)
        out = decide(inp(T0 + 61, s))
        assert [(d.action, d.channel) for d in out.decisions] == [(Action.NOTIFY, Channel.WEBPUSH)]
        assert out.recheck_at == T0 + 300

        pushed = state(has_push=True, notified=frozenset({(Channel.WEBPUSH, 10)}))
        before = decide(inp(T0 + 299, pushed))
        assert before.decisions == () and before.recheck_at == T0 + 300
        after = decide(inp(T0 + 301, pushed))
        d = only(after.decisions)
        assert (d.action, d.channel, d.reason, d.due_at) == (Action.NOTIFY, Channel.EMAIL, Reason.ESCALATED, T0 + 300)

    def test_subscription_gone_after_push_still_waits_for_escalation(self) -> None:
        s = state(has_push=False, notified=frozenset({(Channel.WEBPUSH, 10)}))
        assert decide(inp(T0 + 100, s)).recheck_at == T0 + 300

    def test_emailed_burst_is_not_emailed_again(self) -> None:
        s = state(notified=frozenset({(Channel.EMAIL, 10)}))
        d = only(decide(inp(T0 + 4000, s)).decisions)
        assert (d.action, d.reason) == (Action.SKIP, Reason.ALREADY_NOTIFIED)

    def test_new_burst_after_reading_is_notified_again(self) -> None:
        s = state(read_pointer=12, notified=frozenset({(Channel.EMAIL, 10)}))
        d = only(decide(inp(T0 + 61, s)).decisions)
        assert (d.action, d.channel, d.burst_floor, d.first_message_id) == (Action.NOTIFY, Channel.EMAIL, 12, 13)


class TestBurstStart:
    def test_a_recipient_s_burst_starts_at_its_first_unread_message(self) -> None:
        later = replace(inp(T0, state(read_pointer=12)), seen_at={11: T0, 12: T0, 13: T0 + 200})
        before = decide(replace(later, now=T0 + 259))
        assert before.decisions == () and before.recheck_at == T0 + 260
        d = only(decide(replace(later, now=T0 + 261)).decisions)
        assert (d.action, d.first_message_id, d.burst_floor) == (Action.NOTIFY, 13, 12)

    def test_an_unscheduled_message_is_due_now(self) -> None:
        base = replace(inp(T0 + 10), seen_at={}, unseen_at=T0 + 10 - 60)
        assert only(decide(base).decisions).action is Action.NOTIFY


class TestSkips:
    @pytest.mark.parametrize(
        ("kwargs", "reason"),
        [
            ({"read_pointer": 13}, Reason.READ),
            ({"online": True}, Reason.ONLINE),
        ],
    )
    def test_recipient_state(self, kwargs: dict, reason: Reason) -> None:  # type: ignore[type-arg]
        d = only(decide(inp(T0 + 61, state(**kwargs))).decisions)
        assert (d.action, d.reason) == (Action.SKIP, reason)

    def test_answered_by_manager(self) -> None:
        d = only(decide(inp(T0 + 61, ids=(), last_manager=14)).decisions)
        assert d.reason is Reason.ANSWERED

    def test_read_pointer_only_counts_up_to_its_message(self) -> None:
        d = only(decide(inp(T0 + 61, state(read_pointer=12))).decisions)
        assert (d.action, d.first_message_id, d.last_message_id) == (Action.NOTIFY, 13, 13)

    def test_ai_handling(self) -> None:
        ai = DialogFacts(id=100, owner_id=1, handoff_status="none")
        assert only(decide(inp(T0 + 61, dialog=ai)).decisions).reason is Reason.AI_HANDLING
        for status in ("released", "cancelled", None):
            d = only(decide(inp(T0 + 61, dialog=replace(ai, handoff_status=status))).decisions)
            assert d.reason is Reason.AI_HANDLING

    def test_ai_handling_can_be_configured_to_notify(self) -> None:
        ai = DialogFacts(id=100, owner_id=1, handoff_status="none")
        assert only(decide(inp(T0 + 61, dialog=ai, skip_ai=False)).decisions).action is Action.NOTIFY

    def test_taken_over_needs_a_human(self) -> None:
        taken = DialogFacts(id=100, owner_id=1, handoff_status="none", is_taken_over=True)
        assert only(decide(inp(T0 + 61, dialog=taken)).decisions).action is Action.NOTIFY

    def test_dialog_ended(self) -> None:
        ended = replace(HANDOFF, ended_at=T0 + 5, last_visitor_at=T0)
        assert only(decide(inp(T0 + 61, dialog=ended)).decisions).reason is Reason.DIALOG_ENDED

    def test_inactive_account(self) -> None:
        d = only(decide(inp(T0 + 61, state(replace(OWNER, status="blocked")))).decisions)
        assert d.reason is Reason.INACTIVE

    def test_no_address(self) -> None:
        d = only(decide(inp(T0 + 61, state(replace(OWNER, email=None)))).decisions)
        assert (d.action, d.reason) == (Action.SKIP, Reason.NO_ADDRESS)

    def test_online_is_only_judged_at_the_deadline(self) -> None:
        out = decide(inp(T0 + 30, state(online=True)))
        assert out.decisions == () and out.recheck_at == T0 + 60


class TestRecipients:
    def test_owner_and_team_when_no_active_handoff(self) -> None:
        people = {1: OWNER, 2: MEMBER}
        cands, refused = resolve_recipients(HANDOFF, people, frozenset({2}))
        assert [(c.person.id, c.relation) for c in cands] == [(1, Relation.OWNER), (2, Relation.TEAM)]
        assert refused == ()

    def test_active_handoff_goes_to_the_assigned_manager_only(self) -> None:
        dialog = DialogFacts(id=100, owner_id=1, handoff_status="active", assigned_manager_id=2)
        cands, refused = resolve_recipients(dialog, {1: OWNER, 2: MEMBER}, frozenset({2}))
        assert [(c.person.id, c.relation) for c in cands] == [(2, Relation.ASSIGNED)]
        assert refused == ()

    def test_assigned_manager_of_another_tenant_is_refused_and_owner_notified(self) -> None:
        dialog = DialogFacts(id=100, owner_id=1, handoff_status="active", assigned_manager_id=9)
        cands, refused = resolve_recipients(dialog, {1: OWNER, 9: STRANGER}, frozenset())
        assert [c.person.id for c in cands] == [1]
        assert [(r.manager_id, r.action, r.reason) for r in refused] == [(9, Action.SKIP, Reason.TENANT_GUARD)]

    def test_missing_assigned_manager_is_refused(self) -> None:
        dialog = DialogFacts(id=100, owner_id=1, handoff_status="active", assigned_manager_id=404)
        cands, refused = resolve_recipients(dialog, {1: OWNER}, frozenset())
        assert [c.person.id for c in cands] == [1] and refused[0].reason is Reason.TENANT_GUARD

    def test_admin_role_passes_the_guard(self) -> None:
        dialog = DialogFacts(id=100, owner_id=1, handoff_status="active", assigned_manager_id=7)
        cands, refused = resolve_recipients(dialog, {1: OWNER, 7: ADMIN}, frozenset())
        assert [c.person.id for c in cands] == [7] and refused == ()

    def test_refusals_are_part_of_the_outcome(self) -> None:
        dialog = DialogFacts(id=100, owner_id=1, handoff_status="active", assigned_manager_id=9)
        cands, refused = resolve_recipients(dialog, {1: OWNER, 9: STRANGER}, frozenset())
        base = inp(T0 + 61, dialog=dialog)
        out = decide(replace(base, recipients=tuple(RecipientState(c) for c in cands), refused=refused))
        assert [(d.manager_id, d.action) for d in out.decisions] == [(9, Action.SKIP), (1, Action.NOTIFY)]
        assert [d.manager_id for d in out.notify] == [1]
