"""Retention on the suite's database (SQLite or PostgreSQL): exact counts one second each side of the
cut-off, finished deliveries only, statements bounded by the batch, runs that stop and resume, the beat
task. The million-row figures are in bench/retention.py."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from typing import Any

import pytest
from freezegun import freeze_time
from sqlalchemy import Engine, event, func, insert, select

from notifier import models
from notifier.config import Settings, load_settings
from notifier.ledger import purge_history
from notifier.ledger.retention import DAY
from notifier.runtime import Runtime

NOW = dt.datetime(2026, 11, 26, 12, 0, 0, tzinfo=dt.UTC)
CUTOFF = NOW.timestamp() - 30 * DAY
OLD, AT, YOUNG = CUTOFF - 1, CUTOFF, CUTOFF + 1
STATUSES = ("sent", "failed", "skipped", "pending", "sending")


def _decision(i: int, at: float) -> dict[str, Any]:
    return {"dialog_id": 1 + i % 50, "manager_id": 7, "action": "skip", "reason": "read", "channel": None,
            "burst_floor": 0, "first_message_id": None, "last_message_id": None, "created_at": at}


def _delivery(i: int, status: str, at: float) -> dict[str, Any]:
    return {"dialog_id": 1 + i, "manager_id": 7, "channel": "email", "target": "", "burst_floor": 0,
            "first_message_id": 1, "last_message_id": 1, "status": status, "attempts": 1, "created_at": at - 60,
            "updated_at": at, "sent_at": at if status == "sent" else None}


@pytest.fixture
def history(engine: Engine) -> dict[str, int]:
    """1,234 decisions a second older than the cut-off, 5 exactly at it, 6 a second younger; deliveries of
    every status on both sides (the old finished ones: 300 sent, 200 failed, 100 skipped)."""
    decisions = [_decision(i, OLD - (i % 7) * DAY) for i in range(1234)]
    decisions += [_decision(i, AT) for i in range(5)] + [_decision(i, YOUNG) for i in range(6)]
    deliveries: list[dict[str, Any]] = []
    old_counts = {"sent": 300, "failed": 200, "skipped": 100, "pending": 3, "sending": 2}
    for status, n in old_counts.items():
        deliveries += [_delivery(len(deliveries) + i, status, OLD - i) for i in range(n)]
    for status in STATUSES:
        deliveries += [_delivery(len(deliveries), status, AT), _delivery(len(deliveries) + 1, status, YOUNG)]
    with engine.begin() as conn:
        conn.execute(insert(models.decisions), decisions)
        conn.execute(insert(models.deliveries), deliveries)
    return {"decisions": len(decisions), "deliveries": len(deliveries), "old_finished": 600}


def _remaining(engine: Engine) -> tuple[int, int, list[tuple[str, bool]]]:
    dec, dl = models.decisions, models.deliveries
    with engine.connect() as conn:
        decisions = conn.execute(select(func.count()).select_from(dec)).scalar_one()
        too_old = conn.execute(select(func.count()).select_from(dec).where(dec.c.created_at < CUTOFF)).scalar_one()
        kept = sorted((r.status, r.updated_at < CUTOFF) for r in conn.execute(select(dl.c.status, dl.c.updated_at)))
    return decisions, too_old, kept


@pytest.fixture
def deletes(engine: Engine) -> Iterator[list[tuple[str, int]]]:
    """(table, rows) of every DELETE the engine runs meanwhile."""
    seen: list[tuple[str, int]] = []

    def after(conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
        if statement.lstrip().upper().startswith("DELETE FROM NOTIFIER_"):
            seen.append((statement.split()[2].strip('"'), cursor.rowcount))

    event.listen(engine, "after_cursor_execute", after)
    yield seen
    event.remove(engine, "after_cursor_execute", after)


def test_exactly_what_is_older_than_the_cutoff_goes(engine: Engine, history: dict[str, int]) -> None:
    with freeze_time(NOW):
        purged = purge_history(engine, 30)
    assert (purged.decisions, purged.deliveries, purged.complete, purged.cutoff) == (1234, 600, True, CUTOFF)
    decisions, too_old, kept = _remaining(engine)
    assert (decisions, too_old) == (11, 0)  # 5 at the cut-off and 6 younger stay
    # Unfinished deliveries stay however old; finished ones at the cut-off or younger stay.
    assert kept == sorted([("pending", True)] * 3 + [("sending", True)] * 2 + [(s, False) for s in STATUSES] * 2)
    with freeze_time(NOW):
        assert purge_history(engine, 30).decisions == 0  # nothing left to do


def test_one_second_later_the_rows_at_the_cutoff_go_too(engine: Engine, history: dict[str, int]) -> None:
    with freeze_time(NOW + dt.timedelta(seconds=1)):
        purged = purge_history(engine, 30)
    assert (purged.decisions, purged.deliveries) == (1234 + 5, 600 + 3)  # sent, failed, skipped at the old cut-off
    with freeze_time(NOW + dt.timedelta(seconds=2)):
        purged = purge_history(engine, 30)
    assert (purged.decisions, purged.deliveries) == (6, 3)


def test_one_second_earlier_the_rows_a_second_older_stay(engine: Engine, history: dict[str, int]) -> None:
    with freeze_time(NOW - dt.timedelta(seconds=1)):
        purged = purge_history(engine, 30)
    exactly_a_second_old = sum(1 for i in range(1234) if i % 7 == 0)  # created at OLD, the new cut-off: kept
    assert (purged.decisions, purged.deliveries) == (1234 - exactly_a_second_old, 600 - 3)


def test_every_statement_deletes_at_most_one_batch(
    engine: Engine, history: dict[str, int], deletes: list[tuple[str, int]]
) -> None:
    with freeze_time(NOW):
        purge_history(engine, 30, batch=100)
    decisions = [n for table, n in deletes if table == "notifier_decisions"]
    deliveries = [n for table, n in deletes if table == "notifier_deliveries"]
    assert decisions == [100] * 12 + [34]
    assert deliveries == [100] * 6 + [0]  # 600 is a whole number of batches: one more finds none
    assert len(deletes) == math.ceil(1234 / 100) + 600 // 100 + 1


def test_a_run_stops_at_its_budget_and_the_next_goes_on(engine: Engine, history: dict[str, int]) -> None:
    with freeze_time(NOW):
        first = purge_history(engine, 30, batch=200, max_batches=2)
        assert (first.decisions, first.deliveries, first.complete) == (400, 400, False)
        second = purge_history(engine, 30, batch=200, max_batches=10)
    assert (second.decisions, second.deliveries, second.complete) == (834, 200, True)
    assert _remaining(engine)[:2] == (11, 0)


def test_zero_days_keeps_everything(engine: Engine, history: dict[str, int], deletes: list[tuple[str, int]]) -> None:
    with freeze_time(NOW):
        assert purge_history(engine, 0).decisions == 0
    assert deletes == [] and _remaining(engine)[0] == history["decisions"]


def test_the_setting(settings: Settings) -> None:
    assert settings.retention_days == 30.0
    assert load_settings({"NOTIFIER_RETENTION_DAYS": "7.5"}).retention_days == 7.5
    assert load_settings({"NOTIFIER_RETENTION_DAYS": "0"}).retention_days == 0
    from notifier.errors import ConfigError

    for bad in ("-1", "a month", "inf", "nan"):
        with pytest.raises(ConfigError, match="NOTIFIER_RETENTION_DAYS must be a number of days"):
            load_settings({"NOTIFIER_RETENTION_DAYS": bad})


def test_the_beat_task_uses_the_setting(rt: Runtime, history: dict[str, int], caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from worker.tasks import retention

    with freeze_time(NOW), caplog.at_level(logging.INFO, logger="worker.tasks"):
        assert retention.run() == 1234 + 600
    assert "retention decisions=1234 deliveries=600 complete=yes" in caplog.text
