"""Web Push through the whole pipeline, against the loopback push service that checks VAPID and decrypts."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from freezegun import freeze_time
from sqlalchemy import func, insert, select

from notifier import models
from notifier.config import load_settings, set_settings
from notifier.enums import Channel, DeliveryStatus
from notifier.errors import InvalidInput
from notifier.runtime import Runtime
from tests.pushservice import PushService
from tests.smtpserver import SmtpServer
from tests.support import Drive, Host
from worker import client

OWNER, MEMBER = 1, 2
# Close to the real clock: the push service checks the JWT's exp against the time it sees.
T0 = dt.datetime.now(dt.UTC).replace(microsecond=0, tzinfo=None)


@pytest.fixture
def tenant(hostdb: Host) -> Host:
    hostdb.user(OWNER, "owner@example.com", "Ирина")
    hostdb.user(MEMBER, "member@example.com", "Олег")
    hostdb.dialog(100, OWNER)
    return hostdb


def count_subscriptions(rt: Runtime) -> int:
    with rt.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(models.push_subscriptions)).scalar_one())


def burst(host: Host, texts: list[str], dialog_id: int = 100) -> list[int]:
    ids = [host.message(dialog_id, t) for t in texts]
    for mid in ids:
        assert client.schedule_fallback(dialog_id, mid)
    return ids


class TestSubscriptions:
    def test_same_endpoint_updates_never_duplicates(self, prt: Runtime, push_service: PushService) -> None:
        sub = push_service.new_subscription("laptop")
        first = client.save_subscription(OWNER, sub, "Firefox")
        again = client.save_subscription(MEMBER, sub, "Chrome")
        assert first == again and count_subscriptions(prt) == 1
        with prt.engine.connect() as conn:
            row = conn.execute(select(models.push_subscriptions)).one()
        assert (row.manager_id, row.user_agent) == (MEMBER, "Chrome")
        assert client.delete_subscription(sub["endpoint"]) is True
        assert client.delete_subscription(sub["endpoint"]) is False
        assert count_subscriptions(prt) == 0

    @pytest.mark.parametrize(
        ("mutate", "message"),
        [
            (lambda s: s.pop("keys"), "keys are missing"),
            (lambda s: s["keys"].pop("auth"), "p256dh and keys.auth are required"),
            (lambda s: s["keys"].update(p256dh="не base64!"), "not URL-safe base64"),
            (lambda s: s["keys"].update(p256dh="BA" + "A" * 85), "not a point on the P-256 curve"),
            (lambda s: s["keys"].update(auth="AAAAAAAAAAAAAAAAAAAA"), "auth must be 16 bytes"),
            (lambda s: s.update(endpoint="http://fcm.googleapis.com/x"), "must use https"),
        ],
    )
    def test_malformed_input_is_refused_clearly(self, prt: Runtime, push_service: PushService, mutate, message) -> None:  # type: ignore[no-untyped-def]
        sub = push_service.new_subscription("bad")
        mutate(sub)
        with pytest.raises(InvalidInput, match=message):
            client.save_subscription(OWNER, sub)
        assert count_subscriptions(prt) == 0

    @pytest.mark.parametrize(
        "endpoint",
        ["http://127.0.0.1:6379/", "https://10.0.0.5/push/x", "https://192.168.1.1/x", "https://evil.example.com/x",
         "https://169.254.169.254/latest/meta-data", "ftp://fcm.googleapis.com/x"],
    )
    def test_ssrf_endpoints_are_refused_at_save(self, base_env: dict[str, str], engine, push_service: PushService,  # type: ignore[no-untyped-def]
                                                endpoint: str) -> None:
        set_settings(load_settings(base_env))  # the default allow-list: public push services only
        sub = push_service.new_subscription("x")
        sub["endpoint"] = endpoint
        with pytest.raises(InvalidInput):
            client.save_subscription(OWNER, sub)


def test_push_to_every_browser_at_grace_then_one_email_at_email_after(
    prt: Runtime, tenant: Host, push_service: PushService, smtp_server: SmtpServer
) -> None:
    client.save_subscription(OWNER, push_service.new_subscription("laptop"))
    client.save_subscription(OWNER, push_service.new_subscription("phone"))
    drive = Drive(prt)
    with freeze_time(T0) as clock:
        burst(tenant, ["Здравствуйте 🌷", "Доставка сегодня будет?"])
        clock.tick(59)
        drive()
        assert push_service.received == []
        clock.tick(2)  # grace + 1 s
        drive()
        pushes = push_service.wait_for(2)
        assert sorted(p.name for p in pushes) == ["laptop", "phone"]
        for p in pushes:
            assert p.payload["dialog_id"] == 100 and p.payload["tag"] == "dialog-100"
            assert p.payload["url"] == "https://app.replyx.test/dialogs?dialog_id=100"
            assert "Доставка сегодня будет?" in p.payload["body"]
            assert (p.headers["ttl"], p.headers["urgency"], p.headers["topic"]) == ("43200", "high", "dialog-100")
            assert p.jwt_claims["sub"] == "mailto:ops@replyx.test" and p.jwt_claims["aud"] == push_service.origin
        assert smtp_server.messages == []
        clock.tick(238)  # email_after - 1 s
        drive()
        assert smtp_server.messages == []
        clock.tick(2)  # email_after + 1 s
        drive()
    [mail] = smtp_server.wait_for(1)
    assert "Здравствуйте 🌷" in mail.part("plain") and "Доставка сегодня будет?" in mail.part("plain")
    assert push_service.rejections == []
    assert len(push_service.received) == 2  # no second push for the same burst


def test_read_between_push_and_email_cancels_the_email(
    prt: Runtime, tenant: Host, push_service: PushService, smtp_server: SmtpServer
) -> None:
    client.save_subscription(OWNER, push_service.new_subscription("laptop"))
    drive = Drive(prt)
    with freeze_time(T0) as clock:
        ids = burst(tenant, ["ау"])
        clock.tick(61)
        drive()
        assert len(push_service.wait_for(1)) == 1
        clock.tick(100)
        client.mark_read(100, OWNER, ids[-1])
        clock.tick(200)
        drive()
    assert smtp_server.messages == []


def test_a_new_burst_after_reading_gets_its_own_deadlines(
    prt: Runtime, tenant: Host, push_service: PushService, smtp_server: SmtpServer
) -> None:
    client.save_subscription(OWNER, push_service.new_subscription("laptop"))
    drive = Drive(prt)

    def notifications() -> list[str]:
        return [p.payload["body"] for p in push_service.received if p.payload.get("type") != "clear"]

    with freeze_time(T0) as clock:
        first = burst(tenant, ["первое"])
        clock.tick(61)
        drive()
        assert len(push_service.wait_for(1)) == 1  # the escalation recheck now waits at T0 + 300
        clock.tick(100)
        client.mark_read(100, OWNER, first[-1])
        clock.tick(39)  # T0 + 200: a new burst begins
        burst(tenant, ["второе"])
        clock.tick(59)
        drive()  # the read is cleared from the screen; the new burst is not due yet
        assert [p.payload for p in push_service.wait_for(2)][-1] == {"type": "clear", "dialog_id": 100, "tag": "dialog-100"}
        assert len(notifications()) == 1
        clock.tick(2)
        drive()
        push_service.wait_for(3)
        assert len(notifications()) == 2 and "второе" in notifications()[-1]
        clock.tick(40)  # T0 + 301: the first burst's email time; it was read, and the new one is too young
        drive()
        assert smtp_server.messages == []
        clock.tick(200)  # T0 + 501: 300 s after the new burst began, still unread
        drive()
    [mail] = smtp_server.wait_for(1)
    assert "второе" in mail.part("plain") and "первое" not in mail.part("plain")


def test_recipient_without_push_gets_email_at_grace(
    prt: Runtime, tenant: Host, push_service: PushService, smtp_server: SmtpServer
) -> None:
    client.add_team_member(OWNER, MEMBER)
    client.save_subscription(OWNER, push_service.new_subscription("owner"))
    drive = Drive(prt)
    with freeze_time(T0) as clock:
        burst(tenant, ["ау"])
        clock.tick(61)
        drive()
    assert [m.rcpt_tos for m in smtp_server.wait_for(1)] == [("member@example.com",)]
    assert [p.name for p in push_service.wait_for(1)] == ["owner"]


def test_gone_subscription_is_deleted_and_the_other_browser_still_gets_it(
    prt: Runtime, tenant: Host, push_service: PushService
) -> None:
    client.save_subscription(OWNER, push_service.new_subscription("old"))
    client.save_subscription(OWNER, push_service.new_subscription("new"))
    push_service.unsubscribe("old")
    with freeze_time(T0) as clock:
        burst(tenant, ["ау"])
        clock.tick(61)
        outcomes = Drive(prt)()
    assert sorted(o.status for o in outcomes) == [DeliveryStatus.FAILED, DeliveryStatus.SENT]
    assert [p.name for p in push_service.wait_for(1)] == ["new"]
    assert count_subscriptions(prt) == 1


@pytest.mark.parametrize(
    ("script", "first_wait", "attempts"),
    [([(429, {"Retry-After": "7"})], 7, 2), ([500, 500], 8, 3)],
)
def test_transient_push_errors_retry_then_deliver(
    prt: Runtime, tenant: Host, push_service: PushService, script, first_wait: float, attempts: int  # type: ignore[no-untyped-def]
) -> None:
    client.save_subscription(OWNER, push_service.new_subscription("laptop"))
    push_service.script("laptop", script)
    drive = Drive(prt)
    with freeze_time(T0) as clock:
        burst(tenant, ["ау"])
        clock.tick(61)
        [first] = drive()
        assert first.status is DeliveryStatus.PENDING and first.retry_in is not None and first.retry_in >= first_wait
        for _ in range(attempts + 2):
            clock.tick(3600)  # past any backoff: the sweeper re-enqueues, the claim honours not_before
            drive()
    assert [p.name for p in push_service.wait_for(1)] == ["laptop"]
    with prt.engine.connect() as conn:
        row = conn.execute(select(models.deliveries).where(models.deliveries.c.channel == Channel.WEBPUSH.value)).one()
    assert (row.status, row.attempts) == ("sent", attempts)


def test_a_stored_ssrf_endpoint_is_refused_at_send(prt: Runtime, tenant: Host, smtp_server: SmtpServer) -> None:
    with prt.engine.begin() as conn:  # as if written by an older version, or by hand
        conn.execute(insert(models.push_subscriptions).values(
            manager_id=OWNER, endpoint="https://10.1.2.3/internal", p256dh="x", auth="y", created_at=0, updated_at=0))
    with freeze_time(T0) as clock:
        burst(tenant, ["ау"])
        clock.tick(61)
        outcomes = Drive(prt)()
    assert [o.status for o in outcomes] == [DeliveryStatus.FAILED]
    assert "not an allowed push service" in outcomes[0].reason


def test_huge_cyrillic_and_emoji_text_stays_within_one_record(
    prt: Runtime, tenant: Host, push_service: PushService
) -> None:
    client.save_subscription(OWNER, push_service.new_subscription("laptop"))
    with freeze_time(T0) as clock:
        burst(tenant, ["Привет 👋🏽 мир 🇷🇺 " * 500])  # 10,000 characters
        clock.tick(61)
        Drive(prt)()
    [p] = push_service.wait_for(1)
    assert push_service.rejections == []
    assert p.payload["body"].endswith("…") and "👋🏽" in p.payload["body"]
    assert len(json.dumps(p.payload, ensure_ascii=False).encode()) <= 3000
