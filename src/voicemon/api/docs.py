"""``/docs``: Swagger UI served from files inside the package, so the page works without the internet.

The files in ``static/swagger/`` are a pinned ``swagger-ui-dist`` release, vendored by
``scripts/vendor_assets.py`` with a VERSIONS record of where they came from and their SHA-256. Like
``/openapi.json`` and ``/healthz``, the page and its files need no key (only ``/v1/`` and the other
paths of :func:`~voicemon.api.edge.is_protected` do): the document is public, and the page asks for a key
only to try an operation.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

SWAGGER_DIR = Path(__file__).parent / "static" / "swagger"
DOCS_PATH = "/docs"
ASSETS_PATH = "/docs/assets"


def install_docs(app: FastAPI) -> None:
    """Serve ``/docs`` and its files under ``/docs/assets``; call with ``docs_url=None`` on the app."""
    app.mount(ASSETS_PATH, StaticFiles(directory=SWAGGER_DIR), name="docs-assets")

    @app.get(DOCS_PATH, include_in_schema=False)
    def docs(request: Request) -> HTMLResponse:
        # Behind a proxy that mounts the app under a prefix, every URL of the page carries it.
        root = str(request.scope.get("root_path", "")).rstrip("/")
        assets = f"{root}{ASSETS_PATH}"
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} API",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon-32x32.png",
            # Swagger UI would otherwise send the document's URL to its online validator.
            swagger_ui_parameters={"validatorUrl": None},
        )
