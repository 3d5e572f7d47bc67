"""The pipeline end to end against real Redis, the database and an SMTP server, with a frozen clock."""

from __future__ import annotations

import threading

import pytest
from freezegun import freeze_time
from sqlalchemy import select

from notifier import models
from notifier.check import run_check
from notifier.deliver import run_delivery
from notifier.enums import Channel, DeliveryStatus
from notifier.runtime import Runtime
from tests.smtpserver import SmtpServer
from tests.support import Drive, Host
from worker import client

T0 = "2026-11-26 12:00:00"
OWNER, MEMBER, STRANGER, ADMIN = 1, 2, 9, 7


def decisions(rt: Runtime, dialog_id: int = 100) -> list[tuple[int | None, str, str | None, str]]:
    d = models.decisions
    with rt.engine.connect() as conn:
        query = select(d.c.manager_id, d.c.action, d.c.channel, d.c.reason).where(d.c.dialog_id == dialog_id)
        rows = conn.execute(query.order_by(d.c.id))
        return [tuple(r) for r in rows]  # type: ignore[misc]


@pytest.fixture
def tenant(hostdb: Host) -> Host:
    hostdb.user(OWNER, "owner@example.com", "Ирина")
    hostdb.user(MEMBER, "member@example.com", "Олег")
    hostdb.user(STRANGER, "stranger@other.example", "Чужой")
    hostdb.assistant(5, OWNER, "Магазин Цветов")
    return hostdb


def visitor_burst(host: Host, texts: list[str], dialog_id: int = 100) -> list[int]:
    ids = []
    for text in texts:
        mid = host.message(dialog_id, text)
        assert client.schedule_fallback(dialog_id, mid)
        ids.append(mid)
    return ids


def test_email_only_after_the_grace_deadline_listing_the_whole_burst(
    rt: Runtime, tenant: Host, drive: Drive, smtp_server: SmtpServer
) -> None:
    tenant.dialog(100, OWNER, assistant_id=5)
    with freeze_time(T0) as clock:
        visitor_burst(tenant, ["Здравствуйте! 🌷", "Есть ли доставка сегодня?"])
        clock.tick(20)
        visitor_burst(tenant, ["Жду ответа"])
        clock.tick(38)  # 58 s after the first message: one second before the deadline
        clock.tick(1)
        assert drive() == []
        assert smtp_server.messages == [] and decisions(rt) == []
        clock.tick(2)  # one second after
        outcomes = drive()
    assert [o.status for o in outcomes] == [DeliveryStatus.SENT]
    [mail] = smtp_server.wait_for(1)
    assert mail.rcpt_tos == ("owner@example.com",)
    text = mail.part("plain")
    for fragment in ("Здравствуйте! 🌷", "Есть ли доставка сегодня?", "Жду ответа", "Анна Петрова", "Магазин Цветов"):
        assert fragment in text
    assert text.index("Здравствуйте") < text.index("Жду ответа")  # oldest first
    assert "https://app.replyx.test/dialogs?dialog_id=100" in mail.part("html")
    assert decisions(rt) == [(OWNER, "notify", "email", "unread")]


def test_burst_gives_one_email_and_later_checks_skip(rt: Runtime, tenant: Host, drive: Drive, smtp_server: SmtpServer) -> None:
    tenant.dialog(100, OWNER)
    with freeze_time(T0) as clock:
        visitor_burst(tenant, ["раз"])
        clock.tick(61)
        drive()
        visitor_burst(tenant, ["два", "три"])  # same burst: still unread, not answered
        clock.tick(61)
        drive()
        clock.tick(600)
        drive()
    assert len(smtp_server.wait_for(1)) == 1
    assert decisions(rt) == [(OWNER, "notify", "email", "unread"), (OWNER, "skip", None, "already_notified")]


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        ("read", "read"),
        ("answered", "answered"),
        ("ai", "ai_handling"),
        ("ended", "dialog_ended"),
        ("no_address", "no_address"),
        ("online", "online"),
    ],
)
def test_skips_are_recorded_with_their_reason(
    rt: Runtime, hostdb: Host, drive: Drive, smtp_server: SmtpServer, setup: str, reason: str
) -> None:
    hostdb.user(OWNER, "" if setup == "no_address" else "owner@example.com")
    hostdb.dialog(100, OWNER, handoff_status="none" if setup == "ai" else "requested", ended=setup == "ended")
    with freeze_time(T0) as clock:
        ids = visitor_burst(hostdb, ["Алло?", "<b>ау</b>"])
        hostdb.message(100, "Я AI-ассистент, чем помочь?", sender="assistant")  # never counts as an answer
        if setup == "read":
            client.mark_read(100, OWNER, ids[-1])
        if setup == "answered":
            hostdb.message(100, "Здравствуйте, уже смотрю", sender="manager")
        clock.tick(40)
        if setup == "online":
            client.presence.touch(OWNER, 100)
        clock.tick(21)
        drive()
    assert smtp_server.messages == []
    assert decisions(rt) == [(OWNER, "skip", None, reason)]


