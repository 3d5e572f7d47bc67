"""Bounded failure, everywhere: every attempt counts, whoever makes it; one dialog's error is its own."""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from freezegun import freeze_time
from sqlalchemy import select, text, update

from notifier import host, ledger, models
from notifier.channels.base import DeliveryResult, EmailTarget
from notifier.check import run_check, run_checks
from notifier.cli import why_report
from notifier.config import Settings
from notifier.deliver import run_delivery
from notifier.enums import Channel, DeliveryStatus
from notifier.reconcile import reconcile
from notifier.render import RenderedEmail, default_templates_dir
from notifier.runtime import Runtime
from tests.conftest import runtime_for
from tests.smtpserver import SmtpServer
from tests.support import Drive, Host
from worker import client

OWNER = 1
T0 = dt.datetime(2026, 11, 26, 12, 0, 0)
EPOCH0 = T0.replace(tzinfo=dt.UTC).timestamp()


def delivery_row(rt: Runtime):  # type: ignore[no-untyped-def]
    with rt.engine.connect() as conn:
        return conn.execute(select(models.deliveries)).one()


def due_email(rt: Runtime, hostdb: Host, email: str = "owner@example.com") -> int:
    """A dialog in handoff whose owner's email is due now; returns the delivery id."""
    hostdb.user(OWNER, email)
    hostdb.dialog(100, OWNER)
    with freeze_time(T0):
        client.schedule_fallback(100, hostdb.message(100, "ау"))
    [delivery_id] = run_check(rt, 100, EPOCH0 + 61).delivery_ids
    return delivery_id


