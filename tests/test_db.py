"""Database URLs and engines: a plain PostgreSQL URL works with psycopg 3 or, beside a host, psycopg2 alone."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, exc, text

from notifier import db
from notifier.errors import ConfigError

pytestmark = pytest.mark.host  # runs in a host-only install too


@pytest.mark.parametrize(
    ("url", "with_psycopg3", "expected"),
    [
        ("postgresql://u:secret@db:5432/replyx", True, "postgresql+psycopg://u:secret@db:5432/replyx"),
        ("postgresql://u:secret@db:5432/replyx", False, "postgresql+psycopg2://u:secret@db:5432/replyx"),
        ("postgres://u@db/replyx", True, "postgresql+psycopg://u@db/replyx"),
        ("postgres://u@db/replyx", False, "postgresql+psycopg2://u@db/replyx"),
        # A driver named in the URL is kept, whichever drivers are installed.
        ("postgresql+psycopg2://u@db/replyx", True, "postgresql+psycopg2://u@db/replyx"),
        ("postgresql+psycopg://u@db/replyx", False, "postgresql+psycopg://u@db/replyx"),
        ("postgres+psycopg2://u@db/replyx", True, "postgresql+psycopg2://u@db/replyx"),
        ("sqlite:///var/notifier.sqlite3", True, "sqlite:///var/notifier.sqlite3"),
    ],
)
def test_a_plain_postgresql_url_gets_the_driver_that_is_installed(
    monkeypatch: pytest.MonkeyPatch, url: str, with_psycopg3: bool, expected: str
) -> None:
    monkeypatch.setattr(db, "has_psycopg3", lambda: with_psycopg3)
    assert db.normalize_url(url) == expected


def test_a_bad_url_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="NOTIFIER_DATABASE_URL"):
        db.normalize_url("not a url")


def test_the_engine_runs_on_the_driver_this_environment_has(engine: Engine, db_url: str) -> None:
    """The suite's own URL is a plain one: psycopg 3 beside the worker, psycopg2 in the host's environment."""
    if db_url.startswith("sqlite"):
        assert engine.dialect.driver == "pysqlite"
    else:
        assert db_url.startswith("postgresql://")
        assert engine.dialect.driver == ("psycopg" if db.has_psycopg3() else "psycopg2")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar() == 1


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that completes the handshake and never says a word, like a hung PostgreSQL."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


def test_a_database_that_never_answers_fails_within_the_connect_timeout(
    monkeypatch: pytest.MonkeyPatch, silent_server: int
) -> None:
    monkeypatch.setattr(db, "CONNECT_TIMEOUT_SECONDS", 2)  # libpq's smallest
    engine = db.create(f"postgresql://notifier@127.0.0.1:{silent_server}/replyx")
    started = time.monotonic()
    try:
        with pytest.raises(exc.OperationalError):
            engine.connect()
    finally:
        engine.dispose()
    assert 1.5 < time.monotonic() - started < 6


def test_any_of_matches_a_list_of_any_length_with_one_statement_text(engine: Engine) -> None:
    """`db.any_of` finds exactly the listed rows, for an empty list too; on PostgreSQL it binds the list as
    one array, so the statement's text (what the server prepares) is the same whatever the list's length."""
    from sqlalchemy import BigInteger, Column, MetaData, Table, event, insert, select

    table = Table(f"any_of_probe_{uuid.uuid4().hex[:8]}", MetaData(), Column("id", BigInteger, primary_key=True))
    table.create(engine)
    sent: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        sent.append(statement)

    try:
        with engine.begin() as conn:
            conn.execute(insert(table), [{"id": i} for i in range(1, 11)])
        query = select(table.c.id).where(db.any_of(table.c.id, "ids")).order_by(table.c.id)
        event.listen(engine, "before_cursor_execute", record)
        with engine.connect() as conn:
            for wanted in ([], [3], [1, 5, 99], list(range(1, 11)), [2**40]):
                assert conn.execute(query, {"ids": wanted}).scalars().all() == sorted(i for i in wanted if 1 <= i <= 10)
    finally:
        event.remove(engine, "before_cursor_execute", record)
        table.drop(engine)
    assert len(sent) == 5
    if engine.dialect.name == "postgresql":
        assert len(set(sent)) == 1 and "= ANY (" in sent[0]
    else:
        assert "IN (" in sent[1] and len(set(sent)) > 1  # expanded: one placeholder per value
