"""A chunk of checks reads its dialogs together (`snapshot.load_dialogs`) and records them in one transaction:
each snapshot must be exactly the one its dialog gives when read alone, whatever the other dialogs of the
chunk hold, and a write that fails for one dialog must cost only that dialog."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

from sqlalchemy import Engine, select, text

from notifier import ledger, models, snapshot
from notifier.check import dispatch, run_checks
from notifier.config import Settings
from notifier.decide import Decision
from notifier.enums import Action, Channel, Reason
from notifier.runtime import Runtime
from tests.conftest import runtime_for
from tests.pushservice import PushService
from tests.support import Host
from worker import client

OWNER_A, OWNER_B, MEMBER, ASSIGNED, STRANGER = 1, 2, 3, 4, 5


first: dict[int, int] = {}


def scene(host: Host, push_service: PushService) -> list[int]:
    """Dialogs that differ in every fact a snapshot holds, sharing managers across dialogs."""
    host.user(OWNER_A, "a@example.com")
    host.user(OWNER_B, "b@example.com")
    host.user(MEMBER, "member@example.com")
    host.user(ASSIGNED, "assigned@example.com")
    host.user(STRANGER, "stranger@example.com")
    client.add_team_member(OWNER_A, MEMBER)
    client.add_team_member(OWNER_A, ASSIGNED)
    client.save_subscription(MEMBER, push_service.new_subscription("member"))
    host.dialog(10, OWNER_A)  # owner and team
    host.dialog(11, OWNER_A, handoff_status="active", assigned_manager_id=ASSIGNED)  # assigned
    host.dialog(12, OWNER_B, handoff_status="active", assigned_manager_id=STRANGER)  # refused by the guard
    host.dialog(13, OWNER_B, ended=True)
    host.dialog(14, OWNER_A)  # no messages at all
    first.clear()
    for dialog_id in (10, 11, 12, 13):
        for n in range(3):
            message_id = host.message(dialog_id, f"вопрос {n}")
            first.setdefault(dialog_id, message_id)
            client.schedule_fallback(dialog_id, message_id)
    host.message(11, "ответ", sender="manager")
    last = host.message(11, "ещё вопрос")
    client.schedule_fallback(11, last)
    client.mark_read(10, MEMBER, first[10])  # a pointer in dialog 10 only, below its newest message
    client.set_preferences(OWNER_A, muted_dialogs=[10], language="en")
    return [10, 11, 12, 13, 14, 999]  # 999: no such dialog


def test_each_dialog_of_a_chunk_reads_as_if_alone(prt: Runtime, hostdb: Host, push_service: PushService) -> None:
    ids = scene(hostdb, push_service)
    now = time.time() + 120
    # Deliveries in the ledger, so that "already notified" differs between dialogs too.
    checks: list[int] = []
    dispatch(prt, checks.extend, lambda _d: None, now)
    for _ in run_checks(prt, [d for d in checks if d in (10, 11)], lambda _d: None, now):
        pass
    with prt.engine.connect() as conn:
        together = snapshot.load_dialogs(conn, ids, now, push_enabled=True)
        alone = {d: snapshot.load_dialogs(conn, [d], now, push_enabled=True).get(d) for d in ids}
    assert set(together) == {10, 11, 12, 13, 14}
    assert alone[999] is None
    for dialog_id in together:
        assert together[dialog_id] == alone[dialog_id], dialog_id
    # The facts differ between dialogs (or the comparison above would prove little).
    assert together[10].pointers == {MEMBER: first[10]}
    assert together[11].pointers == {}
    assert together[10].stored[OWNER_A].muted_dialogs == frozenset({10})
    assert together[11].candidates[0].person.id == ASSIGNED and len(together[11].candidates) == 1
    assert together[12].refused and together[12].facts.owner_id == OWNER_B
    assert together[10].notified and not together[12].notified
    assert together[10].with_push == frozenset({MEMBER}) and together[12].with_push == frozenset()
    assert together[14].messages.last_visitor_id == 0 and together[11].messages.last_manager_id > 0


def _refuse_decisions_of(engine: Engine, dialog_id: int) -> Callable[[], None]:
    """A trigger in the database itself that refuses to record decisions about one dialog (a write that
    fails for that dialog only, as a bad row would); returns how to remove it."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text(
                "CREATE FUNCTION refuse_decision() RETURNS trigger AS $$ BEGIN "
                f"IF NEW.dialog_id = {dialog_id} THEN RAISE EXCEPTION 'refused by the test'; END IF; "
                "RETURN NEW; END $$ LANGUAGE plpgsql"))
            conn.execute(text("CREATE TRIGGER refuse BEFORE INSERT ON notifier_decisions "
                              "FOR EACH ROW EXECUTE FUNCTION refuse_decision()"))
        else:
            conn.execute(text(f"CREATE TRIGGER refuse BEFORE INSERT ON notifier_decisions WHEN NEW.dialog_id = "
                              f"{dialog_id} BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"))

    def remove() -> None:
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(text("DROP TRIGGER refuse ON notifier_decisions"))
                conn.execute(text("DROP FUNCTION refuse_decision()"))
            else:
                conn.execute(text("DROP TRIGGER refuse"))

    return remove


