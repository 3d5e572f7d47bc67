"""Two Alembic histories in one database: the host's autogenerate, given `notifier.migrate.include_object`,
proposes nothing about our tables; `notifier init-db` is safe on every deploy, also several at once."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import alembic
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, inspect, text

from notifier import models
from notifier.db import normalize_url
from tests.procs import REPO, child_env

pytestmark = pytest.mark.host

HOST_ENV = """
from alembic import context

from examples.replyx_host.schema import metadata
{import_filter}

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata{filter_arg})
with context.begin_transaction():
    context.run_migrations()
"""


def host_autogenerate(engine: Engine, folder: Path, with_filter: bool) -> str:
    """What `alembic revision --autogenerate` writes for the host (ReplyX's env.py, its models) against a
    database that holds its tables and ours. Returns the new revision's source."""
    (folder / "versions").mkdir(parents=True)
    shutil.copy(Path(alembic.__file__).parent / "templates" / "generic" / "script.py.mako", folder)
    cfg = Config()
    cfg.set_main_option("script_location", str(folder))
    (folder / "env.py").write_text(textwrap.dedent(HOST_ENV.format(
        import_filter="from notifier.migrate import include_object" if with_filter else "",
        filter_arg=", include_object=include_object" if with_filter else "",
    )))  # fmt: skip
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.revision(cfg, message="host", autogenerate=True)
    [script] = (folder / "versions").glob("*_host.py")
    return script.read_text()


def test_the_hosts_autogenerate_leaves_our_tables_alone(replyx_db: Engine, tmp_path: Path) -> None:
    ours = set(inspect(replyx_db).get_table_names()) - {"users", "assistants", "dialogs", "dialog_messages"}
    assert ours == {*models.metadata.tables, "notifier_alembic_version"}  # both histories are there

    filtered = host_autogenerate(replyx_db, tmp_path / "with", with_filter=True)
    upgrade = filtered.split("def upgrade()", 1)[1].split("def downgrade()", 1)[0]
    assert "op." not in upgrade and "notifier_" not in filtered, filtered

    # Without the filter the host's next migration would drop every one of our tables.
    unfiltered = host_autogenerate(replyx_db, tmp_path / "without", with_filter=False)
    assert all(f"op.drop_table('{name}')" in unfiltered for name in ours), unfiltered


def test_init_db_on_every_deploy_even_several_at_once(empty_db_url: str) -> None:
    env = child_env({"NOTIFIER_DATABASE_URL": empty_db_url})
    runs = [subprocess.Popen([sys.executable, "-m", "notifier.cli", "init-db"], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(3)]  # fmt: skip
    outputs = [(run.communicate(timeout=120)[0].decode(), run.returncode) for run in runs]
    assert all(rc == 0 for _, rc in outputs), "\n---\n".join(out[-3000:] for out, _ in outputs)
    again = subprocess.run([sys.executable, "-m", "notifier.cli", "init-db"], cwd=REPO, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stdout + again.stderr
    engine = create_engine(normalize_url(empty_db_url))
    try:
        with engine.connect() as conn:
            versions = conn.execute(text("SELECT version_num FROM notifier_alembic_version")).scalars().all()
        assert len(versions) == 1 and set(models.metadata.tables) <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_init_db_on_sqlite_outwaits_a_writer_longer_than_the_busy_timeout(tmp_path: Path) -> None:
    """Another process holds the SQLite write lock past the busy timeout (10 s): init-db tries again rather
    than failing the deploy with "database is locked"."""
    path = tmp_path / "held.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("PRAGMA journal_mode=WAL")
        holder.execute("CREATE TABLE someone_elses (a INTEGER)")
        holder.execute("BEGIN IMMEDIATE")
        holder.execute("INSERT INTO someone_elses VALUES (1)")
        env = child_env({"NOTIFIER_DATABASE_URL": f"sqlite:///{path}"})
        run = subprocess.Popen([sys.executable, "-m", "notifier.cli", "init-db"], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        time.sleep(11)  # past one busy timeout
        holder.execute("COMMIT")
        out = run.communicate(timeout=60)[0].decode()
    finally:
        holder.close()
    assert run.returncode == 0, out
    assert "another writer holds the SQLite database; trying again (2 of 5)" in out
    engine = create_engine(normalize_url(f"sqlite:///{path}"))
    try:
        assert set(models.metadata.tables) <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
