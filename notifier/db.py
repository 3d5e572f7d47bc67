"""Database engines: one per process and URL, created on first use (never at import time)."""

from __future__ import annotations

import functools
import importlib
import os
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import ARRAY, Boolean, ColumnElement, Connection, Engine, any_, bindparam, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.visitors import InternalTraversal

from notifier.errors import ConfigError

CONNECT_TIMEOUT_SECONDS = 5

_engines: dict[tuple[int, str], Engine] = {}
_lock = threading.Lock()


@functools.cache
def has_psycopg3() -> bool:
    """psycopg 3 imports here (the worker extra ships it; a host may have only psycopg2)."""
    try:
        importlib.import_module("psycopg")
    except ImportError:  # not installed, or installed without a libpq it can load
        return False
    return True


def normalize_url(url: str) -> str:
    """Give a plain `postgresql://` (or `postgres://`) URL a driver: psycopg 3 when it imports, else psycopg2.

    A driver named in the URL (`postgresql+psycopg2://`, `postgresql+psycopg://`) is kept.
    """
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise ConfigError(f"NOTIFIER_DATABASE_URL is not a database URL: {exc}") from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend in ("postgresql", "postgres"):
        driver = driver or ("psycopg" if has_psycopg3() else "psycopg2")
        parsed = parsed.set(drivername=f"postgresql+{driver}")
    return parsed.render_as_string(hide_password=False)


class AnyOf(ColumnElement[bool]):
    """`column IN (...)` for a list of values bound at execution as `name` (`any_of`)."""

    inherit_cache = True
    type = Boolean()
    _is_implicitly_boolean = True  # a comparison: not written `... = 1` where booleans are integers (SQLite)
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement), ("name", InternalTraversal.dp_string)]

    def __init__(self, column: ColumnElement[Any], name: str) -> None:
        self.column, self.name = column, name


def any_of(column: ColumnElement[Any], name: str) -> AnyOf:
    """`column IN (the list bound as name)`. On PostgreSQL `column = ANY(:name)`: one array parameter, so
    the statement's text is the same whatever the list's length; an expanding IN is rendered again at every
    execution, one bind (and cast) per value, which cost about a tenth of a delivery group's reads, and each
    length was a statement of its own to prepare. Elsewhere (SQLite) the expanding IN."""
    return AnyOf(column, name)


@compiles(AnyOf)
def _in_list(element: AnyOf, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.column.in_(bindparam(element.name, expanding=True)), **kw))


@compiles(AnyOf, "postgresql")
def _any_array(element: AnyOf, compiler: Any, **kw: Any) -> str:
    array = bindparam(element.name, type_=ARRAY(element.column.type))
    return str(compiler.process(element.column == any_(array), **kw))


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def create(url: str) -> Engine:
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 10})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # connect_timeout is a libpq parameter: psycopg 3 and psycopg2 both take it.
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=5,
        pool_timeout=10,
        connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS},
    )


def get_engine(url: str) -> Engine:
    """The engine for `url` in this process; a forked child gets its own."""
    key = (os.getpid(), url)
    engine = _engines.get(key)
    if engine is None:
        with _lock:
            engine = _engines.get(key)
            if engine is None:
                engine = _engines[key] = create(url)
    return engine


def autocommit(engine: Engine) -> Connection:
    """A connection whose every statement commits by itself, for one-statement writes and for reads: no BEGIN
    before them, no COMMIT or ROLLBACK after, two round trips fewer each time. (PostgreSQL gives each
    statement its own snapshot at READ COMMITTED inside a transaction too, so reads lose nothing.)"""
    return engine.connect().execution_options(isolation_level="AUTOCOMMIT")


def dispose(url: str) -> None:
    """Close this process's engine for `url` (its pooled connections), if there is one."""
    with _lock:
        for key in [k for k in _engines if k[1] == url]:
            _engines.pop(key).dispose()


def dispose_all() -> None:
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
