"""Vendor Swagger UI for ``/docs``: the pinned ``swagger-ui-dist`` files, checked, with a VERSIONS record.

The files live in the source tree (``src/voicemon/api/static/swagger/``) and ship in the wheel as package
data: nothing is downloaded when voicemon is installed or run, so ``/docs`` works offline. Run this
script only to change the pinned version (edit :data:`VERSION`), then commit what it wrote::

    python scripts/vendor_assets.py

It reads the version's metadata from the npm registry, downloads its tarball, checks the tarball against
the registry's SHA-512 ``integrity``, and writes the files below with a VERSIONS file beside them: the
package, version, licence, tarball URL and integrity, and the SHA-256 of each file written (a test
checks those against the files). Standard library only.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import sys
import tarfile
import urllib.request
from pathlib import Path

PACKAGE = "swagger-ui-dist"
VERSION = "5.35.0"
REGISTRY = "https://registry.npmjs.org"
# The files /docs loads, and the licence terms that come with them (Apache-2.0: LICENSE and NOTICE).
FILES = (
    "swagger-ui-bundle.js",
    "swagger-ui.css",
    "favicon-32x32.png",
    "LICENSE",
    "NOTICE",
    # The licences of what the bundle holds, taken out of it by its build.
    "swagger-ui-bundle.js.LICENSE.txt",
)
TARGET = Path(__file__).resolve().parents[1] / "src" / "voicemon" / "api" / "static" / "swagger"
TIMEOUT_S = 60


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as reply:
        body: bytes = reply.read()
        return body


def _check_integrity(data: bytes, integrity: str) -> None:
    algorithm, _, expected = integrity.partition("-")
    if algorithm != "sha512":
        raise SystemExit(f"unexpected integrity algorithm {algorithm!r}")
    actual = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if actual != expected:
        raise SystemExit(f"the tarball does not match its integrity {integrity}")


def _members(tarball: bytes) -> dict[str, bytes]:
    """The files of :data:`FILES` from the package tarball (npm puts them under ``package/``)."""
    found: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        for name in FILES:
            member = tar.getmember(f"package/{name}")
            extracted = tar.extractfile(member)
            if not member.isfile() or extracted is None:
                raise SystemExit(f"package/{name} is not a file in the tarball")
            found[name] = extracted.read()
    return found


def main() -> None:
    metadata = json.loads(_get(f"{REGISTRY}/{PACKAGE}/{VERSION}"))
    dist = metadata["dist"]
    tarball_url = dist["tarball"]
    tarball = _get(tarball_url)
    _check_integrity(tarball, dist["integrity"])
    files = _members(tarball)

    TARGET.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Vendored by scripts/vendor_assets.py; change the version there and run it again.",
        f"package: {PACKAGE}",
        f"version: {VERSION}",
        f"license: {metadata.get('license', 'unknown')}",
        f"tarball: {tarball_url}",
        f"tarball-integrity: {dist['integrity']}",
    ]
    for name, data in files.items():
        (TARGET / name).write_bytes(data)
        lines.append(f"sha256: {hashlib.sha256(data).hexdigest()}  {name}")
    (TARGET / "VERSIONS").write_text("\n".join(lines) + "\n", encoding="utf-8")
    sys.stdout.write(f"wrote {len(files)} files of {PACKAGE} {VERSION} to {TARGET}\n")


if __name__ == "__main__":
    main()
