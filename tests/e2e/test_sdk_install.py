"""The SDK installs on its own (SPEC 11).

The client distribution's wheel is built from a copy of ``sdk/`` alone (so the folder is self-contained),
installed in a new virtual environment, and that environment must hold httpx but none of the server's
packages. Its ``voicemon.Client`` then reports events to a real ``voicemon serve``, and they are read
back over HTTP. The server's wheel, built the same way, must not ship any file of the client's.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import process_database
from tests.e2e.test_sdk import stored_events
from tests.helpers import ServerProcess
from voicemon.domain.access import SYSTEM
from voicemon.service import Services
from voicemon.settings import Settings
from voicemon.storage import migrate

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT_S = 180
# Packages that only the server needs: the client's environment must have none of them installed, and
# the client must import none of them.
SERVER_PACKAGES = ("fastapi", "starlette", "sqlalchemy", "alembic", "psycopg", "numpy", "uvicorn", "pydantic")
SERVER_PACKAGES += ("orjson", "ddsketch", "typer", "rich")
SERVER_ONLY = frozenset({"voicemon", "psycopg-binary", *SERVER_PACKAGES})
# Run by the new environment's interpreter: logs events and a stage, then prints what the client counted,
# where voicemon came from, and which of the packages named in its last argument it imported.
REPORTER = """
import importlib.util, json, sys
from voicemon import Client
import voicemon

url, key, org, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
client = Client(url, key, flush_interval_s=0.05)
for i in range(n):
    client.log_event("artifact_received", artifact_id=f"note-{i}", organization_id=org)
with client.stage("transcription", artifact_id="note-0", organization_id=org) as scope:
    scope.set(ai_model="asr-large-v3", ai_cost_usd=0.004)
