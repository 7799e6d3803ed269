"""Vendor the browser assets: Swagger UI for ``/docs``, htmx and uPlot for the dashboard. Each is a pinned
npm package's files, checked, with a VERSIONS record beside them.

The files live in the source tree (``src/voicemon/api/static/swagger/``, ``src/voicemon/web/static/vendor/
<package>/``) and ship in the wheel as package data: nothing is downloaded when voicemon is installed or
run, so every page works offline. Run this script only to change a pinned version (edit :data:`ASSETS`),
then commit what it wrote::

    python scripts/vendor_assets.py [package ...]

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
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "src" / "voicemon"
REGISTRY = "https://registry.npmjs.org"


@dataclass(frozen=True)
class Asset:
    package: str
    version: str
    # Paths inside the package (npm puts them under ``package/``) -> the name written.
    files: dict[str, str]
    target: Path


ASSETS = (
    Asset(
        "swagger-ui-dist",
        "5.35.0",
        {
            name: name
            for name in (
                "swagger-ui-bundle.js",
                "swagger-ui.css",
                "favicon-32x32.png",
                "LICENSE",
                "NOTICE",
                # The licences of what the bundle holds, taken out of it by its build.
                "swagger-ui-bundle.js.LICENSE.txt",
            )
        },
        ROOT / "api" / "static" / "swagger",
    ),
    # htmx 2 (the 4.x line is a month old); 0BSD.
    Asset(
        "htmx.org",
        "2.0.11",
        {"dist/htmx.min.js": "htmx.min.js", "LICENSE": "LICENSE"},
        ROOT / "web" / "static" / "vendor" / "htmx",
    ),
    # uPlot, the browser build (a global ``uPlot``) and its stylesheet; MIT.
    Asset(
        "uplot",
        "1.6.32",
        {
            "dist/uPlot.iife.min.js": "uPlot.iife.min.js",
            "dist/uPlot.min.css": "uPlot.min.css",
            "LICENSE": "LICENSE",
        },
        ROOT / "web" / "static" / "vendor" / "uplot",
    ),
)
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


def _members(asset: Asset, tarball: bytes) -> dict[str, bytes]:
    """The asset's files from the package tarball, by the names they are written under."""
    found: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        for inside, name in asset.files.items():
            member = tar.getmember(f"package/{inside}")
            extracted = tar.extractfile(member)
            if not member.isfile() or extracted is None:
                raise SystemExit(f"package/{inside} is not a file in the {asset.package} tarball")
            found[name] = extracted.read()
    return found


def vendor(asset: Asset) -> None:
    metadata = json.loads(_get(f"{REGISTRY}/{asset.package}/{asset.version}"))
    dist = metadata["dist"]
    tarball_url = dist["tarball"]
    tarball = _get(tarball_url)
    _check_integrity(tarball, dist["integrity"])
    files = _members(asset, tarball)

    asset.target.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Vendored by scripts/vendor_assets.py; change the version there and run it again.",
        f"package: {asset.package}",
        f"version: {asset.version}",
        f"license: {metadata.get('license', 'unknown')}",
        f"tarball: {tarball_url}",
        f"tarball-integrity: {dist['integrity']}",
    ]
    for name, data in files.items():
        (asset.target / name).write_bytes(data)
        lines.append(f"sha256: {hashlib.sha256(data).hexdigest()}  {name}")
    (asset.target / "VERSIONS").write_text("\n".join(lines) + "\n", encoding="utf-8")
    sys.stdout.write(f"wrote {len(files)} files of {asset.package} {asset.version} to {asset.target}\n")


def main() -> None:
    wanted = set(sys.argv[1:])
    for asset in ASSETS:
        if not wanted or asset.package in wanted:
            vendor(asset)


if __name__ == "__main__":
    main()
