"""What clear-on-read needs: the pushes a dialog's managers were sent and have not had cleared."""

from __future__ import annotations

from sqlalchemy import Connection, select

from notifier import models
from notifier.decide import PushedNotice
from notifier.enums import Channel, DeliveryStatus
from notifier.snapshot.messages import last_manager_id


def load_pushed(conn: Connection, dialog_id: int) -> tuple[list[PushedNotice], dict[int, int], int]:
    """(sent pushes not yet cleared, read pointers of their managers, last manager message id)."""
    d, rp = models.deliveries, models.read_pointers
    rows = conn.execute(
        select(d.c.id, d.c.manager_id, d.c.target, d.c.burst_floor, d.c.last_message_id).where(
            d.c.dialog_id == dialog_id, d.c.channel == Channel.WEBPUSH.value,
            d.c.status == DeliveryStatus.SENT.value, d.c.cleared_at.is_(None),
        )
    ).all()
    notices = [PushedNotice(r.id, r.manager_id, int(r.target), r.burst_floor, r.last_message_id) for r in rows]
    managers = sorted({n.manager_id for n in notices})
    pointers: dict[int, int] = {}
    if managers:
        found = conn.execute(
            select(rp.c.manager_id, rp.c.message_id).where(rp.c.dialog_id == dialog_id, rp.c.manager_id.in_(managers))
        )
        pointers = {int(r.manager_id): int(r.message_id) for r in found}
    return notices, pointers, last_manager_id(conn, dialog_id) if notices else 0