flushed = client.flush(30)
client.close(timeout=5)
stats = client.stats
print(json.dumps({
    "flushed": flushed,
    "stats": [stats.queued, stats.sent, stats.rejected, stats.dropped, stats.pending],
    "version": voicemon.__version__,
    "file": voicemon.__file__,
    "server_found": importlib.util.find_spec("voicemon.api") is not None,
    "modules": sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[5].split(","))),
}))
"""


def run(*args: str | Path, timeout_s: float = BUILD_TIMEOUT_S) -> str:
    """Runs a command outside this test environment (no PYTHONPATH leaking in) and returns its stdout."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}}
    done = subprocess.run(
        [str(a) for a in args], env=env, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def project(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        table: dict[str, Any] = tomllib.load(f)["project"]
    return table


def pinned_client_version() -> str:
    """The version of voicemon-client that the server distribution pins."""
    pins = [d for d in project(ROOT / "pyproject.toml")["dependencies"] if d.startswith("voicemon-client")]
    (pin,) = pins
    assert pin.startswith("voicemon-client=="), pin
    return str(pin.removeprefix("voicemon-client=="))


def build_wheel(tmp: Path, name: str, origin: Path, parts: tuple[str, ...] | None = None) -> Path:
    """A wheel built by pip (an isolated PEP 517 build) from a copy of ``origin``, or of its ``parts``."""
    source = tmp / f"{name}-source"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist")
    if parts is None:
        shutil.copytree(origin, source, ignore=ignore)
    else:
        source.mkdir()
        for part in parts:
            if (origin / part).is_dir():
                shutil.copytree(origin / part, source / part, ignore=ignore)
            else:
                shutil.copy2(origin / part, source / part)
    out = tmp / f"{name}-dist"
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", out, source)
    (wheel,) = out.glob("*.whl")
    return wheel


def wheel_files(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        return {n for n in zf.namelist() if ".dist-info/" not in n}


@dataclass(frozen=True)
class ClientEnv:
    wheel: Path
    python: Path
    distributions: dict[str, str]


@pytest.fixture(scope="module")
def client_env(tmp_path_factory: pytest.TempPathFactory) -> ClientEnv:
    """A new virtual environment holding the client wheel and what pip fetched for it."""
    tmp = tmp_path_factory.mktemp("client-env")
    wheel = build_wheel(tmp, "client", ROOT / "sdk")
    venv = tmp / "venv"
    run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    run(python, "-m", "pip", "install", "--quiet", wheel)
    listed = json.loads(run(python, "-m", "pip", "list", "--format=json"))
    print("pip list of the client environment:", json.dumps(listed))
    distributions = {d["name"].lower().replace("_", "-"): d["version"] for d in listed}
    return ClientEnv(wheel, python, distributions)


def test_the_client_wheel_is_the_version_the_server_pins(client_env: ClientEnv) -> None:
    version = pinned_client_version()
    assert project(ROOT / "sdk" / "pyproject.toml")["version"] == version
    assert client_env.wheel.name == f"voicemon_client-{version}-py3-none-any.whl"
    assert client_env.distributions["voicemon-client"] == version


def test_the_client_environment_holds_httpx_and_no_server_package(client_env: ClientEnv) -> None:
    assert "httpx" in client_env.distributions
    assert sorted(SERVER_ONLY & client_env.distributions.keys()) == []


def test_the_server_wheel_ships_none_of_the_client_files(client_env: ClientEnv, tmp_path: Path) -> None:
    server = build_wheel(tmp_path, "server", ROOT, ("pyproject.toml", "README.md", "src"))
    client_files, server_files = wheel_files(client_env.wheel), wheel_files(server)
    assert {"voicemon/__init__.py", "voicemon/py.typed", "voicemon/sdk/client.py"} <= client_files
    assert all(f.startswith("voicemon/") for f in client_files | server_files)
    assert sorted(client_files & server_files) == []
    client_owned = {"voicemon/__init__.py", "voicemon/py.typed"}
    assert sorted(f for f in server_files if f in client_owned or f.startswith("voicemon/sdk/")) == []
    assert {"voicemon/api/app.py", "voicemon/storage/migrations/script.py.mako"} <= server_files
    # /docs serves Swagger UI from package data, with the record of where it came from.
    swagger = "voicemon/api/static/swagger/"
    assert {
        f"{swagger}{name}" for name in ("swagger-ui-bundle.js", "swagger-ui.css", "VERSIONS")
    } <= server_files
    with zipfile.ZipFile(server) as zf:
        (metadata,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        requires = [line for line in zf.read(metadata).decode().splitlines() if line.startswith("Requires")]
    assert f"Requires-Dist: voicemon-client=={pinned_client_version()}" in requires


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict[str, str]]]:
    """``voicemon serve`` on a database of its own, with an ingest key and a staff key made beforehand."""
    with process_database(tmp_path_factory, "sdk_install") as url:
        services = Services(Settings(database_url=url))
        try:
            migrate.upgrade(services.db)
            keys = {
                role: services.keys.create(SYSTEM, role, None, f"sdk-install-{role}").secret
                for role in ("ingest", "staff")
            }
        finally:
            services.db.dispose()
        process = ServerProcess(
            {**os.environ, "VOICEMON_DATABASE_URL": url},
            tmp_path_factory.mktemp("sdk-install-log") / "server.log",
        )
        try:
            process.start()
            yield process, keys
        finally:
            process.kill()


def test_the_installed_client_delivers_events_to_a_server(
    client_env: ClientEnv, server: tuple[ServerProcess, dict[str, str]]
) -> None:
    process, keys = server
    org = f"org-{secrets.token_hex(6)}"
    watched = ",".join((*SERVER_PACKAGES, "httpx"))
    out = run(
        client_env.python, "-I", "-c", REPORTER, process.url, keys["ingest"], org, "25", watched, timeout_s=60
    )
    report = json.loads(out.strip().splitlines()[-1])

    assert report["flushed"] is True
    assert report["stats"] == [27, 27, 0, 0, 0]
    assert report["version"] == pinned_client_version()
    assert Path(report["file"]).is_relative_to(client_env.python.parent.parent)
    assert report["server_found"] is False
    assert report["modules"] == ["httpx"]

    with httpx.Client(
        base_url=process.url, headers={"Authorization": f"Bearer {keys['staff']}"}, timeout=30
    ) as reader:
        events = stored_events(reader, organization_id=org)
    assert len(events) == len({e["event_id"] for e in events}) == 27
    received = sorted(e["artifact_id"] for e in events if e["event_type"] == "artifact_received")
    assert received == sorted(f"note-{i}" for i in range(25))
    stage = {e["event_type"]: e for e in events if e["artifact_id"] == "note-0"}
    assert set(stage) == {"artifact_received", "transcription_started", "transcription_completed"}
    assert stage["transcription_completed"]["metadata"] == {"ai_model": "asr-large-v3", "ai_cost_usd": 0.004}
    assert stage["transcription_completed"]["duration_ms"] >= 0
