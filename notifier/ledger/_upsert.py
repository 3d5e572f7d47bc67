"""The one place that knows how each database spells INSERT ... ON CONFLICT."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Column, Connection, Table
from sqlalchemy.dialects import postgresql, sqlite


def upsert(
    conn: Connection,
    table: Table,
    values: Mapping[str, object],
    key: Sequence[Column[Any]],
    update: Callable[[Any], Mapping[str, object]] | None = None,
    returning: Column[Any] | None = None,
) -> Any:
    """Insert `values`; on a conflict over `key`, apply `update(excluded)` or, without it, do nothing.

    `update` receives the proposed row (`excluded`) so forward-only rules can compare old and new.
    Returns the result (rows of `returning`, if given; a skipped insert returns none).
    """
    dialect: Any = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(table).values(**values)
    if update is None:
        stmt = stmt.on_conflict_do_nothing(index_elements=list(key))
    else:
        stmt = stmt.on_conflict_do_update(index_elements=list(key), set_=dict(update(stmt.excluded)))
    if returning is not None:
        stmt = stmt.returning(returning)
    return conn.execute(stmt)


@lru_cache(maxsize=32)
def _statement(dialect_name: str, table: Table, key: tuple[Column[Any], ...],
               update: Callable[[Any], Mapping[str, object]] | None, returning: Column[Any] | None) -> Any:
    dialect: Any = postgresql if dialect_name == "postgresql" else sqlite
    stmt = dialect.insert(table)
    if update is None:
        stmt = stmt.on_conflict_do_nothing(index_elements=list(key))
    else:
        stmt = stmt.on_conflict_do_update(index_elements=list(key), set_=dict(update(stmt.excluded)))
    return stmt if returning is None else stmt.returning(returning)


def upsert_fixed(
    conn: Connection,
    table: Table,
    values: Mapping[str, object],
    key: Sequence[Column[Any]],
    update: Callable[[Any], Mapping[str, object]] | None = None,
    returning: Column[Any] | None = None,
) -> Any:
    """`upsert` for the hot paths (a check's writes): the statement is built once per shape and the values
    travel as parameters, so `update` must be a module-level function of `excluded` alone (it is part of
    the cache key, and what it returns must not depend on the call)."""
    return conn.execute(_statement(conn.dialect.name, table, tuple(key), update, returning), dict(values))
