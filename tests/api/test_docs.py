"""``/docs`` works offline: Swagger UI comes from files inside the package, recorded in their VERSIONS."""

from __future__ import annotations

import hashlib
import importlib.util
import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Api
from voicemon.api.docs import SWAGGER_DIR

ROOT = Path(__file__).resolve().parents[2]
CONTENT_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".png": "image/png",
    ".json": "application/json",
}


class _Links(HTMLParser):
    """Every URL the page loads: script sources and link targets."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"script": "src", "link": "href", "img": "src"}.get(tag)
        self.urls += [v for k, v in attrs if k == wanted and v is not None]


def _page_urls(html: str) -> list[str]:
    parser = _Links()
    parser.feed(html)
    # The document Swagger UI reads is named in the page's script.
    documents = re.findall(r"url: '([^']*)'", html)
    assert len(documents) == 1, html
    return [*parser.urls, *documents]


def test_docs_loads_only_files_of_this_server(api: Api) -> None:
    r = api.call("GET", "/docs", "")  # no key
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/html")
    assert not re.search(r"https?:|//", r.text.replace("<!DOCTYPE html>", "")), r.text
    urls = _page_urls(r.text)
    assert {Path(u).suffix for u in urls} == set(CONTENT_TYPES), urls
    for url in urls:
        assert url.startswith("/"), url
        asset = api.call("GET", url, "")
        assert asset.status_code == 200, url
        assert asset.headers["content-type"].split(";")[0] == CONTENT_TYPES[Path(url).suffix], url
        assert asset.content, url


def test_docs_behind_a_path_prefix_names_its_files_under_it(api: Api) -> None:
    with TestClient(api.client.app, root_path="/monitor") as client:
        r = client.get("/docs")
    assert r.status_code == 200, r.text
    urls = _page_urls(r.text)
    assert urls
    assert all(u.startswith("/monitor/") for u in urls), urls


def test_the_page_is_swagger_ui_and_redoc_is_gone(api: Api) -> None:
    bundle = api.call("GET", "/docs/assets/swagger-ui-bundle.js", "")
    assert b"SwaggerUIBundle" in bundle.content
    assert api.call("GET", "/redoc", "").status_code == 404
    paths = api.call("GET", "/openapi.json", "").json()["paths"]
    assert not [p for p in paths if p.startswith("/docs")], paths


def _vendor_script() -> Any:
    spec = importlib.util.spec_from_file_location("vendor_assets", ROOT / "scripts" / "vendor_assets.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("vendor_assets", module)
    spec.loader.exec_module(module)
    return module


ASSETS = _vendor_script().ASSETS


def _record(folder: Path) -> tuple[dict[str, str], dict[str, str]]:
    """A VERSIONS file as (fields, {file name: sha256})."""
    fields: dict[str, str] = {}
    digests: dict[str, str] = {}
    for line in (folder / "VERSIONS").read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(": ")
        if key == "sha256":
            digest, name = value.split("  ", 1)
            digests[name] = digest
        else:
            fields[key] = value
    return fields, digests


@pytest.mark.parametrize("asset", ASSETS, ids=lambda a: a.package)
def test_the_vendored_files_are_the_ones_their_record_names(asset: Any) -> None:
    """Swagger UI for /docs, htmx and uPlot for the dashboard: each folder holds exactly the files its
    VERSIONS names, with those checksums, of the version the script pins, from the npm registry."""
    fields, digests = _record(asset.target)
    on_disk = {p.name for p in asset.target.iterdir()} - {"VERSIONS"}
    assert set(digests) == on_disk == set(asset.files.values())
    for name, digest in digests.items():
        assert hashlib.sha256((asset.target / name).read_bytes()).hexdigest() == digest, name
    assert (fields["package"], fields["version"]) == (asset.package, asset.version)
    tarball_name = asset.package.rsplit("/", 1)[-1]
    assert fields["tarball"] == (
        f"https://registry.npmjs.org/{asset.package}/-/{tarball_name}-{asset.version}.tgz"
    )
    assert fields["tarball-integrity"].startswith("sha512-")
    assert "LICENSE" in digests


def test_docs_serves_the_swagger_files_of_its_record() -> None:
    assert {a.target for a in ASSETS if a.package == "swagger-ui-dist"} == {SWAGGER_DIR}
