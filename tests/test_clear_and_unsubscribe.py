"""Clear on read (a silent push takes a shown notification back) and one-click unsubscribe (RFC 8058)."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

import pytest
from freezegun import freeze_time

from notifier.config import Settings
from notifier.enums import Channel
from notifier.errors import InvalidInput
from notifier.runtime import Runtime
from notifier.unsubscribe import LIFETIME_SECONDS, make_token, read_token, unsubscribe_url
from tests.conftest import runtime_for
from tests.pushservice import PushService
from tests.smtpserver import SmtpServer
from tests.support import Drive, Host
from worker import client

OWNER, MEMBER = 1, 2
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0, tzinfo=None)  # the push service checks JWT expiry
SECRET = "s" * 40


def clears(push_service: PushService, name: str) -> list[dict[str, object]]:
    return [p.payload for p in push_service.received_for(name) if p.payload.get("type") == "clear"]


class TestClearOnRead:
    @pytest.fixture
    def pushed(self, prt: Runtime, hostdb: Host, push_service: PushService) -> Drive:
        """The owner and a team member were both pushed about dialog 100."""
        hostdb.user(OWNER, "owner@example.com")
        hostdb.user(MEMBER, "member@example.com")
        hostdb.dialog(100, OWNER)
        client.add_team_member(OWNER, MEMBER)
        client.save_subscription(OWNER, push_service.new_subscription("owner-laptop"))
        client.save_subscription(OWNER, push_service.new_subscription("owner-phone"))
        client.save_subscription(MEMBER, push_service.new_subscription("member"))
        return Drive(prt)

    def test_the_reader_s_browsers_get_a_clear_the_others_keep_theirs(
        self, prt: Runtime, hostdb: Host, push_service: PushService, pushed: Drive
    ) -> None:
        drive = pushed
        with freeze_time(NOW) as clock:
            mid = hostdb.message(100, "ау")
            client.schedule_fallback(100, mid)
            clock.tick(61)
            drive()
            assert len(push_service.wait_for(3)) == 3
            clock.tick(5)
            client.mark_read(100, OWNER, mid)  # through the host's client, as the admin panel would
            drive()  # the dispatcher hands the request over within a second
            push_service.wait_for(5)
            clock.tick(5)
            client.mark_read(100, OWNER, mid)  # read again: nothing more to take back
            drive()
        expected = {"type": "clear", "dialog_id": 100, "tag": "dialog-100"}
        assert clears(push_service, "owner-laptop") == [expected] and clears(push_service, "owner-phone") == [expected]
        assert clears(push_service, "member") == []  # the member has not read it: theirs stays
        topics = {p.headers["topic"] for p in push_service.received}
        assert topics == {"dialog-100"}  # one Topic: a push service holding the notification replaces it
        assert len(push_service.received) == 5 and push_service.rejections == []

    def test_an_answer_clears_everyone_who_was_pushed(
        self, prt: Runtime, hostdb: Host, push_service: PushService, pushed: Drive
    ) -> None:
        drive = pushed
        with freeze_time(NOW) as clock:
            client.schedule_fallback(100, hostdb.message(100, "ау"))
            clock.tick(61)
            drive()
            push_service.wait_for(3)
            answer = hostdb.message(100, "Здравствуйте, слушаю вас", sender="manager")
            client.mark_read(100, MEMBER, answer)  # the host reports the answer, as the guide says
            drive()
        push_service.wait_for(6)
        assert all(len(clears(push_service, name)) == 1 for name in ("owner-laptop", "owner-phone", "member"))

    def test_nothing_to_clear_sends_nothing(self, prt: Runtime, hostdb: Host, push_service: PushService) -> None:
        hostdb.user(OWNER, "owner@example.com")
        hostdb.dialog(100, OWNER)
        client.save_subscription(OWNER, push_service.new_subscription("laptop"))
        with freeze_time(NOW):
            mid = hostdb.message(100, "ау")
            client.schedule_fallback(100, mid)
            client.mark_read(100, OWNER, mid)  # read before anything was pushed
            Drive(prt)()
        assert push_service.received == []


class TestTokens:
    def test_a_token_names_the_manager_and_the_channel(self) -> None:
        token = make_token(SECRET, 42, Channel.EMAIL, 1_800_000_000)
        assert read_token(SECRET, token, 1_800_000_000) == (42, Channel.EMAIL)

    def test_it_expires_after_thirty_days(self) -> None:
        token = make_token(SECRET, 42, Channel.EMAIL, 1_800_000_000)
        assert read_token(SECRET, token, 1_800_000_000 + LIFETIME_SECONDS - 1) == (42, Channel.EMAIL)
        with pytest.raises(InvalidInput, match="expired"):
            read_token(SECRET, token, 1_800_000_000 + LIFETIME_SECONDS + 1)

    @pytest.mark.parametrize("how", ["other secret", "payload", "signature", "garbage", "empty", "not a string"])
    def test_forged_or_altered_tokens_are_refused(self, how: str) -> None:
        token = make_token(SECRET, 42, Channel.EMAIL, 1_800_000_000)
        payload, signature = token.split(".")
        forged = {
            "other secret": make_token("t" * 40, 42, Channel.EMAIL, 1_800_000_000),
            "payload": make_token(SECRET, 43, Channel.EMAIL, 1_800_000_000).split(".")[0] + "." + signature,
            "signature": payload + "." + ("A" if signature[0] != "A" else "B") + signature[1:],
            "garbage": "%%%.%%%",
            "empty": "",
            "not a string": 42,
        }[how]
        with pytest.raises(InvalidInput):
            read_token(SECRET, forged, 1_800_000_000)


class TestEmailHeadersAndFooter:
    def deliver_one(self, settings: Settings, hostdb: Host, relation: str) -> None:
        hostdb.user(OWNER, "owner@example.com", "Ирина")
        hostdb.user(MEMBER, "member@example.com", "Олег")
        with runtime_for(settings) as rt, freeze_time("2026-11-26 12:00:00") as clock:
            if relation == "assigned":
                client.add_team_member(OWNER, MEMBER)
                hostdb.dialog(100, OWNER, handoff_status="active", assigned_manager_id=MEMBER)
            else:
                hostdb.dialog(100, OWNER)
            client.schedule_fallback(100, hostdb.message(100, "ау"))
            clock.tick(61)
            Drive(rt)()

    def test_with_a_public_url_every_email_has_one_click_unsubscribe(
        self, settings: Settings, engine, hostdb: Host, smtp_server: SmtpServer  # type: ignore[no-untyped-def]
    ) -> None:
        configured = replace(settings, public_url="https://replyx.test/api/notifier", secret_key=SECRET,
                             settings_url="https://replyx.test/settings/notifications")
        self.deliver_one(configured, hostdb, "owner")
        [mail] = smtp_server.wait_for(1)
        message = mail.message
        link = message["List-Unsubscribe"]
        assert link.startswith("<https://replyx.test/api/notifier/unsubscribe?token=") and link.endswith(">")
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        token = parse_qs(urlsplit(link.strip("<>")).query)["token"][0]
        sent_at = dt.datetime(2026, 11, 26, 12, 1, 1, tzinfo=dt.UTC).timestamp()
        assert read_token(SECRET, token, sent_at) == (OWNER, Channel.EMAIL)
        text, html = mail.part("plain"), mail.part("html")
        assert "вы владелец этого чата" in text
        assert "Настроить уведомления: https://replyx.test/settings/notifications" in text
        assert "Отписаться от писем: " + link.strip("<>") in text
        assert 'href="https://replyx.test/settings/notifications"' in html and "Отписаться от писем" in html

    def test_the_footer_says_why_an_assigned_manager_got_it(
        self, settings: Settings, engine, hostdb: Host, smtp_server: SmtpServer  # type: ignore[no-untyped-def]
    ) -> None:
        self.deliver_one(settings, hostdb, "assigned")
        [mail] = smtp_server.wait_for(1)
        assert mail.rcpt_tos == ("member@example.com",)
        assert "диалог передан вам" in mail.part("plain")
        assert mail.message["List-Unsubscribe"] is None  # no NOTIFIER_PUBLIC_URL: no header, said at start-up
        assert "Отписаться" not in mail.part("plain") and "Настроить уведомления" not in mail.part("plain")

    def test_no_public_url_no_link(self) -> None:
        assert unsubscribe_url(None, SECRET, 1, Channel.EMAIL, 0) is None
