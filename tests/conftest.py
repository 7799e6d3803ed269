"""Shared fixtures. ``VOICEMON_TEST_DB`` picks the database: ``sqlite`` (default) or ``postgresql``.

SQLite tests each get a file under ``tmp_path``. PostgreSQL tests share one database made for this run
(so runs never see each other's data), migrated once and truncated before each test.
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, event, text

from voicemon.api import create_app
from voicemon.clock import FakeClock
from voicemon.domain.access import SYSTEM, Principal, Role
from voicemon.service import Services
from voicemon.service.partitions import EventPartitions
from voicemon.settings import Settings
from voicemon.storage import Database, dialect, migrate
from voicemon.storage.tables import metadata

# A fixed "now" well inside a UTC hour: 2026-12-07T02:40:00Z.
NOW_MS = 1_796_563_200_000 + 13 * 3_600_000 + 20 * 60_000

# On PostgreSQL, the test database has day partitions from this many days before NOW_MS on.
PARTITIONED_DAYS_BACK = 10

BACKEND = os.environ.get("VOICEMON_TEST_DB", "sqlite")
PG_ADMIN_URL = os.environ.get(
    "VOICEMON_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@contextmanager
def postgres_database(prefix: str) -> Iterator[str]:
    """A new, empty PostgreSQL database of this run (its name says which process made it), dropped after."""
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def process_database(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[str]:
    """A database of its own for a server process started by a test module: a new SQLite file, or a new
    PostgreSQL database of this run, dropped after."""
    if BACKEND != "postgresql":
        yield f"sqlite:///{tmp_path_factory.mktemp(name)}/voicemon.db"
        return
    with postgres_database(f"voicemon_{name}") as url:
        yield url


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str | None]:
    if BACKEND != "postgresql":
        yield None
        return
    with postgres_database("voicemon_test") as url:
        db = Database(url)
        migrate.upgrade(db)
        # The day partitions of raw events around the tests' clock, as the partition-events job makes
        # them (most test events go to a day partition; the rest to the default one).
        reach = Settings(database_url=url, event_retention_h=PARTITIONED_DAYS_BACK * 24)
        EventPartitions(db, FakeClock(NOW_MS), reach).ensure()
        db.dispose()
        yield url


@pytest.fixture
def db_url(pg_url: str | None, tmp_path: Any) -> str:
    if pg_url is None:
        return f"sqlite:///{tmp_path}/voicemon.db"
    engine = create_engine(pg_url)
    names = ", ".join(t.name for t in metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY"))
    engine.dispose()
    return pg_url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW_MS)


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(database_url=db_url, key_cache_s=0)


@pytest.fixture
def services(settings: Settings, clock: FakeClock) -> Iterator[Services]:
    svc = Services(settings, clock)
    svc.start()
    yield svc
    svc.stop()


STAFF = Principal("test-staff", "staff", Role.STAFF)

FreshServices = Callable[[], AbstractContextManager[Services]]


@pytest.fixture(scope="module")
def fresh_services(pg_url: str | None, tmp_path_factory: pytest.TempPathFactory) -> FreshServices:
    """Started Services on an empty database, one per call (hypothesis examples): a new SQLite file, or
    the run's PostgreSQL database emptied (DELETE: faster than TRUNCATE on tables this small)."""
    base = tmp_path_factory.mktemp("examples")

    @contextmanager
    def make() -> Iterator[Services]:
        if pg_url is None:
            url = f"sqlite:///{base}/{uuid.uuid4().hex}.db"
        else:
            url = pg_url
            engine = create_engine(pg_url)
            with engine.begin() as conn:
                for table in reversed(metadata.sorted_tables):
                    conn.execute(table.delete())
            engine.dispose()
        svc = Services(Settings(database_url=url, key_cache_s=0), FakeClock(NOW_MS))
        svc.start()
        try:
            yield svc
        finally:
            svc.stop()

    return make


@dataclass
class StatementCounter:
    """Counts SQL statements sent to the database while ``active``."""

    statements: list[str] = field(default_factory=list)
    active: bool = False

    def __enter__(self) -> StatementCounter:
        self.statements.clear()
        self.active = True
        return self

    def __exit__(self, *_: object) -> None:
        self.active = False

    @property
    def count(self) -> int:
        return len(self.statements)


class _CountingCursor:
    """A driver cursor that records what is sent through it (the ingest path's own statements)."""

    def __init__(self, cursor: Any, counter: StatementCounter) -> None:
        self._cursor = cursor
        self._counter = counter

    def _record(self, statement: str) -> None:
        if self._counter.active:
            self._counter.statements.append(statement)

    def execute(self, statement: str, *args: Any, **kwargs: Any) -> Any:
        self._record(statement)
        return self._cursor.execute(statement, *args, **kwargs)

    def executemany(self, statement: str, *args: Any, **kwargs: Any) -> Any:
        self._record(statement)
        return self._cursor.executemany(statement, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


@pytest.fixture
def sql_counter(services: Services, monkeypatch: pytest.MonkeyPatch) -> StatementCounter:
    """Counts statements sent through SQLAlchemy and through the driver's own cursor."""
    counter = StatementCounter()

    @event.listens_for(services.db.engine, "before_cursor_execute")
    def _count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if counter.active and not statement.startswith(("BEGIN", "PRAGMA")):
            counter.statements.append(statement)

    real = dialect.driver_cursor
    monkeypatch.setattr(dialect, "driver_cursor", lambda conn: _CountingCursor(real(conn), counter))
    return counter


@dataclass
class Api:
    """An in-process HTTP client plus keys of every kind."""

    client: TestClient
    services: Services
    staff_key: str

    def key(self, role: str, org: str | None = None) -> str:
        return self.services.keys.create(SYSTEM, role, org, f"test-{role}").secret

    def call(self, method: str, path: str, key: str | None = None, **kwargs: Any) -> Any:
        headers = dict(kwargs.pop("headers", {}))
        chosen = self.staff_key if key is None else key
        if chosen:
            headers["Authorization"] = f"Bearer {chosen}"
        return self.client.request(method, path, headers=headers, **kwargs)


@pytest.fixture
def api(services: Services) -> Iterator[Api]:
    app = create_app(services=services)
    # The services fixture already started and will stop the services.
    app.router.lifespan_context = _no_lifespan
    with TestClient(app) as client:
        yield Api(client, services, services.keys.create(SYSTEM, "staff", None, "test").secret)


@asynccontextmanager
async def _no_lifespan(_: Any) -> Any:
    yield
