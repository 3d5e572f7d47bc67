"""Writes the host's processes make through `worker.client`: read pointers, team, preferences.

Plain SQLAlchemy Core with dialect upserts; no rendering, channel or Celery code is imported here.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from sqlalchemy import Engine, case, delete
from sqlalchemy.dialects import postgresql, sqlite

from notifier import models
from notifier.config import LANGUAGES
from notifier.errors import InvalidInput


def _insert(engine: Engine, table):  # type: ignore[no-untyped-def]
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def check_id(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidInput(f"{name} must be a positive integer, got {value!r}")
    return value


def mark_read(engine: Engine, dialog_id: int, manager_id: int, message_id: int) -> None:
    """Move the manager's read pointer forward to `message_id`; never backwards."""
    for name, value in (("dialog_id", dialog_id), ("manager_id", manager_id), ("message_id", message_id)):
        check_id(name, value)
    t = models.read_pointers
    now = time.time()
    stmt = _insert(engine, t).values(dialog_id=dialog_id, manager_id=manager_id, message_id=message_id, updated_at=now)
    newer = stmt.excluded.message_id > t.c.message_id
    stmt = stmt.on_conflict_do_update(
        index_elements=[t.c.dialog_id, t.c.manager_id],
        set_={
            "message_id": case((newer, stmt.excluded.message_id), else_=t.c.message_id),
            "updated_at": case((newer, stmt.excluded.updated_at), else_=t.c.updated_at),
        },
    )
    with engine.begin() as conn:
        conn.execute(stmt)


def add_team_member(engine: Engine, owner_id: int, user_id: int) -> None:
    """Register `user_id` as a manager of `owner_id`'s tenant: they pass the tenant guard for its dialogs."""
    check_id("owner_id", owner_id)
    check_id("user_id", user_id)
    stmt = _insert(engine, models.team_members).values(owner_id=owner_id, user_id=user_id, created_at=time.time())
    with engine.begin() as conn:
        conn.execute(stmt.on_conflict_do_nothing())


def remove_team_member(engine: Engine, owner_id: int, user_id: int) -> None:
    t = models.team_members
    with engine.begin() as conn:
        conn.execute(delete(t).where(t.c.owner_id == owner_id, t.c.user_id == user_id))


def set_language(engine: Engine, manager_id: int, language: str | None) -> None:
    """The language of what this manager receives; None goes back to NOTIFIER_DEFAULT_LANGUAGE."""
    check_id("manager_id", manager_id)
    if language is not None and language not in LANGUAGES:
        raise InvalidInput(f"language must be one of {', '.join(LANGUAGES)} or None, got {language!r}")
    t = models.preferences
    stmt = _insert(engine, t).values(manager_id=manager_id, language=language, updated_at=time.time())
    stmt = stmt.on_conflict_do_update(
        index_elements=[t.c.manager_id], set_={"language": language, "updated_at": stmt.excluded.updated_at}
    )
    with engine.begin() as conn:
        conn.execute(stmt)


def save_subscription(
    engine: Engine, manager_id: int, subscription: Mapping[str, object], user_agent: str | None, allowed_hosts: tuple[str, ...]
) -> int:
    """Store a browser's `PushSubscription.toJSON()`; the same endpoint saved again updates it. Returns its id."""
    from notifier.pushkeys import validate_subscription

    check_id("manager_id", manager_id)
    valid = validate_subscription(subscription, allowed_hosts)
    t = models.push_subscriptions
    now = time.time()
    agent = (user_agent or "")[:512] or None
    stmt = _insert(engine, t).values(
        manager_id=manager_id, endpoint=valid.endpoint, p256dh=valid.p256dh, auth=valid.auth, user_agent=agent,
        created_at=now, updated_at=now,
    )
    # A browser profile that changes hands (another manager logs in) moves its endpoint with it.
    stmt = stmt.on_conflict_do_update(
        index_elements=[t.c.endpoint],
        set_={"manager_id": manager_id, "p256dh": valid.p256dh, "auth": valid.auth, "user_agent": agent, "updated_at": now},
    ).returning(t.c.id)
    with engine.begin() as conn:
        return int(conn.execute(stmt).scalar_one())


def delete_subscription(engine: Engine, endpoint: str) -> bool:
    t = models.push_subscriptions
    with engine.begin() as conn:
        return bool(conn.execute(delete(t).where(t.c.endpoint == endpoint)).rowcount)
