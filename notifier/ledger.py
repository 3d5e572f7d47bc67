"""The ledger: decisions as history, deliveries as claims with a unique key.

Key of a delivery: (dialog, recipient, channel, target, burst floor). The burst floor is
max(read pointer, last manager message) when decided, so every check of one burst, however many race,
lands on the same key and only the first insert wins. Status moves
pending -> sending -> sent | failed | gone | cancelled; pending -> sending again after a transient error.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, and_, case, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from notifier import models
from notifier.decide import Decision
from notifier.enums import Channel, DeliveryStatus

log = logging.getLogger(__name__)

# A queued delivery whose task never ran is re-enqueued after this long.
ENQUEUE_LEASE = 60.0

d = models.deliveries


def record_decisions(conn: Connection, dialog_id: int, decisions: Sequence[Decision], now: float) -> None:
    if not decisions:
        return
    conn.execute(
        models.decisions.insert(),
        [
            {
                "dialog_id": dialog_id,
                "manager_id": x.manager_id,
                "action": x.action.value,
                "reason": x.reason.value,
                "channel": x.channel.value if x.channel else None,
                "burst_floor": x.burst_floor,
                "first_message_id": x.first_message_id,
                "last_message_id": x.last_message_id,
                "created_at": now,
            }
            for x in decisions
        ],
    )


def mark_covered(conn: Connection, dialog_id: int, message_id: int, now: float) -> None:
    """Every visitor message up to `message_id` has had its final decisions: the reconciler may skip them."""
    t = models.dialog_checks
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(t).values(dialog_id=dialog_id, covered_up_to=message_id, checked_at=now)
    newer = stmt.excluded.covered_up_to > t.c.covered_up_to
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[t.c.dialog_id],
            set_={"covered_up_to": case((newer, stmt.excluded.covered_up_to), else_=t.c.covered_up_to), "checked_at": now},
        )
    )


def claim_new(conn: Connection, dialog_id: int, decision: Decision, targets: Sequence[str], now: float) -> list[int]:
    """Insert one pending delivery per target; returns the ids this call created (none if already there)."""
    assert decision.manager_id is not None and decision.channel is not None
    assert decision.first_message_id is not None and decision.last_message_id is not None
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    created: list[int] = []
    for target in targets:
        stmt = (
            dialect.insert(d)
            .values(
                dialog_id=dialog_id,
                manager_id=decision.manager_id,
                channel=decision.channel.value,
                target=target,
                burst_floor=decision.burst_floor,
                first_message_id=decision.first_message_id,
                last_message_id=decision.last_message_id,
                status=DeliveryStatus.PENDING.value,
                attempts=0,
                lease_until=now + ENQUEUE_LEASE,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing()
            .returning(d.c.id)
        )
        created.extend(conn.execute(stmt).scalars())
    return created


@dataclass(frozen=True)
class DeliveryRow:
    id: int
    dialog_id: int
    manager_id: int
    channel: Channel
    target: str
    burst_floor: int
    last_message_id: int
    attempts: int


def claim(engine: Engine, delivery_id: int, now: float, send_lease: float) -> DeliveryRow | None:
    """Take a delivery for sending; None when it is done, not due, or held by a live lease elsewhere."""
    claimable = or_(
        and_(d.c.status == DeliveryStatus.PENDING.value, or_(d.c.not_before.is_(None), d.c.not_before <= now)),
        and_(d.c.status == DeliveryStatus.SENDING.value, d.c.lease_until < now),
    )
    with engine.begin() as conn:
        res = conn.execute(
            update(d)
            .where(d.c.id == delivery_id, claimable)
            .values(status=DeliveryStatus.SENDING.value, lease_until=now + send_lease, attempts=d.c.attempts + 1, updated_at=now)
        )
        if res.rowcount != 1:
            return None
        r = conn.execute(select(d).where(d.c.id == delivery_id)).one()
    return DeliveryRow(
        r.id, r.dialog_id, r.manager_id, Channel(r.channel), r.target, r.burst_floor, r.last_message_id, r.attempts
    )


def _finish(engine: Engine, delivery_id: int, now: float, **values: object) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(d)
            .where(d.c.id == delivery_id, d.c.status == DeliveryStatus.SENDING.value)
            .values(updated_at=now, **values)
        )


def mark_sent(engine: Engine, delivery_id: int, now: float, ref: str | None) -> None:
    _finish(engine, delivery_id, now, status=DeliveryStatus.SENT.value, sent_at=now, message_ref=ref, lease_until=None)


def mark_final(engine: Engine, delivery_id: int, now: float, status: DeliveryStatus, error: str) -> None:
    _finish(engine, delivery_id, now, status=status.value, last_error=error[:1000], lease_until=None)


def mark_retry(engine: Engine, delivery_id: int, now: float, retry_in: float, error: str) -> None:
    _finish(
        engine,
        delivery_id,
        now,
        status=DeliveryStatus.PENDING.value,
        not_before=now + retry_in,
        lease_until=now + retry_in + ENQUEUE_LEASE,
        last_error=error[:1000],
    )


def requeue_stale(engine: Engine, now: float, limit: int = 200) -> list[int]:
    """Deliveries whose queued task or sending worker vanished; each id is handed out once per lease."""
    stale = and_(
        d.c.status.in_([DeliveryStatus.PENDING.value, DeliveryStatus.SENDING.value]), d.c.lease_until < now
    )
    taken: list[int] = []
    with engine.begin() as conn:
        ids = conn.execute(select(d.c.id).where(stale).order_by(d.c.id).limit(limit)).scalars().all()
        for delivery_id in ids:
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
