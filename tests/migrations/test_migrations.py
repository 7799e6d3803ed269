"""Migrations build exactly the tables the code declares, on both databases, and re-running is a no-op."""

from __future__ import annotations

from sqlalchemy import inspect

from voicemon.service import Services
from voicemon.storage import migrate
from voicemon.storage.tables import metadata


def test_migrated_schema_matches_the_tables_in_code(services: Services) -> None:
    assert migrate.pending_differences(services.db) == []


def test_upgrade_twice_is_a_no_op(services: Services) -> None:
    migrate.upgrade(services.db)
    with services.db.read() as conn:
        tables = set(inspect(conn).get_table_names())
    assert {t.name for t in metadata.sorted_tables} <= tables
    assert migrate.pending_differences(services.db) == []
