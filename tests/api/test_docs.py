"""``/docs`` works offline: Swagger UI comes from files inside the package, recorded in their VERSIONS."""

from __future__ import annotations

import hashlib
import re
from html.parser import HTMLParser
from pathlib import Path

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


def _record() -> tuple[dict[str, str], dict[str, str]]:
    """VERSIONS as (fields, {file name: sha256})."""
    fields: dict[str, str] = {}
    digests: dict[str, str] = {}
    for line in (SWAGGER_DIR / "VERSIONS").read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(": ")
        if key == "sha256":
            digest, name = value.split("  ", 1)
            digests[name] = digest
        else:
            fields[key] = value
    return fields, digests


def test_the_vendored_files_are_the_ones_their_record_names() -> None:
    fields, digests = _record()
    on_disk = {p.name for p in SWAGGER_DIR.iterdir()} - {"VERSIONS"}
    assert set(digests) == on_disk
    for name, digest in digests.items():
        assert hashlib.sha256((SWAGGER_DIR / name).read_bytes()).hexdigest() == digest, name
    # The record is of the version the script pins, from the npm registry's tarball of it.
    script = (ROOT / "scripts" / "vendor_assets.py").read_text(encoding="utf-8")
    pinned = re.search(r'^VERSION = "([^"]+)"$', script, re.MULTILINE)
    assert pinned is not None
    assert fields["package"] == "swagger-ui-dist"
    assert fields["version"] == pinned.group(1)
    assert fields["tarball"] == (
        f"https://registry.npmjs.org/swagger-ui-dist/-/swagger-ui-dist-{pinned.group(1)}.tgz"
    )
    assert fields["tarball-integrity"].startswith("sha512-")
    assert {"swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png", "LICENSE"} <= set(digests)
