"""The command line loads the server only for the commands that need it.

``voicemon --help`` and usage errors must answer at once: each case runs in a fresh interpreter and lists
the heavy packages it imported, which must be none.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Typer itself uses pydantic, so pydantic is not among them.
HEAVY = ("fastapi", "sqlalchemy", "numpy", "uvicorn", "psycopg", "alembic", "httpx")

# Runs the CLI's Typer app in-process with the given arguments, then prints the exit code and the heavy
# packages that were imported, as the last line of stdout.
PROBE = """
import json, sys
heavy, args = sys.argv[1].split(","), sys.argv[2:]
from voicemon.cli import app
code = None
if args:
    try:
        app(args, prog_name="voicemon")
    except SystemExit as exc:
        code = exc.code
print(json.dumps({"code": code, "heavy": sorted(m for m in sys.modules if m.split(".")[0] in heavy)}))
"""


def probe(*args: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(HEAVY), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_importing_the_cli_loads_no_server_package() -> None:
    assert probe() == {"code": None, "heavy": []}


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--help"], 0),
        (["jobs", "--help"], 0),
        (["jobs", "run"], 2),
        (["nosuchcommand"], 2),
        (["serve", "--port", "not-a-port"], 2),
        (["keys", "create", "--role", "admin"], 2),
        (["jobs", "run", "aggregate-hourly", "--target", "yesterday"], 2),
        (["watch"], 2),
    ],
)
def test_help_and_usage_errors_load_no_server_package(args: list[str], code: int) -> None:
    assert probe(*args) == {"code": code, "heavy": []}