def test_presence_expires_without_heartbeat(rt: Runtime, tenant: Host, drive: Drive, smtp_server: SmtpServer) -> None:
    tenant.dialog(100, OWNER)
    with freeze_time(T0) as clock:
        client.presence.touch(OWNER, 100)
        visitor_burst(tenant, ["есть кто?"])
        clock.tick(44)
        assert client.presence.connection_stats()["connection_details"]["admin_connections"] == 1
        clock.tick(17)  # 61 s: the 45 s presence has lapsed, nobody is looking
        assert client.presence.connection_stats()["connection_details"]["admin_connections"] == 0
        drive()
    assert len(smtp_server.wait_for(1)) == 1


def test_presence_on_another_dialog_does_not_count(rt: Runtime, tenant: Host, drive: Drive, smtp_server: SmtpServer) -> None:
    tenant.dialog(100, OWNER)
    with freeze_time(T0) as clock:
        visitor_burst(tenant, ["есть кто?"])
        clock.tick(50)
        client.presence.touch(OWNER, 555)
        client.presence.touch(OWNER)
        clock.tick(11)
        drive()
    assert len(smtp_server.wait_for(1)) == 1


def test_tenant_guard_refuses_a_foreign_assigned_manager_and_notifies_the_owner(
    rt: Runtime, tenant: Host, drive: Drive, smtp_server: SmtpServer
) -> None:
    tenant.dialog(100, OWNER, handoff_status="active", assigned_manager_id=STRANGER)
    with freeze_time(T0) as clock:
        visitor_burst(tenant, ["помогите"])
        clock.tick(61)
        drive()
    mails = smtp_server.wait_for(1)
    assert [m.rcpt_tos for m in mails] == [("owner@example.com",)]
    assert decisions(rt) == [(STRANGER, "skip", None, "tenant_guard"), (OWNER, "notify", "email", "unread")]


def test_assigned_team_member_and_admin(rt: Runtime, tenant: Host, drive: Drive, smtp_server: SmtpServer) -> None:
    tenant.user(ADMIN, "admin@replyx.example", "Админ", role="admin")
    tenant.user(3, "inactive@example.com", status="blocked")
    client.add_team_member(OWNER, MEMBER)
    client.add_team_member(OWNER, 3)
    tenant.dialog(100, OWNER, handoff_status="active", assigned_manager_id=MEMBER)
    tenant.dialog(200, OWNER, handoff_status="active", assigned_manager_id=ADMIN)
    tenant.dialog(300, OWNER, handoff_status="requested")
    with freeze_time(T0) as clock:
        for dialog_id in (100, 200, 300):
            visitor_burst(tenant, ["вопрос"], dialog_id)
        clock.tick(61)
        drive()
    got = sorted(m.rcpt_tos[0] for m in smtp_server.wait_for(4))
    assert got == ["admin@replyx.example", "member@example.com", "member@example.com", "owner@example.com"]
    assert (3, "skip", None, "inactive") in decisions(rt, 300)


