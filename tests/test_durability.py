"""Nothing lost, nothing twice, in-process with a frozen clock: reconciler, leases, retries, startup checks."""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import replace

import pytest
import redis
from freezegun import freeze_time
from sqlalchemy import select

from notifier import ledger, models
from notifier.check import run_check
from notifier.config import Settings, load_settings
from notifier.deliver import run_delivery
from notifier.enums import DeliveryStatus
from notifier.errors import ConfigError
from notifier.reconcile import reconcile
from notifier.runtime import Runtime
from notifier.snapshot import message_time
from notifier.startup import check_redis
from notifier.store import INFLIGHT, PENDING, WATERMARK, Store
from tests.smtpserver import SmtpServer
from tests.support import Drive, Host, RedisServer
from worker import client

T0 = dt.datetime(2026, 11, 26, 12, 0, 0)
EPOCH0 = T0.replace(tzinfo=dt.UTC).timestamp()
OWNER = 1


@pytest.fixture
def tenant(hostdb: Host) -> Host:
    hostdb.user(OWNER, "owner@example.com")
    hostdb.dialog(100, OWNER)
    return hostdb


def message_at(host: Host, when: dt.datetime, text: str = "ау", dialog_id: int = 100) -> int:
    mid = host.message(dialog_id, text)
    with host.engine.begin() as conn:
        conn.execute(models_update_timestamp(mid, when))
    return mid


def models_update_timestamp(mid: int, when: dt.datetime):  # type: ignore[no-untyped-def]
    from sqlalchemy import update

    from notifier import host as host_tables

    return update(host_tables.dialog_messages).where(host_tables.dialog_messages.c.id == mid).values(timestamp=when)


class TestMessageTime:
    def test_naive_utc(self) -> None:
        assert message_time(T0, EPOCH0 + 100) == EPOCH0

    def test_naive_moscow_time_is_recognised_by_lying_in_the_future(self) -> None:
        moscow = T0 + dt.timedelta(hours=3)
        assert message_time(moscow, EPOCH0 + 100) == EPOCH0

    def test_aware(self) -> None:
        aware = T0.replace(tzinfo=dt.timezone(dt.timedelta(hours=3))) + dt.timedelta(hours=3)
        assert message_time(aware, EPOCH0) == EPOCH0


class TestReconciler:
    def test_a_lost_schedule_is_found_after_deadline_plus_margin(
        self, rt: Runtime, tenant: Host, smtp_server: SmtpServer
    ) -> None:
        mid = message_at(tenant, T0)  # the API crashed before schedule_fallback
        due_age = rt.settings.grace_seconds + rt.settings.reconcile_margin_seconds
        with freeze_time(T0 + dt.timedelta(seconds=due_age - 1)):
            assert reconcile(rt).scheduled == ()
            assert Drive(rt)() == []
        with freeze_time(T0 + dt.timedelta(seconds=due_age + 1)):
            assert reconcile(rt).scheduled == ((100, mid),)
            Drive(rt)()
            assert len(smtp_server.wait_for(1)) == 1
            again = reconcile(rt)
            assert again.scheduled == () and again.watermark == mid  # covered: the watermark moves past it
        assert len(smtp_server.messages) == 1

    def test_redis_flush_loses_nothing(self, rt: Runtime, tenant: Host, smtp_server: SmtpServer) -> None:
        with freeze_time(T0) as clock:
            client.schedule_fallback(100, message_at(tenant, T0))
            clock.tick(30)
            rt.store.r.flushall()
            clock.tick(31)
            Drive(rt)()
            assert smtp_server.messages == []  # the pending check went with the flush
            clock.tick(rt.settings.reconcile_margin_seconds)
            reconcile(rt)
            Drive(rt)()
            clock.tick(60)
            reconcile(rt)
            Drive(rt)()
        assert len(smtp_server.wait_for(1)) == 1

    def test_ai_handled_and_ended_dialogs_are_passed_over(self, rt: Runtime, hostdb: Host) -> None:
        hostdb.user(OWNER, "owner@example.com")
        hostdb.dialog(200, OWNER, handoff_status="none")
        hostdb.dialog(300, OWNER, ended=True)
        a = message_at(hostdb, T0, dialog_id=200)
        b = message_at(hostdb, T0, dialog_id=300)
        with freeze_time(T0 + dt.timedelta(hours=1)):
            result = reconcile(rt)
        assert result.scheduled == () and result.watermark == max(a, b)

    def test_a_young_message_holds_the_watermark_until_it_is_covered(self, rt: Runtime, tenant: Host) -> None:
        old = message_at(tenant, T0 - dt.timedelta(hours=2), dialog_id=100)
        tenant.dialog(200, OWNER, handoff_status="none")
        with freeze_time(T0):
            young = message_at(tenant, T0, dialog_id=100)
            later_ai = message_at(tenant, T0, dialog_id=200)
            result = reconcile(rt)
        assert result.scheduled == ((100, old),)
        assert result.watermark < old < young < later_ai

    def test_a_dialog_with_a_live_check_is_left_to_it(self, rt: Runtime, tenant: Host) -> None:
        with freeze_time(T0) as clock:
            client.schedule_fallback(100, message_at(tenant, T0))
            clock.tick(rt.settings.grace_seconds + rt.settings.reconcile_margin_seconds + 5)
            assert reconcile(rt).scheduled == ()  # pending in Redis: its check will decide
            rt.store.dispatch(clock().timestamp(), 10, 45, 8)
            assert reconcile(rt).scheduled == ()  # in flight: same

    def test_a_held_watermark_does_not_hide_newer_lost_messages(self, rt: Runtime, tenant: Host) -> None:
        tenant.dialog(200, OWNER)
        tenant.dialog(300, OWNER)
        with freeze_time(T0) as clock:
            client.schedule_fallback(100, message_at(tenant, T0, dialog_id=100))  # held: live check
            lost = [message_at(tenant, T0, dialog_id=d) for d in (200, 200, 300)]
            clock.tick(rt.settings.grace_seconds + rt.settings.reconcile_margin_seconds + 5)
            result = reconcile(rt, batch=2)
        assert result.scheduled == ((200, lost[0]), (300, lost[2]))  # one schedule per dialog

    def test_lookback_bounds_the_scan(self, rt: Runtime, tenant: Host) -> None:
        ancient = message_at(tenant, T0 - dt.timedelta(days=3))
        recent = message_at(tenant, T0 - dt.timedelta(hours=1))
        with freeze_time(T0):
            result = reconcile(rt)
        assert result.scheduled == ((100, recent),)
        assert result.watermark == ancient  # the scan starts after the lookback window's edge
        assert int(rt.store.r.get(WATERMARK) or 0) == ancient


