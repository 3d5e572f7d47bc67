"""One decision, made twice: what changes while a delivery waits for its retry stops it at send time.

Each scenario holds a delivery back with a real transient refusal (SMTP 421, push service 500), changes the
host's or our data the way the host would, then lets the retry run against real Redis, the database and a
real SMTP server or push receiver, and counts what arrives.
"""

from __future__ import annotations

import datetime as dt

from freezegun import freeze_time
from sqlalchemy import select

from notifier import models
from notifier.enums import DeliveryStatus
from notifier.runtime import Runtime
from tests.pushservice import PushService
from tests.smtpserver import SmtpServer
from tests.support import Drive, Host
from worker import client

OWNER, MEMBER, OTHER_MEMBER, OTHER_TENANT = 1, 2, 3, 9
T0 = dt.datetime.now(dt.UTC).replace(microsecond=0, tzinfo=None)  # the push service checks JWT expiry


def burst(host: Host, texts: list[str], dialog_id: int = 100) -> list[int]:
    ids = [host.message(dialog_id, t) for t in texts]
    for mid in ids:
        assert client.schedule_fallback(dialog_id, mid)
    return ids


def deliveries(rt: Runtime) -> list[tuple[int, str, str, str | None]]:
    d = models.deliveries
    with rt.engine.connect() as conn:
        rows = conn.execute(select(d.c.manager_id, d.c.channel, d.c.status, d.c.reason).order_by(d.c.id))
        return [(r.manager_id, r.channel, r.status, r.reason) for r in rows]


def send_time_decisions(rt: Runtime) -> list[tuple[int | None, str, str | None, str]]:
    """Decisions recorded at send time carry their channel on a skip; the check's skips carry none."""
    d = models.decisions
    with rt.engine.connect() as conn:
        rows = conn.execute(select(d).where(d.c.action == "skip", d.c.channel.is_not(None)).order_by(d.c.id))
        return [(r.manager_id, r.action, r.channel, r.reason) for r in rows]


def test_a_team_member_removed_while_their_email_waits_gets_nothing(
    rt: Runtime, hostdb: Host, smtp_server: SmtpServer
) -> None:
    hostdb.user(OWNER, "")  # the owner has no address: only the member's email is in play
    hostdb.user(MEMBER, "member@example.com", "Олег")
    hostdb.dialog(100, OWNER)
    client.add_team_member(OWNER, MEMBER)
    smtp_server.refuse_next(1)  # 421: the member's email waits for its retry
    drive = Drive(rt)
    with freeze_time(T0) as clock:
        burst(hostdb, ["Здравствуйте", "Есть кто?"])
        clock.tick(61)
        [first] = drive()
        assert first.status is DeliveryStatus.PENDING and smtp_server.refusals == 1
        assert client.remove_team_member(OWNER, MEMBER) is True
        for _ in range(3):
            clock.tick(3600)  # past any backoff: the retry runs
            drive()
    assert smtp_server.messages == []
    assert deliveries(rt) == [(MEMBER, "email", "skipped", "not_recipient")]
    assert send_time_decisions(rt) == [(MEMBER, "skip", "email", "not_recipient")]


def test_a_reassigned_handoff_stops_the_first_managers_email_and_tells_the_new_one(
    rt: Runtime, hostdb: Host, smtp_server: SmtpServer
) -> None:
    hostdb.user(OWNER, "owner@example.com", "Ирина")
    hostdb.user(MEMBER, "member@example.com", "Олег")
    hostdb.user(OTHER_MEMBER, "other@example.com", "Вера")
    client.add_team_member(OWNER, MEMBER)
    client.add_team_member(OWNER, OTHER_MEMBER)
    hostdb.dialog(100, OWNER, handoff_status="active", assigned_manager_id=MEMBER)
    smtp_server.refuse_next(1)
    drive = Drive(rt)
    with freeze_time(T0) as clock:
        burst(hostdb, ["Мне нужен человек"])
        clock.tick(61)
        [first] = drive()
        assert first.status is DeliveryStatus.PENDING  # Олег's email waits for its retry
        hostdb.update_dialog(100, assigned_manager_id=OTHER_MEMBER)  # the host reassigns the handoff
        for _ in range(3):
            clock.tick(3600)
            drive()
    [mail] = smtp_server.wait_for(1)
    assert mail.rcpt_tos == ("other@example.com",)  # the new assignee hears about the burst, once
    assert "Мне нужен человек" in mail.part("plain")
    assert deliveries(rt) == [(MEMBER, "email", "skipped", "not_recipient"), (OTHER_MEMBER, "email", "sent", None)]
    assert send_time_decisions(rt) == [(MEMBER, "skip", "email", "not_recipient")]


def test_a_subscription_resaved_by_another_manager_never_receives_the_first_managers_push(
    prt: Runtime, hostdb: Host, push_service: PushService, smtp_server: SmtpServer
) -> None:
    hostdb.user(OWNER, "", "Ирина")  # push only: no email to escalate to
    hostdb.user(OTHER_TENANT, "stranger@other.example", "Чужой")
    hostdb.dialog(100, OWNER)
    laptop = push_service.new_subscription("shared-laptop")
    client.save_subscription(OWNER, laptop, "Firefox")
    push_service.script("shared-laptop", [500])  # the first push is refused: it waits for its retry
    drive = Drive(prt)
    with freeze_time(T0) as clock:
        burst(hostdb, ["Секретный вопрос по заказу"])
        clock.tick(61)
        [first] = drive()
        assert first.status is DeliveryStatus.PENDING
        client.save_subscription(OTHER_TENANT, laptop, "Firefox")  # the browser changes hands
        for _ in range(3):
            clock.tick(600)
            drive()
    assert push_service.received_for("shared-laptop") == []  # refused once, never delivered
    assert deliveries(prt) == [(OWNER, "webpush", "skipped", "subscription_moved")]
    assert send_time_decisions(prt) == [(OWNER, "skip", "webpush", "subscription_moved")]
    assert smtp_server.messages == []


def test_the_owner_is_compared_every_time_not_only_once(
    prt: Runtime, hostdb: Host, push_service: PushService
) -> None:
    """Moved away and back again before the retry: the push goes to its rightful owner after all."""
    hostdb.user(OWNER, "", "Ирина")
    hostdb.dialog(100, OWNER)
    laptop = push_service.new_subscription("laptop")
    client.save_subscription(OWNER, laptop)
    push_service.script("laptop", [500])
    drive = Drive(prt)
    with freeze_time(T0) as clock:
        burst(hostdb, ["ау"])
        clock.tick(61)
        drive()
        client.save_subscription(OTHER_TENANT, laptop)
        client.save_subscription(OWNER, laptop)
        clock.tick(600)
        drive()
    assert [p.name for p in push_service.wait_for(1)] == ["laptop"]
    assert deliveries(prt) == [(OWNER, "webpush", "sent", None)]


def test_read_while_the_email_waits_is_recorded_at_send_time(rt: Runtime, hostdb: Host, smtp_server: SmtpServer) -> None:
    hostdb.user(OWNER, "owner@example.com")
    hostdb.dialog(100, OWNER)
    smtp_server.refuse_next(1)
    drive = Drive(rt)
    with freeze_time(T0) as clock:
        ids = burst(hostdb, ["ау"])
        clock.tick(61)
        drive()
        client.mark_read(100, OWNER, ids[-1])
        clock.tick(3600)
        drive()
    assert smtp_server.messages == []
    assert deliveries(rt) == [(OWNER, "email", "skipped", "read")]
    assert send_time_decisions(rt) == [(OWNER, "skip", "email", "read")]