def test_same_check_twice_and_racing_checks_send_one_email(
    rt: Runtime, tenant: Host, smtp_server: SmtpServer
) -> None:
    tenant.dialog(100, OWNER)
    with freeze_time(T0) as clock:
        visitor_burst(tenant, ["один", "два"])
        clock.tick(61)
        first = run_check(rt, 100)
        again = run_check(rt, 100)
        results: list[tuple[int, ...]] = []
        barrier = threading.Barrier(4)

        def race() -> None:
            barrier.wait()
            results.append(run_check(rt, 100).delivery_ids)

        threads = [threading.Thread(target=race) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ids = [*first.delivery_ids, *again.delivery_ids, *(i for r in results for i in r)]
        assert len(ids) == 1
        assert run_delivery(rt, ids[0]).status is DeliveryStatus.SENT
        assert run_delivery(rt, ids[0]).status is None  # a second run of the same task sends nothing
    assert len(smtp_server.wait_for(1)) == 1


def test_read_after_decision_cancels_the_send(rt: Runtime, tenant: Host, smtp_server: SmtpServer) -> None:
    tenant.dialog(100, OWNER)
    with freeze_time(T0) as clock:
        ids = visitor_burst(tenant, ["ау"])
        clock.tick(61)
        [delivery_id] = run_check(rt, 100).delivery_ids
        client.mark_read(100, OWNER, ids[0])
        outcome = run_delivery(rt, delivery_id)
    assert (outcome.status, outcome.reason) == (DeliveryStatus.SKIPPED, "read")
    assert smtp_server.messages == []


def test_injection_attempts_stay_text(rt: Runtime, hostdb: Host, drive: Drive, smtp_server: SmtpServer) -> None:
    hostdb.user(OWNER, "owner@example.com")
    hostdb.dialog(100, OWNER, first_name="Eve\r\nBcc: victim@example.com\r\nX-Evil: 1", last_name="<img src=x onerror=alert(1)>")
    with freeze_time(T0) as clock:
        visitor_burst(hostdb, ["<script>alert('x')</script>", "Привет 👋🏽 мир"])
        clock.tick(61)
        drive()
    [mail] = smtp_server.wait_for(1)
    msg = mail.message
    assert mail.rcpt_tos == ("owner@example.com",)
    assert msg["Bcc"] is None and msg["X-Evil"] is None
    assert "\n" not in str(msg["Subject"]) and "\r" not in str(msg["Subject"])
    html = mail.part("html")
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<img src=x" not in html
    assert "Привет 👋🏽 мир" in mail.part("plain") and "Привет 👋🏽 мир" in html


def test_retry_keeps_the_message_id(rt: Runtime, tenant: Host, smtp_server: SmtpServer) -> None:
    tenant.dialog(100, OWNER)
    with freeze_time(T0) as clock:
        visitor_burst(tenant, ["ау"])
        clock.tick(61)
        [delivery_id] = run_check(rt, 100).delivery_ids
        smtp_server.refuse_next(1)
        first = run_delivery(rt, delivery_id)
        assert first.status is DeliveryStatus.PENDING and first.retry_in is not None
        clock.tick(first.retry_in - 1)
        assert run_delivery(rt, delivery_id).status is None  # not before its backoff
        clock.tick(2)
        assert run_delivery(rt, delivery_id).status is DeliveryStatus.SENT
    [mail] = smtp_server.wait_for(1)
    assert smtp_server.refusals == 1
    assert mail.message["Message-ID"] == f"<notifier.{delivery_id}.d100@replyx.test>"
    with rt.engine.connect() as conn:
        row = conn.execute(select(models.deliveries).where(models.deliveries.c.id == delivery_id)).one()
    assert (row.status, row.attempts, row.message_ref) == ("sent", 2, mail.message["Message-ID"])


def test_one_smtp_connection_is_reused(rt: Runtime, tenant: Host, drive: Drive, smtp_server: SmtpServer) -> None:
    for dialog_id in (100, 101, 102):
        tenant.dialog(dialog_id, OWNER)
    with freeze_time(T0) as clock:
        for dialog_id in (100, 101, 102):
            visitor_burst(tenant, ["ау"], dialog_id)
        clock.tick(61)
        drive()
    assert len(smtp_server.wait_for(3)) == 3
    assert rt.sender(Channel.EMAIL).connections_opened == 1  # type: ignore[attr-defined]


def test_english_recipient(rt: Runtime, tenant: Host, drive: Drive, smtp_server: SmtpServer) -> None:
    client.set_language(OWNER, "en")
    tenant.dialog(100, OWNER)
    with freeze_time(T0) as clock:
        visitor_burst(tenant, ["Hello there"])
        clock.tick(61)
        drive()
    [mail] = smtp_server.wait_for(1)
    assert "Hello there" in mail.part("plain")
    assert "Посетитель" not in mail.part("plain") and "Новое" not in str(mail.message["Subject"])
