"""The one place that knows how each database spells INSERT ... ON CONFLICT."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Column, Connection, Table
from sqlalchemy.dialects import postgresql, sqlite

Returning = Column[Any] | tuple[Column[Any], ...] | None


def _statement(dialect_name: str, table: Table, key: tuple[Column[Any], ...],
               update: Callable[[Any], Mapping[str, object]] | None, returning: Returning) -> Any:
    dialect: Any = postgresql if dialect_name == "postgresql" else sqlite
    stmt = dialect.insert(table)
    if update is None:
        stmt = stmt.on_conflict_do_nothing(index_elements=list(key))
    else:
        stmt = stmt.on_conflict_do_update(index_elements=list(key), set_=dict(update(stmt.excluded)))
    if returning is None:
        return stmt
    return stmt.returning(*returning) if isinstance(returning, tuple) else stmt.returning(returning)


_reused = lru_cache(maxsize=32)(_statement)


def upsert(
    conn: Connection,
    table: Table,
    values: Mapping[str, object] | Sequence[Mapping[str, object]],
    key: Sequence[Column[Any]],
    update: Callable[[Any], Mapping[str, object]] | None = None,
    returning: Returning = None,
    *,
    reuse: bool = False,
) -> Any:
    """Insert `values`; on a conflict over `key`, apply `update(excluded)` or, without it, do nothing.

    `update` receives the proposed row (`excluded`) so forward-only rules can compare old and new.
    Returns the result (rows of `returning`, if given; a skipped insert returns none). `values` may be a
    list of rows: one statement for all of them (SQLAlchemy's insertmanyvalues), rows of `returning` for
    those inserted, in no promised order.

    `reuse` (the hot paths: a check's writes): the statement is built once per shape and kept, the values
    travel as parameters. `update` is then part of the cache key: a module-level function of `excluded`
    alone, whose result does not depend on the call.
    """
    build = _reused if reuse else _statement
    params = dict(values) if isinstance(values, Mapping) else [dict(v) for v in values]
    return conn.execute(build(conn.dialect.name, table, tuple(key), update, returning), params)
