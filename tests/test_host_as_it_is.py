"""The host as it really is (ReplyX's own models and routes), through the whole pipeline."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from freezegun import freeze_time
from sqlalchemy import event, insert, select

from notifier import host, models
from notifier.runtime import Runtime
from tests.pushservice import PushService
from tests.smtpserver import SmtpServer
from tests.support import Drive, Host
from worker import client

OWNER = 1
T0 = dt.datetime(2026, 11, 26, 12, 0, 0)


def decisions(rt: Runtime, dialog_id: int = 100) -> list[tuple[int | None, str, str | None, str]]:
    d = models.decisions
    with rt.engine.connect() as conn:
        rows = conn.execute(select(d.c.manager_id, d.c.action, d.c.channel, d.c.reason).where(d.c.dialog_id == dialog_id))
        return [tuple(r) for r in rows]  # type: ignore[misc]


class TestEndedAt:
    """ReplyX writes `dialogs.ended_at = utcnow()` every time the AI answers (api/dialogs.py); there is no
    "close dialog" action. A dialog is over only while no visitor has written since."""

    def test_a_visitor_writing_after_the_ai_answered_is_notified(
        self, rt: Runtime, hostdb: Host, smtp_server: SmtpServer
    ) -> None:
        hostdb.user(OWNER, "owner@example.com")
        hostdb.dialog(100, OWNER, ended_at=T0 - dt.timedelta(minutes=5))  # the AI answered five minutes ago
        with freeze_time(T0) as clock:
            client.schedule_fallback(100, hostdb.message(100, "Позовите человека", at=T0))
            clock.tick(61)
            Drive(rt)()
        assert len(smtp_server.wait_for(1)) == 1
        assert decisions(rt) == [(OWNER, "notify", "email", "unread")]

    def test_the_ai_answering_after_the_visitor_ends_it(self, rt: Runtime, hostdb: Host, smtp_server: SmtpServer) -> None:
        hostdb.user(OWNER, "owner@example.com")
        hostdb.dialog(100, OWNER)
        with freeze_time(T0) as clock:
            client.schedule_fallback(100, hostdb.message(100, "Сколько стоит?", at=T0))
            hostdb.message(100, "1000 ₽", sender="assistant", at=T0 + dt.timedelta(seconds=3))
            hostdb.update_dialog(100, ended_at=T0 + dt.timedelta(seconds=3))
            clock.tick(61)
            Drive(rt)()
        assert smtp_server.messages == []
        assert decisions(rt) == [(OWNER, "skip", None, "dialog_ended")]

    def test_one_second_either_side_of_ended_at(self, rt: Runtime, hostdb: Host, smtp_server: SmtpServer) -> None:
        hostdb.user(OWNER, "owner@example.com")
        hostdb.dialog(100, OWNER, ended_at=T0)
        hostdb.dialog(200, OWNER, ended_at=T0)
        with freeze_time(T0) as clock:
            client.schedule_fallback(100, hostdb.message(100, "до", at=T0 - dt.timedelta(seconds=1)))
            client.schedule_fallback(200, hostdb.message(200, "после", at=T0 + dt.timedelta(seconds=1)))
            clock.tick(62)
            Drive(rt)()
        assert decisions(rt, 100) == [(OWNER, "skip", None, "dialog_ended")]
        assert decisions(rt, 200) == [(OWNER, "notify", "email", "unread")]
        assert len(smtp_server.wait_for(1)) == 1


@pytest.mark.parametrize(("status", "notified"), [(None, True), ("active", True), ("blocked", False)])
def test_a_null_status_is_an_active_user(rt: Runtime, hostdb: Host, smtp_server: SmtpServer, status: str | None,
                                         notified: bool) -> None:
    with rt.engine.begin() as conn:  # the host's users.status has no default: raw inserts leave it NULL
        conn.execute(insert(host.users).values(id=OWNER, email="owner@example.com", first_name="Ирина", role="user",
                                               status=status))
    hostdb.dialog(100, OWNER)
    with freeze_time(T0) as clock:
        client.schedule_fallback(100, hostdb.message(100, "ау"))
        clock.tick(61)
        Drive(rt)()
    assert len(smtp_server.messages) == (1 if notified else 0)
    assert decisions(rt) == [(OWNER, "notify", "email", "unread") if notified else (OWNER, "skip", None, "inactive")]


def long_burst(rt: Runtime, count: int, dialog_id: int = 100, first_id: int = 10_000) -> list[int]:
    ids = list(range(first_id, first_id + count))
    with rt.engine.begin() as conn:
        conn.execute(insert(host.dialog_messages), [
            {"id": i, "dialog_id": dialog_id, "sender": "user", "text": f"Сообщение номер {i}", "timestamp": T0,
             "message_kind": "text"}
            for i in ids
        ])
    return ids


class StatementLog:
    """Every SQL statement the engine runs, as the database received it."""

    def __init__(self, rt: Runtime) -> None:
        self.statements: list[tuple[str, list[Any]]] = []
        self.engine = rt.engine

    def __enter__(self) -> StatementLog:
        event.listen(self.engine, "before_cursor_execute", self._record)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._record)

    def _record(self, _conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        values = list(parameters.values()) if isinstance(parameters, dict) else list(parameters or ())
        self.statements.append((" ".join(statement.split()), values))


@pytest.mark.parametrize(("language", "says", "hidden"), [("en", "10,000 unread messages", "9,990 earlier"),
                                                          ("ru", "10\u00a0000 непрочитанных сообщений", "ещё 9\u00a0990")])
def test_a_burst_of_ten_thousand_says_ten_thousand_and_loads_only_what_it_shows(
    prt: Runtime, hostdb: Host, smtp_server: SmtpServer, push_service: PushService, language: str, says: str, hidden: str
) -> None:
    hostdb.user(OWNER, "owner@example.com")
    hostdb.dialog(100, OWNER)
    client.set_language(OWNER, language)
    client.save_subscription(OWNER, push_service.new_subscription("laptop"))
    now = dt.datetime.now(dt.UTC).replace(microsecond=0, tzinfo=None)  # the push service checks JWT expiry
    with freeze_time(now) as clock:
        ids = long_burst(prt, 10_000)
        client.schedule_fallback(100, ids[0])
        client.schedule_fallback(100, ids[-1])
        with StatementLog(prt) as log:
            clock.tick(61)
            Drive(prt)()
            clock.tick(300)
            Drive(prt)()
    [push] = push_service.wait_for(1)
    count = says.split(" ")[0]  # "10,000" or "10 000" (a no-break space)
    assert push.payload["title"].startswith(count)
    [mail] = smtp_server.wait_for(1)
    text = mail.part("plain")
    assert says in text and hidden in text
    assert f"Сообщение номер {ids[-1]}" in text and f"Сообщение номер {ids[-10]}" in text
    assert f"Сообщение номер {ids[-11]}" not in text
    reads_of_text = [sql for sql, _values in log.statements
                     if "dialog_messages" in sql and re.search(r'\b"?text"?\s+AS\b', sql)]
    assert len(reads_of_text) == 2, reads_of_text  # one push, one email
    for sql in reads_of_text:  # ten messages each, never the whole burst
        assert re.search(r"\bLIMIT 10\b", sql), sql
