"""Writes the host's processes make through `worker.client`: read pointers, team, language, subscriptions.

Arguments are checked here (InvalidInput naming the argument) before any SQL runs, so a caller never sees
a database error for bad input.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from sqlalchemy import Engine, case, delete

from notifier import models
from notifier.ledger._upsert import upsert
from notifier.preferences import QuietHours, parse_fields
from notifier.pushkeys import validate_subscription
from notifier.validate import check_id, check_text

USER_AGENT_LIMIT = 512


def mark_read(engine: Engine, dialog_id: int, manager_id: int, message_id: int) -> None:
    """Move the manager's read pointer forward to `message_id`; never backwards."""
    for name, value in (("dialog_id", dialog_id), ("manager_id", manager_id), ("message_id", message_id)):
        check_id(name, value)
    t = models.read_pointers
    now = time.time()
    values = {"dialog_id": dialog_id, "manager_id": manager_id, "message_id": message_id, "updated_at": now}

    def forward(new: object) -> dict[str, object]:
        newer = new.message_id > t.c.message_id  # type: ignore[attr-defined]
        return {
            "message_id": case((newer, new.message_id), else_=t.c.message_id),  # type: ignore[attr-defined]
            "updated_at": case((newer, new.updated_at), else_=t.c.updated_at),  # type: ignore[attr-defined]
        }

    with engine.begin() as conn:
        upsert(conn, t, values, [t.c.dialog_id, t.c.manager_id], update=forward)


def add_team_member(engine: Engine, owner_id: int, user_id: int) -> None:
    """Register `user_id` as a manager of `owner_id`'s tenant: they pass the tenant guard for its dialogs."""
    check_id("owner_id", owner_id)
    check_id("user_id", user_id)
    t = models.team_members
    with engine.begin() as conn:
        upsert(conn, t, {"owner_id": owner_id, "user_id": user_id, "created_at": time.time()}, [t.c.owner_id, t.c.user_id])


def remove_team_member(engine: Engine, owner_id: int, user_id: int) -> bool:
    """Unregister a team member; True if they were registered. Pending notifications to them are dropped
    at send time (they are no longer a recipient)."""
    check_id("owner_id", owner_id)
    check_id("user_id", user_id)
    t = models.team_members
    with engine.begin() as conn:
        return bool(conn.execute(delete(t).where(t.c.owner_id == owner_id, t.c.user_id == user_id)).rowcount)


def set_language(engine: Engine, manager_id: int, language: str | None) -> None:
    """The language of what this manager receives; None goes back to NOTIFIER_DEFAULT_LANGUAGE."""
    set_preferences(engine, manager_id, {"language": language})


def set_preferences(engine: Engine, manager_id: int, fields: Mapping[str, object]) -> None:
    """Store some of a manager's preferences (validated here; the others stay as they are). None means
    "the default"; `muted_dialogs` replaces the whole list; `quiet_hours` is {"start", "end"} or None."""
    check_id("manager_id", manager_id)
    valid = parse_fields(fields)
    t, md = models.preferences, models.muted_dialogs
    row: dict[str, object] = {k: v for k, v in valid.items() if k in ("push", "email", "language", "time_zone")}
    if "quiet_hours" in valid:
        quiet = valid["quiet_hours"]
        window = quiet.as_json() if isinstance(quiet, QuietHours) else {"start": None, "end": None}
        row.update(quiet_start=window["start"], quiet_end=window["end"])
    now = time.time()
    with engine.begin() as conn:
        upsert(conn, t, {"manager_id": manager_id, **row, "updated_at": now}, [t.c.manager_id],
               update=lambda _new: {**row, "updated_at": now})
        if "muted_dialogs" in valid:
            conn.execute(delete(md).where(md.c.manager_id == manager_id))
            muted = sorted(valid["muted_dialogs"])  # type: ignore[call-overload]
            if muted:
                conn.execute(md.insert(), [{"manager_id": manager_id, "dialog_id": d} for d in muted])


def save_subscription(
    engine: Engine, manager_id: int, subscription: Mapping[str, object], user_agent: str | None, allowed_hosts: tuple[str, ...]
) -> int:
    """Store a browser's `PushSubscription.toJSON()`; the same endpoint saved again updates it. Returns its id."""
    check_id("manager_id", manager_id)
    agent = check_text("user_agent", user_agent, 10_000, optional=True)
    valid = validate_subscription(subscription, allowed_hosts)
    t = models.push_subscriptions
    now = time.time()
    agent = (agent or "")[:USER_AGENT_LIMIT] or None
    values = {
        "manager_id": manager_id, "endpoint": valid.endpoint, "p256dh": valid.p256dh, "auth": valid.auth,
        "user_agent": agent, "created_at": now, "updated_at": now,
    }
    # A browser profile that changes hands (another manager logs in) moves its endpoint with it; a push
    # already queued for the previous owner is dropped at send time (the owner is compared then).
    moved = {"manager_id": manager_id, "p256dh": valid.p256dh, "auth": valid.auth, "user_agent": agent, "updated_at": now}
    with engine.begin() as conn:
        return int(upsert(conn, t, values, [t.c.endpoint], update=lambda _new: moved, returning=t.c.id).scalar_one())


def delete_subscription(engine: Engine, endpoint: str, manager_id: int | None = None) -> bool:
    """Forget a subscription; with `manager_id`, only if it is theirs. True if one was deleted."""
    check_text("endpoint", endpoint, 2048)
    if manager_id is not None:
        check_id("manager_id", manager_id)
    t = models.push_subscriptions
    stmt = delete(t).where(t.c.endpoint == endpoint)
    if manager_id is not None:
        stmt = stmt.where(t.c.manager_id == manager_id)
    with engine.begin() as conn:
        return bool(conn.execute(stmt).rowcount)
