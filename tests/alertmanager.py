"""A real Alertmanager for tests: :func:`running_alertmanager` and the ``alertmanager_url`` fixture.

Debian's ``prometheus-alertmanager`` package provides the binary (``VOICEMON_ALERTMANAGER_BIN`` overrides
where it is looked for). Without it, the tests that need one are skipped, unless ``CI`` is set: CI
installs the package, so there a missing binary fails loudly instead of passing silently.

Use the fixture by importing it into a test module (``from tests.alertmanager import alertmanager_url``)
and naming it as an argument; it yields the base URL (``http://127.0.0.1:PORT``). One Alertmanager serves
the whole module, so each test should use label values of its own (a uuid).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import free_port

READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0

# One receiver that sends nothing anywhere; short waits so that groups form quickly.
CONFIG = """\
route:
  receiver: "null"
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: "null"
"""


def alertmanager_binary() -> str | None:
    """The Alertmanager executable, or ``None`` when none is installed."""
    override = os.environ.get("VOICEMON_ALERTMANAGER_BIN")
    if override:
        return shutil.which(override)
    return shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


def require_alertmanager() -> str:
    """The executable; skips the test without one, but fails it when ``CI`` is set."""
    binary = alertmanager_binary()
    if binary is None:
        message = "Alertmanager is not installed (apt-get install prometheus-alertmanager)"
        if "CI" in os.environ:
            pytest.fail(f"{message}, and CI must run these tests", pytrace=False)
        pytest.skip(message)
    return binary


@contextmanager
def running_alertmanager(binary: str, workdir: Path) -> Iterator[str]:
    """Starts Alertmanager on a free port of 127.0.0.1, clustering off, config and data in ``workdir``;
    yields its base URL once ``/-/ready`` answers 200, and stops it (SIGTERM, then SIGKILL) after."""
    config = workdir / "alertmanager.yml"
    config.write_text(CONFIG)
    log = workdir / "alertmanager.log"
    url = f"http://127.0.0.1:{free_port()}"
    args = [
        binary,
        f"--config.file={config}",
        f"--storage.path={workdir / 'data'}",
        f"--web.listen-address={url.removeprefix('http://')}",
        "--cluster.listen-address=",
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_ready(proc, url, log)
        yield url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT_S)


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"alertmanager exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/-/ready", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    pytest.fail(f"alertmanager not ready after {READY_TIMEOUT_S} s:\n{log.read_text()}")


def alertmanager_fixture(
    name: str = "alertmanager_url", scope: Any = "module"
) -> Callable[..., Iterator[str]]:
    """A fixture called ``name``, at ``scope``, that yields the base URL of an Alertmanager of its own."""

    @pytest.fixture(scope=scope, name=name)
    def fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
        binary = require_alertmanager()
        with running_alertmanager(binary, tmp_path_factory.mktemp("alertmanager")) as url:
            yield url

    return fixture


alertmanager_url = alertmanager_fixture()
