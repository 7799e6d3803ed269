"""Only ``db upgrade`` (and the servers) change the schema (SPEC 12): every other command that opens the
database, on one without this code's schema, exits 1 with "run voicemon db upgrade" and creates nothing.

Each test has a database of its own: a SQLite path under ``tmp_path`` (no file yet), or a new PostgreSQL
database of this run (never the server's shared ``postgres`` one).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from tests.api.cli_runner import Cli, one_line
from tests.conftest import BACKEND, postgres_database
from voicemon.storage import Database, migrate

# Every command that reads or writes the database but never migrates it.
DATABASE_COMMANDS = [
    ["keys", "create", "--role", "staff", "--name", "x"],
    ["keys", "list"],
    ["keys", "revoke", "0123456789abcdef"],
    ["jobs", "list"],
    ["jobs", "run", "cleanup-events"],
    ["jobs", "run", "aggregate-hourly", "--target", "2026-12-01T00:00:00Z"],
]
COMMAND_IDS = ["keys-create", "keys-list", "keys-revoke", "jobs-list", "jobs-run", "jobs-run-target"]


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    if BACKEND != "postgresql":
        yield f"sqlite:///{tmp_path}/db/voicemon.db"
        return
    with postgres_database("voicemon_cli_schema") as url:
        yield url


@pytest.fixture
def cli(tmp_path: Path, database_url: str) -> Cli:
    (tmp_path / "db").mkdir()
    return Cli(tmp_path, database_url)


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _revision(url: str) -> str | None:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one_or_none()
    finally:
        engine.dispose()


def _scripts(url: str) -> ScriptDirectory:
    return ScriptDirectory.from_config(migrate.alembic_config(url))


def _upgrade_to(url: str, revision: str) -> None:
    db = Database(url)
    try:
        migrate.upgrade(db, revision)
    finally:
        db.dispose()


@pytest.mark.parametrize("args", DATABASE_COMMANDS, ids=COMMAND_IDS)
def test_on_an_empty_database_a_command_creates_nothing(cli: Cli, tmp_path: Path, args: list[str]) -> None:
    result = cli.run(*args)
    assert result.returncode == 1, (result.stdout, result.stderr)
    stderr = one_line(result.stderr)
    assert "has no voicemon schema: run voicemon db upgrade" in stderr, stderr
    assert "Traceback" not in stderr
    if BACKEND == "postgresql":
        assert _tables(cli.url) == set()
    else:
        # Not even the file: connecting to SQLite would have made one.
        assert list((tmp_path / "db").iterdir()) == []


@pytest.mark.parametrize("args", DATABASE_COMMANDS, ids=COMMAND_IDS)
def test_on_a_database_behind_a_command_changes_nothing(cli: Cli, args: list[str]) -> None:
    head = _scripts(cli.url).get_revision("head")
    assert head is not None
    previous = head.down_revision
    assert isinstance(previous, str), "the newest migration has one predecessor"
    _upgrade_to(cli.url, previous)
    before = _tables(cli.url)

    result = cli.run(*args)
    assert result.returncode == 1, (result.stdout, result.stderr)
    stderr = one_line(result.stderr)
    assert f"has the schema of revision {previous}, and this voicemon needs {head.revision}" in stderr
    assert stderr.endswith("run voicemon db upgrade"), stderr
    assert (_revision(cli.url), _tables(cli.url)) == (previous, before)


def test_db_upgrade_says_what_it_did(cli: Cli) -> None:
    head = _scripts(cli.url).get_current_head()
    oldest = [s.revision for s in _scripts(cli.url).walk_revisions()][-1]
    _upgrade_to(cli.url, oldest)

    upgraded = cli.run("db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout == f"upgraded the schema from revision {oldest} to {head}\n"
    again = cli.run("db", "upgrade")
    assert again.stdout == f"the schema is up to date (revision {head})\n"
    # Now the other commands work.
    listed = cli.run("keys", "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == ["key_id\trole\torganization\tname\tcreated\trevoked"]


def test_db_upgrade_on_an_empty_database_creates_the_schema(cli: Cli) -> None:
    created = cli.run("db", "upgrade")
    assert created.returncode == 0, created.stderr
    assert created.stdout == f"created the schema at revision {_scripts(cli.url).get_current_head()}\n"
    assert {"events", "artifacts", "api_keys", "alembic_version"} <= _tables(cli.url)


def test_a_schema_newer_than_the_code_is_refused_by_every_command(cli: Cli) -> None:
    """A newer voicemon migrated the database: no command (not even db upgrade) touches it."""
    _upgrade_to(cli.url, "head")
    engine = create_engine(cli.url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
    finally:
        engine.dispose()
    for args in (["db", "upgrade"], ["keys", "list"]):
        result = cli.run(*args)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        stderr = one_line(result.stderr)
        assert "revision 9999_from_the_future, which this voicemon does not know" in stderr, stderr
        assert "Traceback" not in stderr
    assert _revision(cli.url) == "9999_from_the_future"