class TestLeases:
    def test_two_dispatchers_never_pop_the_same_check(self, rt: Runtime) -> None:
        for dialog_id in range(1, 201):
            rt.store.schedule(dialog_id, dialog_id, EPOCH0, 60)
        popped: list[int] = []
        barrier = threading.Barrier(4)

        def run() -> None:
            barrier.wait()
            for _ in range(20):
                popped.extend(rt.store.dispatch(EPOCH0 + 61, 7, 45, 8).due)

        threads = [threading.Thread(target=run) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(popped) == list(range(1, 201))

    def test_a_check_whose_worker_died_is_dispatched_again_after_its_lease(self, rt: Runtime) -> None:
        rt.store.schedule(100, 1, EPOCH0, 60)
        assert rt.store.dispatch(EPOCH0 + 61, 10, 45, 8).due == [100]  # then the worker is killed
        assert rt.store.dispatch(EPOCH0 + 61 + 44, 10, 45, 8).due == []
        assert rt.store.dispatch(EPOCH0 + 61 + 46, 10, 45, 8).due == [100]
        rt.store.finish(100, None)
        assert rt.store.r.zcard(PENDING) == 0 and rt.store.r.zcard(INFLIGHT) == 0

    def test_a_delivery_claimed_by_a_dead_worker_is_retried_after_its_lease(
        self, rt: Runtime, tenant: Host, smtp_server: SmtpServer
    ) -> None:
        with freeze_time(T0) as clock:
            client.schedule_fallback(100, tenant.message(100, "ау"))
            clock.tick(61)
            [delivery_id] = run_check(rt, 100).delivery_ids
            claimed = ledger.claim(rt.engine, delivery_id, EPOCH0 + 61, rt.settings.send_lease_seconds, 8)
            assert claimed is not None  # then the worker is killed
            clock.tick(rt.settings.send_lease_seconds - 1)
            assert ledger.sweep(rt.engine, EPOCH0 + 60 + rt.settings.send_lease_seconds, 8) == []
            assert run_delivery(rt, delivery_id).status is None  # still held
            clock.tick(2)
            assert ledger.sweep(rt.engine, EPOCH0 + 63 + rt.settings.send_lease_seconds, 8) == [delivery_id]
            assert run_delivery(rt, delivery_id).status is DeliveryStatus.SENT
            assert run_delivery(rt, delivery_id).status is None
        assert len(smtp_server.wait_for(1)) == 1


class TestRetriesEnd:
    def test_transient_errors_give_up_after_max_attempts(self, rt: Runtime, tenant: Host, smtp_server: SmtpServer) -> None:
        smtp_server.refuse_next(100)
        with freeze_time(T0) as clock:
            client.schedule_fallback(100, tenant.message(100, "ау"))
            clock.tick(61)
            Drive(rt)()
            for _ in range(rt.settings.max_attempts + 2):
                clock.tick(3600)
                Drive(rt)()
        with rt.engine.connect() as conn:
            row = conn.execute(select(models.deliveries)).one()
        assert (row.status, row.attempts) == ("failed", rt.settings.max_attempts)
        assert "gave up after 8 attempts" in row.last_error and "421" in row.last_error
        assert smtp_server.refusals == rt.settings.max_attempts and smtp_server.messages == []

    def test_permanent_refusal_fails_at_once(self, rt: Runtime, tenant: Host, smtp_server: SmtpServer) -> None:
        smtp_server.refuse_next(1, "550 5.1.1 No such user")
        with freeze_time(T0) as clock:
            client.schedule_fallback(100, tenant.message(100, "ау"))
            clock.tick(61)
            [outcome] = Drive(rt)()
        assert outcome.status is DeliveryStatus.FAILED and "550" in outcome.reason
        assert smtp_server.refusals == 1


    def test_a_failed_delivery_is_a_failed_task_for_flower(self, rt: Runtime, tenant: Host, smtp_server: SmtpServer) -> None:
        from notifier.errors import DeliveryFailed
        from worker.tasks import deliver

        smtp_server.refuse_next(1, "550 5.1.1 No such user")
        with freeze_time(T0) as clock:
            client.schedule_fallback(100, tenant.message(100, "ау"))
            clock.tick(61)
            [delivery_id] = run_check(rt, 100).delivery_ids
            result = deliver.apply((delivery_id,))
        assert result.state == "FAILURE" and isinstance(result.result, DeliveryFailed)
        assert "550" in str(result.result)


class TestStartupChecks:
    @pytest.fixture
    def private_redis(self, tmp_path) -> RedisServer:  # type: ignore[no-untyped-def]
        server = RedisServer(tmp_path / "r").start()
        yield server
        server.stop(kill=True)

    def test_an_evicting_redis_is_refused(self, private_redis: RedisServer, settings: Settings) -> None:
        r = redis.Redis.from_url(private_redis.url, decode_responses=True)
        r.config_set("maxmemory-policy", "allkeys-lru")
        with pytest.raises(ConfigError, match="maxmemory-policy is allkeys-lru"):
            check_redis(Store(r), settings)
        r.close()

    def test_persistence_off_warns_except_in_development(self, private_redis: RedisServer, settings: Settings) -> None:
        r = redis.Redis.from_url(private_redis.url)
        store = Store(redis.Redis.from_url(private_redis.url, decode_responses=True))
        assert any("persistence is off" in w for w in check_redis(store, settings))
        assert check_redis(store, replace(settings, environment="development")) == []
        r.config_set("appendonly", "yes")
        assert check_redis(store, settings) == []
        store.r.close()
        r.close()

    def test_push_on_needs_a_loadable_key_and_a_contact(self, settings: Settings) -> None:
        from notifier.pushkeys import generate_vapid_keys
        from notifier.startup import check_push

        private, _ = generate_vapid_keys()
        check_push(settings)  # push off: nothing to check
        with pytest.raises(ConfigError, match="NOTIFIER_VAPID_SUBJECT is not set"):
            check_push(replace(settings, vapid_private_key=private))
        with pytest.raises(ConfigError, match="NOTIFIER_VAPID_SUBJECT must be a mailto"):
            check_push(replace(settings, vapid_private_key=private, vapid_subject="ops@example.com"))
        with pytest.raises(ConfigError, match="is not a P-256 private key") as err:
            check_push(replace(settings, vapid_private_key="c2VjcmV0LWtleS1tYXRlcmlhbA", vapid_subject="mailto:a@b.c"))
        assert "c2VjcmV0" not in str(err.value)  # key material never echoed
        check_push(replace(settings, vapid_private_key=private, vapid_subject="mailto:ops@example.com"))

    def test_environment_is_validated(self) -> None:
        with pytest.raises(ConfigError, match="NOTIFIER_ENVIRONMENT"):
            load_settings({"NOTIFIER_ENVIRONMENT": "staging"})


def test_a_database_without_host_tables_is_named(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from notifier.db import get_engine
    from notifier.migrate import upgrade
    from notifier.snapshot import host_tables_missing

    engine = get_engine(f"sqlite:///{tmp_path / 'ours-only.sqlite3'}")
    upgrade(engine)
    assert host_tables_missing(engine) == ["users", "dialogs", "dialog_messages"]


def test_host_tables_present(engine) -> None:  # type: ignore[no-untyped-def]
    from notifier.snapshot import host_tables_missing

    assert host_tables_missing(engine) == []
