"""Retention: decisions and finished deliveries older than NOTIFIER_RETENTION_DAYS go, in bounded batches.

Each batch is its own short transaction deleting at most `batch` rows, oldest first, found through an
index (decisions by `created_at`, deliveries by `updated_at`, migration 0006): no statement scans the
table or holds its locks for long, and other writers (SQLite's single writer included) get their turn
between batches. Only finished deliveries go (sent, failed, skipped); pending and sending ones stay
however old they are. A run stops after `max_batches` per table and the next run goes on from there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import Delete, Engine, delete, select

from notifier import models
from notifier.enums import DeliveryStatus

DAY = 86400.0
BATCH = 1000
MAX_BATCHES = 500  # per table and run: at most 500,000 rows each, then the next run continues
PAUSE_CAP = 1.0  # seconds: the longest pause between two batches
FINISHED = (DeliveryStatus.SENT.value, DeliveryStatus.FAILED.value, DeliveryStatus.SKIPPED.value)


@dataclass(frozen=True)
class Purged:
    cutoff: float  # rows older than this (epoch seconds) were due to go
    decisions: int
    deliveries: int
    complete: bool  # False: a table reached max_batches; rows older than the cutoff remain for the next run


def _decisions_batch(cutoff: float, batch: int) -> Delete:
    dec = models.decisions
    oldest = select(dec.c.id).where(dec.c.created_at < cutoff).order_by(dec.c.created_at).limit(batch)
    return delete(dec).where(dec.c.id.in_(oldest))


def _deliveries_batch(cutoff: float, batch: int) -> Delete:
    dl = models.deliveries
    oldest = (
        select(dl.c.id).where(dl.c.updated_at < cutoff, dl.c.status.in_(FINISHED)).order_by(dl.c.updated_at).limit(batch)
    )
    return delete(dl).where(dl.c.id.in_(oldest))


def _drain(engine: Engine, statement: Delete, batch: int, max_batches: int) -> tuple[int, bool]:
    deleted = 0
    for _ in range(max_batches):
        started = time.monotonic()
        with engine.begin() as conn:  # one batch, one transaction: locks end here
            n = conn.execute(statement).rowcount
        deleted += n
        if n < batch:
            return deleted, True
        # Leave the database to others for as long as the batch held it. Without this pause SQLite's
        # single write lock is free only for microseconds between batches, and a writer sleeping in its
        # busy handler can miss every one of them for seconds (measured: bench/retention.py).
        time.sleep(min(PAUSE_CAP, time.monotonic() - started))
    return deleted, False


def purge_history(
    engine: Engine, days: float, now: float | None = None, batch: int = BATCH, max_batches: int = MAX_BATCHES
) -> Purged:
    """Delete decisions created, and finished deliveries last updated, more than `days` before `now`
    (strictly older than the cutoff). `days` of 0 keeps everything."""
    now = time.time() if now is None else now
    cutoff = now - days * DAY
    if days <= 0:
        return Purged(cutoff, 0, 0, True)
    decisions, done_decisions = _drain(engine, _decisions_batch(cutoff, batch), batch, max_batches)
    deliveries, done_deliveries = _drain(engine, _deliveries_batch(cutoff, batch), batch, max_batches)
    return Purged(cutoff, decisions, deliveries, done_decisions and done_deliveries)
