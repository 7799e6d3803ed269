"""The real ``voicemon`` console script, run as a subprocess with no other VOICEMON_* setting leaking in."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.helpers import VOICEMON
from voicemon.domain.access import SYSTEM
from voicemon.service import Services
from voicemon.settings import Settings
from voicemon.storage import Database, migrate

RUN_TIMEOUT_S = 60


class Cli:
    """Runs ``voicemon`` in ``cwd`` against one database: ``url``, or a SQLite file in ``cwd``."""

    def __init__(self, cwd: Path, url: str | None = None) -> None:
        self.cwd = cwd
        self.url = url or f"sqlite:///{cwd}/cli.db"
        env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEMON_")}
        # Wide and plain, so Rich output is not wrapped or coloured.
        env.update(VOICEMON_DATABASE_URL=self.url, COLUMNS="200", NO_COLOR="1", TERM="dumb")
        self.env = env

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(VOICEMON), *args],
            cwd=self.cwd,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            check=False,
        )

    def upgrade(self) -> None:
        """The schema, made in-process (faster than ``voicemon db upgrade``)."""
        db = Database(self.url)
        try:
            migrate.upgrade(db)
        finally:
            db.dispose()

    def key(self, role: str = "staff", name: str = "test") -> str:
        """A new key's secret, made in-process on this database (schema migrated)."""
        svc = self.services()
        try:
            return svc.keys.create(SYSTEM, role, None, name).secret
        finally:
            svc.db.dispose()

    def services(self) -> Services:
        """In-process services on the same database, schema migrated; the caller disposes of ``db``."""
        svc = Services(Settings(database_url=self.url, key_cache_s=0))
        migrate.upgrade(svc.db)
        return svc


def one_line(text: str) -> str:
    """``text`` with every run of whitespace as one space: Rich wraps the messages it frames."""
    return " ".join(text.split())