def test_a_write_that_fails_for_one_dialog_costs_only_that_dialog(rt: Runtime, hostdb: Host) -> None:
    """The chunk is recorded in one transaction; when that fails, each dialog is recorded alone."""
    for owner in (1, 2, 3):
        hostdb.user(owner, f"owner{owner}@example.com")
        hostdb.dialog(1000 + owner, owner)
        assert client.schedule_fallback(1000 + owner, hostdb.message(1000 + owner, "вопрос"))
    now = time.time() + 61
    checks: list[int] = []
    dispatch(rt, checks.extend, lambda _d: None, now)
    assert sorted(checks) == [1001, 1002, 1003]
    remove = _refuse_decisions_of(rt.engine, 1002)
    try:
        created: list[int] = []
        results = dict(run_checks(rt, sorted(checks), created.append, now))
    finally:
        remove()
    assert results[1002] is None
    assert results[1001] is not None and results[1003] is not None
    assert len(created) == 2 and set(created) == set(results[1001].delivery_ids) | set(results[1003].delivery_ids)
    with rt.engine.connect() as conn:
        dialogs = sorted(conn.execute(select(models.deliveries.c.dialog_id)).scalars())
    assert dialogs == [1001, 1003]
    assert rt.store.counts()["pending"] == 1  # 1002 waits for its retry; the others are done


def test_a_chunk_creates_each_delivery_once_and_tells_each_dialog_which_are_new(rt: Runtime) -> None:
    """`ledger.claim_new_many`, `record_decisions_many` and `mark_covered_many`: one statement each for a whole
    chunk, each dialog getting back exactly the ids created for it, in the order it asked."""
    now = time.time()

    def notify(manager: int, channel: Channel, floor: int = 5) -> Decision:
        return Decision(manager, Action.NOTIFY, Reason.UNREAD, channel, floor, floor + 1, floor + 2, now)

    with rt.engine.begin() as conn:
        [earlier] = ledger.claim_new(conn, 2, notify(7, Channel.EMAIL), [""], now)  # dialog 2's email exists already
    wanted = [
        (1, notify(7, Channel.WEBPUSH), ["11", "12"]),
        (2, notify(7, Channel.EMAIL), [""]),
        (2, notify(8, Channel.WEBPUSH), ["13"]),
        (3, notify(7, Channel.EMAIL, floor=9), [""]),
        (1, notify(8, Channel.EMAIL), [""]),
    ]
    with rt.engine.begin() as conn:
        created = ledger.claim_new_many(conn, wanted, now)
        again = ledger.claim_new_many(conn, wanted, now)
        ledger.record_decisions_many(conn, [(1, [w[1] for w in wanted if w[0] == 1]), (3, [wanted[3][1]])], now)
        ledger.mark_covered_many(conn, [(1, 40), (3, 9), (1, 30)], now)
    assert again == {}  # every one exists now
    d = models.deliveries
    with rt.engine.connect() as conn:
        rows = conn.execute(select(d.c.id, d.c.dialog_id, d.c.manager_id, d.c.channel, d.c.target).order_by(d.c.id)).all()
        decided = sorted(conn.execute(select(models.decisions.c.dialog_id, models.decisions.c.manager_id)).all())
        covered = dict(conn.execute(select(models.dialog_checks.c.dialog_id, models.dialog_checks.c.covered_up_to)).all())
    by_key = {(r.dialog_id, r.manager_id, r.channel, r.target): int(r.id) for r in rows}
    assert len(rows) == 6 and by_key[(2, 7, "email", "")] == earlier
    push, email = Channel.WEBPUSH, Channel.EMAIL
    assert created == {
        1: [(by_key[(1, 7, "webpush", "11")], push), (by_key[(1, 7, "webpush", "12")], push),
            (by_key[(1, 8, "email", "")], email)],
        2: [(by_key[(2, 8, "webpush", "13")], push)],
        3: [(by_key[(3, 7, "email", "")], email)],
    }
    assert decided == [(1, 7), (1, 8), (3, 7)]
    assert covered == {1: 40, 3: 9}  # the highest of dialog 1's two


def test_a_chunk_hands_out_its_pushes_before_its_emails(push_settings: Settings, engine: Engine, redis_server: object,
                                                       hostdb: Host, push_service: PushService) -> None:
    """Three dialogs whose push and email fall due together (NOTIFIER_EMAIL_AFTER_SECONDS equal to the grace):
    the chunk enqueues the three pushes first, then the three emails (not push, email, push, email...)."""
    settings = replace(push_settings, email_after_seconds=push_settings.grace_seconds)
    with runtime_for(settings) as rt:
        for owner in (1, 2, 3):
            hostdb.user(owner, f"owner{owner}@example.com")
            client.save_subscription(owner, push_service.new_subscription(f"phone-{owner}"))
            hostdb.dialog(100 + owner, owner)
            assert client.schedule_fallback(100 + owner, hostdb.message(100 + owner, "вопрос"))
        now = time.time() + settings.grace_seconds + 1
        checks: list[int] = []
        dispatch(rt, checks.extend, lambda _d: None, now)
        enqueued: list[int] = []
        results = dict(run_checks(rt, checks, enqueued.append, now))
    assert sorted(results) == [101, 102, 103]
    with engine.connect() as conn:
        channel_of = dict(conn.execute(select(models.deliveries.c.id, models.deliveries.c.channel)).all())
    assert [channel_of[i] for i in enqueued] == ["webpush"] * 3 + ["email"] * 3
    assert sorted(enqueued) == sorted(i for r in results.values() if r is not None for i in r.delivery_ids)
