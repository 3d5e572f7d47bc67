"""The one place that knows how each database spells INSERT ... ON CONFLICT."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Column, Connection, Table
from sqlalchemy.dialects import postgresql, sqlite


def _statement(dialect_name: str, table: Table, key: tuple[Column[Any], ...],
               update: Callable[[Any], Mapping[str, object]] | None, returning: Column[Any] | None) -> Any:
    dialect: Any = postgresql if dialect_name == "postgresql" else sqlite
    stmt = dialect.insert(table)
    if update is None:
        stmt = stmt.on_conflict_do_nothing(index_elements=list(key))
    else:
        stmt = stmt.on_conflict_do_update(index_elements=list(key), set_=dict(update(stmt.excluded)))
    return stmt if returning is None else stmt.returning(returning)


_reused = lru_cache(maxsize=32)(_statement)


def upsert(
    conn: Connection,
    table: Table,
    values: Mapping[str, object],
    key: Sequence[Column[Any]],
    update: Callable[[Any], Mapping[str, object]] | None = None,
    returning: Column[Any] | None = None,
    *,
    reuse: bool = False,
) -> Any:
    """Insert `values`; on a conflict over `key`, apply `update(excluded)` or, without it, do nothing.

    `update` receives the proposed row (`excluded`) so forward-only rules can compare old and new.
    Returns the result (rows of `returning`, if given; a skipped insert returns none).

    `reuse` (the hot paths: a check's writes): the statement is built once per shape and kept, the values
    travel as parameters. `update` is then part of the cache key: a module-level function of `excluded`
    alone, whose result does not depend on the call.
    """
    build = _reused if reuse else _statement
    return conn.execute(build(conn.dialect.name, table, tuple(key), update, returning), dict(values))