class TestErrorsThatCannotSucceedFailAtOnce:
    @pytest.mark.parametrize("address", ["owner.example.com", "owner@example.com\r\nBcc: x@evil.example"])
    def test_a_malformed_address(self, rt: Runtime, hostdb: Host, smtp_server: SmtpServer, address: str) -> None:
        with freeze_time(T0 + dt.timedelta(seconds=61)):
            outcome = run_delivery(rt, due_email(rt, hostdb, address))
        row = delivery_row(rt)
        assert (outcome.status, row.status, row.reason, row.attempts) == (DeliveryStatus.FAILED, "failed", "permanent_error", 1)
        assert smtp_server.messages == [] and smtp_server.refusals == 0

    def test_an_address_that_cannot_be_encoded(self, rt: Runtime, hostdb: Host, smtp_server: SmtpServer) -> None:
        # A non-ASCII mailbox needs SMTPUTF8, which this server does not offer: no retry can change that.
        with freeze_time(T0 + dt.timedelta(seconds=61)):
            outcome = run_delivery(rt, due_email(rt, hostdb, "ирина@пример.рф"))
        row = delivery_row(rt)
        assert (outcome.status, row.status, row.reason, row.attempts) == (DeliveryStatus.FAILED, "failed", "permanent_error", 1)
        assert smtp_server.messages == []

    def test_a_template_error(self, settings: Settings, engine, hostdb: Host, smtp_server: SmtpServer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
        broken = tmp_path / "templates"
        shutil.copytree(default_templates_dir(), broken)
        (broken / "email" / "ru" / "body.txt").write_text("{{ no_such_variable }}\n")
        with runtime_for(replace(settings, templates_dir=broken)) as rt, freeze_time(T0 + dt.timedelta(seconds=61)):
            outcome = run_delivery(rt, due_email(rt, hostdb))
            row = delivery_row(rt)
        assert (outcome.status, row.status, row.attempts) == (DeliveryStatus.FAILED, "failed", 1)
        assert "UndefinedError" in row.last_error
        assert smtp_server.messages == []

    def test_a_channel_bug(self, rt: Runtime, hostdb: Host, smtp_server: SmtpServer, caplog: pytest.LogCaptureFixture) -> None:
        class BuggySender:  # a channel with a bug: a real object, plugged in where the email sender lives
            channel = Channel.EMAIL

            def send(self, target: EmailTarget, rendered: RenderedEmail) -> DeliveryResult:
                return DeliveryResult(ref=target.adress)  # type: ignore[attr-defined]  # the typo is the bug

            def close(self) -> None:
                pass

        rt._senders[Channel.EMAIL] = BuggySender()
        with freeze_time(T0 + dt.timedelta(seconds=61)), caplog.at_level(logging.INFO):
            outcome = run_delivery(rt, due_email(rt, hostdb))
        row = delivery_row(rt)
        assert (outcome.status, row.status, row.reason, row.attempts) == (DeliveryStatus.FAILED, "failed", "permanent_error", 1)
        assert "AttributeError" in row.last_error
        assert any("cannot succeed on a retry" in r.message and r.levelno == logging.ERROR for r in caplog.records)


class TestAttemptsAreBoundedOnEveryPath:
    def test_a_send_lease_lost_again_and_again_ends_at_max_attempts(
        self, rt: Runtime, hostdb: Host, smtp_server: SmtpServer
    ) -> None:
        rt.settings = replace(rt.settings, max_attempts=3)
        delivery_id = due_email(rt, hostdb)
        lease = rt.settings.send_lease_seconds
        now = EPOCH0 + 61
        for attempt in (1, 2, 3):  # each worker dies mid-send; the next takes over after the lease
            row = ledger.claim(rt.engine, delivery_id, now, lease, rt.settings.max_attempts)
            assert row is not None and row.attempts == attempt
            now += lease + 1
        assert ledger.claim(rt.engine, delivery_id, now, lease, rt.settings.max_attempts) is None
        assert ledger.sweep(rt.engine, now, rt.settings.max_attempts) == []  # not re-queued...
        row = delivery_row(rt)
        assert (row.status, row.reason, row.attempts) == ("failed", "attempts_exhausted", 3)  # ...but failed
        assert "gave up after 3 attempts" in row.last_error
        assert run_delivery(rt, delivery_id, now + 3600).status is None
        assert smtp_server.messages == []

    def test_retries_lost_leases_and_the_sweeper_share_one_count(
        self, rt: Runtime, hostdb: Host, smtp_server: SmtpServer
    ) -> None:
        rt.settings = replace(rt.settings, max_attempts=3)
        smtp_server.refuse_next(10)
        delivery_id = due_email(rt, hostdb)
        now = EPOCH0 + 61
        assert run_delivery(rt, delivery_id, now).status is DeliveryStatus.PENDING  # attempt 1: 421, retry
        now += 3600
        assert ledger.sweep(rt.engine, now, 3) == [delivery_id]  # its retry message was lost: re-queued
        assert ledger.claim(rt.engine, delivery_id, now, rt.settings.send_lease_seconds, 3) is not None  # attempt 2: killed
        now += rt.settings.send_lease_seconds + 1
        assert run_delivery(rt, delivery_id, now).status is DeliveryStatus.FAILED  # attempt 3: 421, and that's all
        row = delivery_row(rt)
        assert (row.status, row.reason, row.attempts) == ("failed", "attempts_exhausted", 3)
        assert smtp_server.refusals == 2 and smtp_server.messages == []
        assert ledger.sweep(rt.engine, now + 7200, 3) == [] and run_delivery(rt, delivery_id, now + 7200).status is None


def corrupt_dialog(engine, dialog_id: int) -> None:  # type: ignore[no-untyped-def]
    """A host row the check cannot read: an `ended_at` no Python datetime can hold (PostgreSQL 'infinity'
    raises a DataError in the driver), or text that is no timestamp at all (SQLite)."""
    value = "infinity" if engine.dialect.name == "postgresql" else "not a timestamp"
    with engine.begin() as conn:
        conn.execute(text("UPDATE dialogs SET ended_at = :v WHERE id = :id"), {"v": value, "id": dialog_id})


class TestOneDialogsErrorIsItsOwn:
    def test_a_failing_check_does_not_delay_its_chunk_and_is_parked_after_repeated_failures(
        self, rt: Runtime, hostdb: Host, smtp_server: SmtpServer, caplog: pytest.LogCaptureFixture
    ) -> None:
        hostdb.user(OWNER, "owner@example.com")
        for dialog_id in (100, 200, 300):
            hostdb.dialog(dialog_id, OWNER)
        corrupt_dialog(rt.engine, 200)
        drive = Drive(rt)
        with freeze_time(T0) as clock, caplog.at_level(logging.INFO):
            for dialog_id in (100, 200, 300):
                client.schedule_fallback(dialog_id, hostdb.message(dialog_id, "ау"))
            clock.tick(61)
            now = clock().timestamp()
            due = rt.store.dispatch(now, 100, rt.settings.check_lease_seconds, rt.settings.max_attempts).due
            assert due == [100, 200, 300]
            created: list[int] = []
            results = dict(run_checks(rt, due, created.append, now))
            assert results[200] is None and results[100] is not None and results[300] is not None
            for delivery_id in created:
                run_delivery(rt, delivery_id, now)
            assert sorted(m.rcpt_tos for m in smtp_server.wait_for(2)) == [("owner@example.com",)] * 2
            for _ in range(rt.settings.max_attempts + 3):  # retried with backoff, then parked
                clock.tick(600)
                drive()
                reconcile(rt)  # the reconciler leaves a parked dialog alone
        parked = rt.store.parked(200)
        assert parked is not None and parked["attempts"] == rt.settings.max_attempts
        assert ("DataError" if rt.engine.dialect.name == "postgresql" else "ValueError") in parked["error"]
        assert rt.store.counts() == {"pending": 0, "inflight": 0, "parked": 1}
        parked_lines = [r for r in caplog.records if "outcome=parked" in r.message]
        assert len(parked_lines) == 1 and parked_lines[0].levelno == logging.ERROR
        retries = [r for r in caplog.records if "check dialog=200 outcome=retry" in r.message]
        assert len(retries) == rt.settings.max_attempts - 1
        report = why_report(200, None)
        assert [(d["action"], d["reason"]) for d in report["decisions"]] == [("skip", "check_failed")]
        assert len(smtp_server.messages) == 2  # dialogs 100 and 300, once each

    def test_a_new_message_gives_a_parked_dialog_a_new_chance(self, rt: Runtime, hostdb: Host, smtp_server: SmtpServer) -> None:
        hostdb.user(OWNER, "owner@example.com")
        hostdb.dialog(200, OWNER)
        corrupt_dialog(rt.engine, 200)
        with freeze_time(T0) as clock:
            client.schedule_fallback(200, hostdb.message(200, "ау"))
            for _ in range(rt.settings.max_attempts + 2):
                clock.tick(600)
                Drive(rt)()
            assert rt.store.parked(200) is not None
            with rt.engine.begin() as conn:  # the host's data is repaired
                conn.execute(update(host.dialogs).where(host.dialogs.c.id == 200).values(ended_at=None))
            client.schedule_fallback(200, hostdb.message(200, "ещё раз"))
            clock.tick(61)
            Drive(rt)()
        assert len(smtp_server.wait_for(1)) == 1
        assert rt.store.parked(200) is None and rt.store.counts()["parked"] == 0

    def test_an_id_beyond_the_host_columns_is_one_clear_record(self, rt: Runtime, hostdb: Host, smtp_server: SmtpServer) -> None:
        """2**40 is a valid id for us. SQLite's INTEGER holds it: no such dialog, one `no_dialog` record.
        PostgreSQL's integer column cannot hold it: every check of it is a DataError, so it is parked with
        that error after its attempts; either way the dialog beside it in the chunk is notified on time."""
        hostdb.user(OWNER, "owner@example.com")
        hostdb.dialog(100, OWNER)
        huge = 2**40
        with freeze_time(T0) as clock:
            assert client.schedule_fallback(huge, 2**40 + 1)
            client.schedule_fallback(100, hostdb.message(100, "ау"))
            clock.tick(61)
            Drive(rt)()
            assert len(smtp_server.wait_for(1)) == 1
            for _ in range(rt.settings.max_attempts + 1):
                clock.tick(600)
                Drive(rt)()
        decisions = [(d["action"], d["reason"]) for d in why_report(huge, None)["decisions"]]
        if rt.engine.dialect.name == "postgresql":
            assert decisions == [("skip", "check_failed")]
            parked = rt.store.parked(huge)
            assert parked is not None and "integer out of range" in parked["error"]
            assert rt.store.counts() == {"pending": 0, "inflight": 0, "parked": 1}
        else:
            assert decisions == [("skip", "no_dialog")]
            assert rt.store.counts() == {"pending": 0, "inflight": 0, "parked": 0}
        assert len(smtp_server.messages) == 1
