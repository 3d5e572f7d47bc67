"""Deliveries as claims with a unique key, sent at most once, attempted at most NOTIFIER_MAX_ATTEMPTS times.

Key of a delivery: (dialog, recipient, channel, target, burst floor). The burst floor is
max(read pointer, last manager message) when decided, so every check of one burst, however many race,
lands on the same key and only the first insert wins. Status moves
pending -> sending -> sent | failed | skipped, and sending -> pending again after a transient error.
Every claim counts an attempt, whoever makes it (first run, retry, a take-over after a lost send lease,
the sweeper's re-queue), and nothing claims, re-queues or sends a delivery at its limit.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from sqlalchemy import Connection, Engine, and_, bindparam, delete, or_, select, update

from notifier import metrics, models
from notifier.db import any_of, autocommit
from notifier.decide import Decision
from notifier.enums import Channel, DeliveryStatus, FailReason
from notifier.ledger._upsert import upsert
from notifier.ledger.decisions import record_decisions

log = logging.getLogger(__name__)

# A queued delivery whose task never ran is re-enqueued after this long.
ENQUEUE_LEASE = 60.0
ERROR_LIMIT = 1000

d = models.deliveries
_KEY = (d.c.dialog_id, d.c.manager_id, d.c.channel, d.c.target, d.c.burst_floor)


# Built once: claims and sent marks run for every delivery group, and building them cost more than running them.
_CLAIM = (
    update(d)
    .where(
        any_of(d.c.id, "ids"),
        d.c.attempts < bindparam("max_attempts"),
        or_(
            and_(d.c.status == DeliveryStatus.PENDING.value,
                 or_(d.c.not_before.is_(None), d.c.not_before <= bindparam("at_now"))),
            and_(d.c.status == DeliveryStatus.SENDING.value, d.c.lease_until < bindparam("at_now")),
        ),
    )
    .values(status=DeliveryStatus.SENDING.value, lease_until=bindparam("new_lease"), attempts=d.c.attempts + 1,
            updated_at=bindparam("at_now"))
    .returning(d.c.id, d.c.dialog_id, d.c.manager_id, d.c.channel, d.c.target, d.c.burst_floor,
               d.c.first_message_id, d.c.last_message_id, d.c.attempts, d.c.due_at)
)
_SENT = (
    update(d)
    .where(d.c.id == bindparam("sent_id"), d.c.status == DeliveryStatus.SENDING.value)
    .values(status=DeliveryStatus.SENT.value, sent_at=bindparam("at_now"), message_ref=bindparam("sent_ref"),
            lease_until=None, updated_at=bindparam("at_now"))
)


_STALE = (  # every dispatcher tick asks, four times a second: built once
    select(d.c.id, d.c.attempts, d.c.channel)
    .where(d.c.status.in_([DeliveryStatus.PENDING.value, DeliveryStatus.SENDING.value]),
           d.c.lease_until < bindparam("at_now"))
    .order_by(d.c.id)
    .limit(bindparam("limit"))
)


def claim_new(conn: Connection, dialog_id: int, decision: Decision, targets: Sequence[str], now: float) -> list[int]:
    """Insert one pending delivery per target; returns the ids this call created (none if already there)."""
    return [c.id for c in claim_new_many(conn, [(dialog_id, decision, targets)], now).get(dialog_id, [])]


class Created(NamedTuple):
    """A delivery a check created: its id and channel (the check sends the pushes of a chunk first)."""

    id: int
    channel: Channel


def claim_new_many(conn: Connection, wanted: Sequence[tuple[int, Decision, Sequence[str]]],
                   now: float) -> dict[int, list[Created]]:
    """`claim_new` for several dialogs (a chunk of checks) in one statement: per dialog, the deliveries this
    call created, in the order asked (none for a delivery already there)."""
    values: list[dict[str, object]] = []
    for dialog_id, decision, targets in wanted:
        assert decision.manager_id is not None and decision.channel is not None
        assert decision.first_message_id is not None and decision.last_message_id is not None
        values += [
            {
                "dialog_id": dialog_id,
                "manager_id": decision.manager_id,
                "channel": decision.channel.value,
                "target": target,
                "burst_floor": decision.burst_floor,
                "first_message_id": decision.first_message_id,
                "last_message_id": decision.last_message_id,
                "status": DeliveryStatus.PENDING.value,
                "attempts": 0,
                "due_at": decision.due_at,
                "lease_until": now + ENQUEUE_LEASE,
                "created_at": now,
                "updated_at": now,
            }
            for target in targets
        ]
    if not values:
        return {}
    inserted = {tuple(row[1:]): int(row[0]) for row in upsert(conn, d, values, _KEY, returning=(d.c.id, *_KEY), reuse=True)}
    created: dict[int, list[Created]] = {}
    for v in values:
        key = (v["dialog_id"], v["manager_id"], v["channel"], v["target"], v["burst_floor"])
        if (delivery_id := inserted.get(key)) is not None:
            created.setdefault(int(v["dialog_id"]), []).append(  # type: ignore[call-overload]
                Created(delivery_id, Channel(str(v["channel"]))))
    return created


@dataclass(frozen=True)
class DeliveryRow:
    id: int
    dialog_id: int
    manager_id: int
    channel: Channel
    target: str
    burst_floor: int
    first_message_id: int
    last_message_id: int
    attempts: int  # including the one this claim started
    due_at: float | None = None


def claim(engine: Engine, delivery_id: int, now: float, send_lease: float, max_attempts: int) -> DeliveryRow | None:
    """Take a delivery for sending (one more attempt); None when it is done, not due, held by a live lease
    elsewhere, or out of attempts."""
    return claim_many(engine, [delivery_id], now, send_lease, max_attempts).get(delivery_id)


def claim_many(engine: Engine, delivery_ids: Sequence[int], now: float, send_lease: float,
               max_attempts: int) -> dict[int, DeliveryRow]:
    """`claim` for several deliveries in one statement: those of them that could be taken, by id."""
    with autocommit(engine) as conn:  # one statement: atomic by itself
        rows = conn.execute(_CLAIM, {"ids": list(delivery_ids), "max_attempts": max_attempts, "at_now": now,
                                     "new_lease": now + send_lease}).all()
    return {
        int(r.id): DeliveryRow(r.id, r.dialog_id, r.manager_id, Channel(r.channel), r.target, r.burst_floor,
                               r.first_message_id, r.last_message_id, r.attempts, r.due_at)
        for r in rows
    }


def _finish(conn: Connection, delivery_id: int, now: float, **values: object) -> bool:
    """Only the holder of the send lease finishes a delivery; False if someone else took it meanwhile."""
    res = conn.execute(
        update(d).where(d.c.id == delivery_id, d.c.status == DeliveryStatus.SENDING.value).values(updated_at=now, **values)
    )
    return res.rowcount == 1


def mark_sent(engine: Engine, delivery_id: int, now: float, ref: str | None) -> None:
    mark_sent_many(engine, [(delivery_id, ref)], now)


def mark_sent_many(engine: Engine, sent: Sequence[tuple[int, str | None]], now: float) -> None:
    """Several deliveries sent (id, the server's reference), in one transaction; each only by its lease holder."""
    if not sent:
        return
    with engine.begin() as conn:
        conn.execute(_SENT, [{"sent_id": i, "sent_ref": ref, "at_now": now} for i, ref in sent])


def mark_skipped(engine: Engine, row: DeliveryRow, decision: Decision, now: float) -> None:
    """The decision made again at send time said no: record it beside the check's decisions."""
    with engine.begin() as conn:
        if _finish(conn, row.id, now, status=DeliveryStatus.SKIPPED.value, reason=decision.reason.value, lease_until=None):
            record_decisions(conn, row.dialog_id, [decision], now)


def mark_failed(engine: Engine, delivery_id: int, now: float, reason: FailReason, error: str,
                delete_subscription: int | None = None) -> None:
    """Permanent failure; with `delete_subscription`, the push subscription the service called gone goes too."""
    with engine.begin() as conn:
        _finish(conn, delivery_id, now, status=DeliveryStatus.FAILED.value, reason=reason.value,
                last_error=error[:ERROR_LIMIT], lease_until=None)
        if delete_subscription is not None:
            ps = models.push_subscriptions
            conn.execute(delete(ps).where(ps.c.id == delete_subscription))


def mark_retry(engine: Engine, delivery_id: int, now: float, retry_in: float, error: str) -> None:
    with engine.begin() as conn:
        _finish(
            conn, delivery_id, now, status=DeliveryStatus.PENDING.value, not_before=now + retry_in,
            lease_until=now + retry_in + ENQUEUE_LEASE, last_error=error[:ERROR_LIMIT],
        )


def hold(engine: Engine, delivery_id: int, now: float, until: float) -> None:
    """Quiet hours: back to pending until `until`, handing back the attempt this claim counted (nothing was
    tried). The sweeper re-queues it as soon as `until` passes."""
    with engine.begin() as conn:
        _finish(conn, delivery_id, now, status=DeliveryStatus.PENDING.value, not_before=until, lease_until=until,
                attempts=d.c.attempts - 1)


def mark_cleared(engine: Engine, delivery_ids: Sequence[int], now: float) -> None:
    if delivery_ids:
        with engine.begin() as conn:
            conn.execute(update(d).where(d.c.id.in_(list(delivery_ids))).values(cleared_at=now))


def delete_subscription_by_id(engine: Engine, subscription_id: int) -> None:
    """The push service says it is gone (404/410)."""
    ps = models.push_subscriptions
    with engine.begin() as conn:
        conn.execute(delete(ps).where(ps.c.id == subscription_id))


_QUEUED = and_(  # a delivery waiting for its first or next claim, due now
    any_of(d.c.id, "ids"),
    d.c.status == DeliveryStatus.PENDING.value,
    or_(d.c.not_before.is_(None), d.c.not_before <= bindparam("at_now")),
)
_RENEW = update(d).where(_QUEUED, d.c.lease_until < bindparam("new_lease")).values(lease_until=bindparam("new_lease"))
_RELEASE = update(d).where(_QUEUED, d.c.lease_until > bindparam("at_now")).values(lease_until=bindparam("at_now"))


def renew_enqueue_leases(engine: Engine, delivery_ids: Sequence[int], now: float) -> int:
    """Deliveries a live worker holds in its queue, not yet claimed: their enqueue lease runs ENQUEUE_LEASE
    from `now` again, so the sweeper leaves them to it. Returns how many were renewed."""
    if not delivery_ids:
        return 0
    with engine.begin() as conn:
        res = conn.execute(_RENEW, {"ids": list(delivery_ids), "at_now": now, "new_lease": now + ENQUEUE_LEASE})
    return int(res.rowcount)


def release_enqueue_leases(engine: Engine, delivery_ids: Sequence[int], now: float) -> int:
    """Deliveries a stopping worker drops from its queue unclaimed: their enqueue lease ends now, so the
    sweeper hands them out again at once rather than a lease later. Returns how many were released."""
    if not delivery_ids:
        return 0
    with engine.begin() as conn:
        res = conn.execute(_RELEASE, {"ids": list(delivery_ids), "at_now": now})
    return int(res.rowcount)


def sweep(engine: Engine, now: float, max_attempts: int, limit: int = 200) -> list[int]:
    """Deliveries whose queued task or sending worker vanished: re-queue each once per lease, or, out of
    attempts, fail it. Returns the ids to enqueue again."""
    stale = and_(d.c.status.in_([DeliveryStatus.PENDING.value, DeliveryStatus.SENDING.value]), d.c.lease_until < now)
    taken: list[int] = []
    with engine.begin() as conn:
        rows = conn.execute(_STALE, {"at_now": now, "limit": limit}).all()
        for delivery_id, attempts, channel in rows:
            if attempts >= max_attempts:
                conn.execute(
                    update(d).where(d.c.id == delivery_id, stale).values(
                        status=DeliveryStatus.FAILED.value, reason=FailReason.ATTEMPTS_EXHAUSTED.value,
                        last_error=f"gave up after {attempts} attempts: the last one never finished (worker lost)",
                        lease_until=None, updated_at=now,
                    )
                )
                log.warning("delivery id=%s outcome=failed reason=attempts_exhausted attempts=%s", delivery_id, attempts)
                metrics.count_delivery(Channel(channel), "failed")
                continue
            res = conn.execute(
                update(d)
                .where(d.c.id == delivery_id, stale)
                .values(status=DeliveryStatus.PENDING.value, lease_until=now + ENQUEUE_LEASE, updated_at=now)
            )
            if res.rowcount == 1:
                taken.append(delivery_id)
    if taken:
        log.info("requeue stale deliveries count=%d", len(taken))
    return taken
