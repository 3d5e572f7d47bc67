"""Decisions as history, and how far each dialog's checks have reached (what the reconciler may skip)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, case

from notifier import models
from notifier.decide import Decision
from notifier.ledger._upsert import upsert


def record_decisions(conn: Connection, dialog_id: int, decisions: Sequence[Decision], now: float) -> None:
    record_decisions_many(conn, [(dialog_id, decisions)], now)


def record_decisions_many(conn: Connection, decided: Sequence[tuple[int, Sequence[Decision]]], now: float) -> None:
    """The decisions of several dialogs (a chunk of checks) in one statement."""
    rows = [
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
        for dialog_id, decisions in decided
        for x in decisions
    ]
    if rows:
        conn.execute(models.decisions.insert(), rows)


def mark_covered(conn: Connection, dialog_id: int, message_id: int, now: float) -> None:
    mark_covered_many(conn, [(dialog_id, message_id)], now)


def mark_covered_many(conn: Connection, covered: Sequence[tuple[int, int]], now: float) -> None:
    """Every visitor message up to `message_id` has had its final decisions, per dialog: the reconciler may
    skip them. One statement for all; a dialog named twice counts with its highest message."""
    t = models.dialog_checks
    highest: dict[int, int] = {}
    for dialog_id, message_id in covered:
        highest[dialog_id] = max(message_id, highest.get(dialog_id, message_id))
    if highest:
        upsert(conn, t, [{"dialog_id": d, "covered_up_to": m, "checked_at": now} for d, m in highest.items()],
               [t.c.dialog_id], update=_forward_only, reuse=True)


def _forward_only(new: Any) -> dict[str, object]:
    """A dialog's coverage only moves forward; the time is the newer check's."""
    t = models.dialog_checks
    return {
        "covered_up_to": case((new.covered_up_to > t.c.covered_up_to, new.covered_up_to), else_=t.c.covered_up_to),
        "checked_at": new.checked_at,
    }
