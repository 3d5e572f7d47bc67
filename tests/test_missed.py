"""What a manager missed (`client.missed`, the kit's GET /missed): which dialogs, exact counts, order, the
bound, and the plan of its one statement on a database with ReplyX's production indexes."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, insert, text

from notifier import host
from notifier.config import set_settings
from notifier.decide import visible_tenants
from notifier.runtime import Runtime
from notifier.snapshot import MISSED_LIMIT, load_missed, load_viewer
from tests.support import Host, captured_statements
from worker import client

pytestmark = pytest.mark.host

NOON = dt.datetime(2026, 11, 26, 12, 0)


def summary(found: list[dict[str, Any]]) -> list[tuple[int, int, int, int]]:
    return [(d["dialog_id"], d["unread"], d["first_unread_message_id"], d["last_message_id"]) for d in found]


@pytest.fixture
def tenants(host_rt: Runtime, hostdb: Host) -> Host:
    """Owner 1 (member 2 in their team), owner 5 (another tenant), admin 9."""
    for user_id in (1, 2, 5):
        hostdb.user(user_id)
    hostdb.user(9, role="admin")
    client.add_team_member(1, 2)
    return hostdb


def test_unread_above_the_pointer_and_the_last_answer_oldest_first(tenants: Host) -> None:
    h = tenants
    h.dialog(10, 1, handoff_status="requested")
    h.dialog(11, 1, handoff_status="none", is_taken_over=1)  # taken over from the panel: needs a human
    h.dialog(12, 1, handoff_status="active")
    h.dialog(13, 1, handoff_status="requested")  # all read
    h.dialog(14, 1, handoff_status="released")  # back with the AI
    h.dialog(50, 5, handoff_status="requested")  # another tenant's

    first12 = h.message(12, "первое", at=NOON + dt.timedelta(hours=1))  # a later time, but the lowest id
    h.message(10, "старое")
    h.message(10, "ответ", sender="manager")
    first10 = h.message(10, "снова", at=NOON + dt.timedelta(minutes=5))
    h.message(10, "ИИ", sender="assistant")
    h.message(10, "система", sender="system")
    last10 = h.message(10, "ещё")
    only11 = h.message(11, "здравствуйте")
    second12 = h.message(12, "второе")
    last12 = h.message(12, "третье")
    read13 = h.message(13, "прочитано")
    h.message(14, "с ИИ")
    h.message(50, "чужое")
    client.mark_read(12, 1, second12)  # read the first two of dialog 12
    client.mark_read(13, 1, read13)

    found = client.missed(1)
    assert summary(found) == [(10, 2, first10, last10), (11, 1, only11, only11), (12, 1, last12, last12)]
    assert found[0]["waiting_since"] == "2026-11-26T12:05:00Z"  # the first unread message's time, as UTC
    # The team member sees the owner's dialogs, with their own (empty) pointers: all of 12 and 13 too.
    assert [d["dialog_id"] for d in client.missed(2)] == [12, 10, 11, 13]
    assert client.missed(2)[0]["first_unread_message_id"] == first12  # ordered by id, not by timestamp
    assert [d["dialog_id"] for d in client.missed(9)] == [12, 10, 11, 13, 50]  # an admin sees every tenant
    assert client.missed(5) == [{"dialog_id": 50, "unread": 1, "first_unread_message_id": last12 + 3,
                                 "last_message_id": last12 + 3, "waiting_since": "2026-11-26T12:00:00Z"}]  # fmt: skip
    assert client.missed(77) == []  # unknown to the host's users table: nothing (and no error)


def test_pointers_are_per_manager(tenants: Host) -> None:
    tenants.dialog(10, 1)
    first = tenants.message(10, "a")
    last = tenants.message(10, "b")
    client.mark_read(10, 2, first)  # the member read one; the owner read nothing
    assert summary(client.missed(1)) == [(10, 2, first, last)]
    assert summary(client.missed(2)) == [(10, 1, last, last)]


def test_ai_handled_dialogs_follow_notifier_skip_ai_handled(tenants: Host, host_rt: Runtime) -> None:
    tenants.dialog(10, 1, handoff_status="none")
    m = tenants.message(10, "бот отвечает")
    assert client.missed(1) == []
    set_settings(dataclasses.replace(host_rt.settings, ai_handling_skips=False))
    assert summary(client.missed(1)) == [(10, 1, m, m)]


def test_counts_are_exact_for_a_long_burst(tenants: Host, engine: Engine) -> None:
    tenants.dialog(10, 1)
    rows = [{"id": 100_000 + i, "dialog_id": 10, "sender": "user", "text": "x", "timestamp": NOON, "message_kind": "text"}
            for i in range(2500)]  # fmt: skip
    with engine.begin() as conn:
        conn.execute(insert(host.dialog_messages), rows)
    assert summary(client.missed(1)) == [(10, 2500, 100_000, 102_499)]


def test_the_answer_is_bounded(tenants: Host, engine: Engine) -> None:
    """An admin sees every tenant, so at most MISSED_LIMIT dialogs, the longest waiting first."""
    count = MISSED_LIMIT + 5
    with engine.begin() as conn:
        conn.execute(insert(host.dialogs), [
            {"id": 1000 + i, "user_id": 1 if i % 2 else 5, "handoff_status": "requested", "is_taken_over": 0}
            for i in range(count)])
        # Dialog 1000 + i gets message 5000 - i: the highest dialog ids waited longest.
        conn.execute(insert(host.dialog_messages), [
            {"id": 5000 - i, "dialog_id": 1000 + i, "sender": "user", "text": "?", "timestamp": NOON, "message_kind": "text"}
            for i in range(count)])  # fmt: skip
    found = client.missed(9)
    assert len(found) == MISSED_LIMIT
    assert [d["first_unread_message_id"] for d in found] == sorted(5000 - i for i in range(count))[:MISSED_LIMIT]
    assert found[0]["dialog_id"] == 1000 + count - 1


def _seed_platform(conn: Connection) -> None:
    """A platform the size the planner takes seriously: 40 tenants, 4,000 dialogs (an eighth in handoff),
    60,000 messages."""
    now = dt.datetime(2026, 11, 26, 12, 0)
    conn.execute(text("INSERT INTO users (id, email, role, status) VALUES (:id, :email, 'user', 'active')"),
                 [{"id": u, "email": f"owner{u}@example.com"} for u in range(1, 41)])  # fmt: skip
    conn.execute(text(
        "INSERT INTO dialogs (id, user_id, guest_id, handoff_status, is_taken_over, started_at) "
        "VALUES (:id, :user_id, :guest, :handoff, 0, :at)"), [
        {"id": d, "user_id": 1 + d % 40, "guest": f"g{d}", "handoff": "requested" if d % 8 == 6 else "none", "at": now}
        for d in range(1, 4001)])  # fmt: skip
    conn.execute(text(
        "INSERT INTO dialog_messages (id, dialog_id, sender, text, timestamp, message_kind) "
        "VALUES (:id, :dialog, :sender, 'text', :at, 'user')"), [
        {"id": i, "dialog": 1 + i % 4000, "sender": ("user", "assistant", "manager")[i % 3 if i % 7 else 0],
         "at": now + dt.timedelta(seconds=i)} for i in range(1, 60_001)])  # fmt: skip
    conn.execute(text("ANALYZE"))


def test_one_statement_on_the_hosts_indexes(replyx_db: Engine) -> None:
    """The viewer's dialogs come from idx_dialogs_user_started, their messages from
    idx_dialog_messages_dialog_timestamp (ReplyX has no index on dialog_id alone): one statement, no scan
    of the message table, whatever the number of dialogs."""
    with replyx_db.begin() as conn:
        _seed_platform(conn)
    with replyx_db.connect() as conn:
        viewer, member_of = load_viewer(conn, 7)
        with captured_statements(conn) as seen:
            found = load_missed(conn, 7, visible_tenants(viewer, member_of), True, time.time())
        assert len(seen) == 1, [s for s, _ in seen]
        assert found and all(d.dialog_id % 40 == 6 for d in found)  # owner 7's, all in handoff
        statement, parameters = seen[0]
        if replyx_db.dialect.name == "postgresql":
            plan = "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + statement, parameters))
            assert "Seq Scan on dialog_messages" not in plan, plan
        else:
            plan = "\n".join(str(r[-1]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters))
            assert "SCAN dialog_messages" not in plan and "SCAN m " not in plan, plan
        assert "idx_dialog_messages_dialog_timestamp" in plan, plan
        assert "idx_dialogs_user_started" in plan, plan
