"""Real services for the suite: a private redis-server, SQLite or PostgreSQL, an aiosmtpd server.

`NOTIFIER_TEST_DB=postgresql` runs against PostgreSQL (default URL below, overridable with
NOTIFIER_TEST_POSTGRES_URL); a fresh database is created for the session and dropped after it.
An absent service fails the run with a message saying what to start; nothing is skipped.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import freezegun
import pytest
import redis
from sqlalchemy import Engine, create_engine, text

from notifier import host, models
from notifier.config import Settings, load_settings, set_settings
from notifier.db import dispose, get_engine, normalize_url
from notifier.migrate import upgrade
from notifier.redis_conn import reset_clients
from notifier.runtime import Runtime, build_runtime, set_runtime
from tests.support import Drive, Host, RedisServer

if TYPE_CHECKING:  # imported where used: a host-only install (`pytest -m host`) has no aiosmtpd or http_ece
    from tests.pushservice import PushService
    from tests.smtpserver import SmtpServer

# Library internals keep real time (asyncio timers, socket health checks); our code sees the frozen clock.
freezegun.configure(extend_ignore_list=["asyncio", "aiosmtplib", "aiosmtpd", "redis", "kombu", "celery", "urllib3"])

PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/postgres"

def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Under `-m host` (a host-only install: worker.client and the kit with the host's pins, no Celery,
    SMTP, push or templates), collect only the modules that hold host tests: the others import what that
    install lacks, and pytest imports a module before it can deselect its tests."""
    if config.getoption("markexpr") != "host" or not collection_path.name.startswith("test_"):
        return None
    return "mark.host" not in collection_path.read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@contextlib.contextmanager
def fresh_database(tmp_path_factory: pytest.TempPathFactory, label: str) -> Iterator[str]:
    """A new, empty database of the kind NOTIFIER_TEST_DB names (a SQLite file, or a PostgreSQL database
    dropped afterwards); yields its URL."""
    kind = os.environ.get("NOTIFIER_TEST_DB", "sqlite")
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp(label) / 'test.sqlite3'}"
        return
    if kind != "postgresql":
        pytest.fail(f"NOTIFIER_TEST_DB must be sqlite or postgresql, got {kind!r}")
    admin_url = os.environ.get("NOTIFIER_TEST_POSTGRES_URL", PG_DEFAULT)
    name = f"notifier_{label}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(normalize_url(admin_url), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - turned into a clear failure
        pytest.fail(f"PostgreSQL is required for NOTIFIER_TEST_DB=postgresql but {admin_url} did not answer: {exc}")
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        dispose(url)  # this database's engine only: another test's engine may still be in use
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def db_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with fresh_database(tmp_path_factory, "test") as url:
        yield url


@pytest.fixture
def empty_db_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database of its own for one test, with nothing in it."""
    with fresh_database(tmp_path_factory, "empty") as url:
        yield url


@pytest.fixture(scope="session")
def replyx_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """A second database shaped like ReplyX's in production (examples/replyx_host/schema.py: its columns and
    its indexes, no others) with our tables beside the host's, as `notifier init-db` leaves them."""
    from examples.replyx_host.schema import metadata as replyx_metadata

    with fresh_database(tmp_path_factory, "replyx") as url:
        eng = get_engine(url)
        replyx_metadata.create_all(eng)
        upgrade(eng)
        yield eng


@pytest.fixture(scope="session")
def engine(db_url: str) -> Iterator[Engine]:
    eng = get_engine(db_url)
    host.host_metadata.create_all(eng)
    upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[SmtpServer]:
    from tests.smtpserver import SmtpServer

    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def core_env(redis_server: RedisServer, db_url: str, tmp_path: Path) -> dict[str, str]:
    """What a host process needs (database and Redis), without the SMTP server of the worker's tests."""
    return {
        "NOTIFIER_DATABASE_URL": db_url,
        "NOTIFIER_REDIS_URL": redis_server.url,
        "NOTIFIER_EMAIL_FROM": "ReplyX <noreply@replyx.test>",
        "NOTIFIER_OUTBOX_DIR": str(tmp_path / "outbox"),
        "NOTIFIER_DIALOG_URL": "https://app.replyx.test/dialogs?dialog_id={dialog_id}",
    }


@pytest.fixture
def base_env(core_env: dict[str, str], smtp_server: SmtpServer) -> dict[str, str]:
    return {
        **core_env,
        "NOTIFIER_SMTP_HOST": "127.0.0.1",
        "NOTIFIER_SMTP_PORT": str(smtp_server.port),
        "NOTIFIER_SMTP_TLS": "none",
        "NOTIFIER_SMTP_TIMEOUT_SECONDS": "5",
    }


@pytest.fixture
def settings(base_env: dict[str, str]) -> Settings:
    return load_settings(base_env)


@pytest.fixture(autouse=True)
def _clean_state(request: pytest.FixtureRequest) -> Iterator[None]:
    """Empty every table and the shared test Redis before each test that uses them."""
    if "engine" in request.fixturenames or "rt" in request.fixturenames:
        eng: Engine = request.getfixturevalue("engine")
        with eng.begin() as conn:
            for table in reversed([*host.host_metadata.sorted_tables, *models.metadata.sorted_tables]):
                conn.execute(table.delete())
    if "redis_server" in request.fixturenames or "rt" in request.fixturenames:
        server: RedisServer = request.getfixturevalue("redis_server")
        client = redis.Redis.from_url(server.url)
        client.flushall()
        client.close()
    if "smtp_server" in request.fixturenames:
        request.getfixturevalue("smtp_server").reset()
    yield
    set_settings(None)
    set_runtime(None)
    reset_clients()


@contextlib.contextmanager
def runtime_for(settings: Settings) -> Iterator[Runtime]:
    """Settings and runtime of this process, as a worker would have them; closed afterwards."""
    set_settings(settings)
    runtime = build_runtime(settings)
    set_runtime(runtime)
    try:
        yield runtime
    finally:
        runtime.close()


@pytest.fixture
def rt(settings: Settings, engine: Engine) -> Iterator[Runtime]:
    with runtime_for(settings) as runtime:
        yield runtime


@pytest.fixture
def host_rt(core_env: dict[str, str], engine: Engine) -> Iterator[Runtime]:
    """The runtime as a host process has it (no SMTP server started): for tests that run host-only."""
    with runtime_for(load_settings(core_env)) as runtime:
        yield runtime


@pytest.fixture
def hostdb(engine: Engine) -> Host:
    return Host(engine)


@pytest.fixture
def drive(rt: Runtime) -> Drive:
    return Drive(rt)


@pytest.fixture
def push_service() -> Iterator[PushService]:
    from tests.pushservice import PushService

    with PushService() as service:
        yield service


@pytest.fixture
def push_settings(base_env: dict[str, str]) -> Settings:
    from notifier.pushkeys import generate_vapid_keys

    private, _public = generate_vapid_keys()
    env = {
        **base_env,
        "NOTIFIER_VAPID_PRIVATE_KEY": private,
        "NOTIFIER_VAPID_SUBJECT": "mailto:ops@replyx.test",
        "NOTIFIER_PUSH_ALLOWED_HOSTS": "127.0.0.1,fcm.googleapis.com",
    }
    return load_settings(env)


@pytest.fixture
def prt(push_settings: Settings, engine: Engine, redis_server: RedisServer) -> Iterator[Runtime]:
    """A runtime with Web Push on (loopback push service allowed)."""
    with runtime_for(push_settings) as runtime:
        yield runtime
