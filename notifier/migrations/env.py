"""Alembic environment for our tables only; the version table is ours too."""

from alembic import context

from notifier.errors import ConfigError
from notifier.migrate import owned
from notifier.models import metadata

VERSION_TABLE = "notifier_alembic_version"


def _include(obj, name, type_, reflected, compare_to):  # type: ignore[no-untyped-def]
    # Never look at (or propose dropping) the host's tables: the mirror of migrate.include_object.
    return owned(type_, name, obj)


connection = context.config.attributes.get("connection")
if connection is None:
    raise ConfigError("run our migrations through `notifier init-db` (notifier.migrate.upgrade), not the alembic command")
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    include_object=_include,
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()
