"""Real services for the suite: a private redis-server, SQLite or PostgreSQL, an aiosmtpd server.

`NOTIFIER_TEST_DB=postgresql` runs against PostgreSQL (default URL below, overridable with
NOTIFIER_TEST_POSTGRES_URL); a fresh database is created for the session and dropped after it.
An absent service fails the run with a message saying what to start; nothing is skipped.
"""

from __future__ import annotations

import contextlib
import importlib.util
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
from notifier.db import dispose_all, get_engine, normalize_url
from notifier.migrate import upgrade
from notifier.redis_store import reset_clients
from notifier.runtime import Runtime, build_runtime, set_runtime
from tests.support import Drive, Host, RedisServer

if TYPE_CHECKING:
    from tests.smtpserver import SmtpServer  # aiosmtpd: the worker extra, absent beside the host's pins

# Library internals keep real time (asyncio timers, socket health checks); our code sees the frozen clock.
freezegun.configure(extend_ignore_list=["asyncio", "aiosmtplib", "aiosmtpd", "redis", "kombu", "celery", "urllib3"])

PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/postgres"

# False in the host's environment (`make test-host`: base, fastapi and test extras beside the host's pins),
# where only the modules of HOST_TESTS in the Makefile run.
WORKER_EXTRA = importlib.util.find_spec("celery") is not None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def db_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    kind = os.environ.get("NOTIFIER_TEST_DB", "sqlite")
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.sqlite3'}"
        return
    if kind != "postgresql":
        pytest.fail(f"NOTIFIER_TEST_DB must be sqlite or postgresql, got {kind!r}")
    admin_url = os.environ.get("NOTIFIER_TEST_POSTGRES_URL", PG_DEFAULT)
    name = f"notifier_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(normalize_url(admin_url), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - turned into a clear failure
        pytest.fail(f"PostgreSQL is required for NOTIFIER_TEST_DB=postgresql but {admin_url} did not answer: {exc}")
    yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    dispose_all()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def engine(db_url: str) -> Engine:
    eng = get_engine(db_url)
    host.host_metadata.create_all(eng)
    upgrade(eng)
    return eng


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[SmtpServer]:
    from tests.smtpserver import SmtpServer

    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def base_env(redis_server: RedisServer, db_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    env = {
        "NOTIFIER_DATABASE_URL": db_url,
        "NOTIFIER_REDIS_URL": redis_server.url,
        "NOTIFIER_EMAIL_FROM": "ReplyX <noreply@replyx.test>",
        "NOTIFIER_OUTBOX_DIR": str(tmp_path / "outbox"),
        "NOTIFIER_DIALOG_URL": "https://app.replyx.test/dialogs?dialog_id={dialog_id}",
    }
    if WORKER_EXTRA:  # beside the host's pins nothing sends mail, and the test SMTP server (aiosmtpd) is absent
        smtp_server: SmtpServer = request.getfixturevalue("smtp_server")
        env |= {
            "NOTIFIER_SMTP_HOST": "127.0.0.1",
            "NOTIFIER_SMTP_PORT": str(smtp_server.port),
            "NOTIFIER_SMTP_TLS": "none",
            "NOTIFIER_SMTP_TIMEOUT_SECONDS": "5",
        }
    return env


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
    # base_env asks for the SMTP server at run time (not in its signature), so name it here too.
    if "smtp_server" in request.fixturenames or (WORKER_EXTRA and "base_env" in request.fixturenames):
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
def hostdb(engine: Engine) -> Host:
    return Host(engine)


@pytest.fixture
def drive(rt: Runtime) -> Drive:
    return Drive(rt)
