"""Our migration step (`notifier init-db`) and the filter that keeps the host's Alembic away from our tables.

Two histories share one database: the host's (its `alembic_version`) and ours (`notifier_alembic_version`,
every table prefixed `notifier_`). The host's `env.py` passes `include_object` to
`context.configure(...)`; its autogenerate then neither proposes dropping our tables nor looks at their
columns, indexes or constraints:

    from notifier.migrate import include_object
    context.configure(connection=connection, target_metadata=target_metadata, include_object=include_object)

A host that already has an `include_object` chains it: `include_object(...) and its_own(...)`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
PREFIX = "notifier_"
# Any constant works; this one is "notifier" in ASCII, so a DBA reading pg_locks can guess whose it is.
_PG_LOCK_KEY = 0x6E6F746966696572
# SQLite gives up on a lock after its busy timeout (10 s, notifier.db); a deploy behind a longer writer tries
# again, this many times in all.
_SQLITE_LOCKED_TRIES = 5


def owned(type_: str, name: str | None, obj: Any) -> bool:
    """Is this schema object ours: a `notifier_` table, or a column, index or constraint of one?"""
    if type_ == "table":
        return str(name).startswith(PREFIX)
    table = getattr(obj, "table", None)  # columns, indexes, unique and foreign key constraints
    return table is not None and str(getattr(table, "name", "")).startswith(PREFIX)


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Alembic's `include_object` hook for the host's env.py: False for our objects, True for the rest."""
    return not owned(type_, name, obj)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Create or upgrade our tables; idempotent, and safe when several deploys run it at once: the first
    takes a lock for its whole transaction (PostgreSQL: a transaction-scoped advisory lock; SQLite: the
    write lock, BEGIN IMMEDIATE), the others wait for it and then find nothing to do. SQLite stops waiting
    after its busy timeout ("database is locked"): the whole step, rolled back, is then tried again."""
    for attempt in range(1, _SQLITE_LOCKED_TRIES + 1):
        try:
            _upgrade_once(engine, revision)
            return
        except OperationalError as exc:
            locked = engine.dialect.name == "sqlite" and "locked" in str(exc.orig).lower()
            if not locked or attempt == _SQLITE_LOCKED_TRIES:
                raise
            log.warning("init-db: another writer holds the SQLite database; trying again (%d of %d)",
                        attempt + 1, _SQLITE_LOCKED_TRIES)
            time.sleep(0.5 * attempt)


def _upgrade_once(engine: Engine, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        elif conn.dialect.name == "sqlite":
            # The sqlite3 module opens transactions only before DML; without this each CREATE TABLE would
            # commit on its own and a second deploy could read "no version" and fail on "already exists".
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
