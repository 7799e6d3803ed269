"""Schema migrations (Alembic), applied by ``voicemon db upgrade`` and at server start.

Every other command only asks where the database stands (:func:`schema_state`): one read of
``alembic_version``, which creates nothing, not even the file of a SQLite database that does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from voicemon.domain.partitions import is_partition_name
from voicemon.storage.database import Database
from voicemon.storage.tables import metadata

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


@dataclass(frozen=True, slots=True)
class SchemaState:
    """Where a database stands: ``current`` is its revision (None: no schema at all), ``head`` the newest
    revision of this code, ``known`` whether ``current`` is one of this code's revisions (False when a
    newer voicemon migrated the database)."""

    current: str | None
    head: str
    known: bool

    @property
    def is_current(self) -> bool:
        return self.current == self.head


@dataclass(frozen=True, slots=True)
class Upgraded:
    """What :func:`upgrade` did: from ``before`` (None: an empty database) to ``after``."""

    before: str | None
    after: str | None


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _scripts(db: Database) -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config(db.url))


def _revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def upgrade(db: Database, revision: str = "head") -> Upgraded:
    """Bring the database to ``revision``; safe to run again and from several processes in turn."""
    with db.write() as conn:
        before = _revision(conn)
        cfg = alembic_config(db.url)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
        return Upgraded(before, _revision(conn))


def schema_state(db: Database) -> SchemaState:
    """The database's revision beside this code's newest, read from ``alembic_version`` alone (no
    migration runs, nothing is created). Raises StorageError when the database cannot be read."""
    scripts = _scripts(db)
    head = scripts.get_current_head()
    assert head is not None, "the migrations directory has no revision"
    current = None if _sqlite_file_missing(db) else _read_revision(db)
    known = current is None or current in {s.revision for s in scripts.walk_revisions()}
    return SchemaState(current, head, known)


def _read_revision(db: Database) -> str | None:
    with db.read() as conn:
        return _revision(conn)


def _sqlite_file_missing(db: Database) -> bool:
    """True for a SQLite database whose file does not exist: connecting would create it."""
    name = db.engine.url.database
    if not db.is_sqlite or not name or name == ":memory:":
        return False
    return not Path(name).exists()


def pending_differences(db: Database) -> list[object]:
    """What the migrated schema lacks compared to the tables in code (empty when in step)."""
    with db.read() as conn:
        ctx = MigrationContext.configure(
            conn, opts={"compare_type": True, "include_name": _declared_or_not_a_partition}
        )
        return list(compare_metadata(ctx, metadata))


def _declared_or_not_a_partition(name: str | None, type_: str, _parents: object) -> bool:
    """The partitions of ``events`` on PostgreSQL are not tables of their own."""
    return type_ != "table" or name is None or not is_partition_name(name)
