"""The pages a person opens in a browser: the search page, the API docs and the favicon.

The API docs are Swagger UI from the ``swagger-ui-bundle`` package, served by this server, so
``/docs`` renders on a machine without internet access (FastAPI's own page loads it from a CDN).
That Swagger UI (4.x) reads OpenAPI 3.0 documents, so ``/docs`` is given the generated document
labelled 3.0.3 (``/docs/openapi.json``; its content renders the same); ``/openapi.json`` stays
the generated 3.1 document. The search page is one self-contained file (no build step, no
external address); the favicon is a small inline SVG.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

#: where Swagger UI's files are served
DOCS_ASSETS = "/docs/assets"
#: the search page's policy: nothing is loaded from anywhere but this server
PAGE_CSP = ("default-src 'self'; img-src 'self' blob: data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'")
FAVICON_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="7" fill="#2456a6"/>'
    '<circle cx="14" cy="14" r="7.5" fill="none" stroke="#fff" stroke-width="3"/>'
    '<path d="M19.5 19.5l7 7" stroke="#fff" stroke-width="3.5" stroke-linecap="round"/>'
    '<rect x="10.5" y="11" width="7" height="6" rx="1" fill="#9cc3ff"/></svg>'
).encode()


def install_pages(app: FastAPI) -> None:
    """Add ``/``, ``/docs`` (with its assets and OAuth2 redirect) and the favicon to ``app``
    (created with ``docs_url=None``)."""
    page = Path(__file__).with_name("page.html").read_bytes()
    app.mount(DOCS_ASSETS, StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers={"Content-Security-Policy": PAGE_CSP})

    @app.get("/favicon.svg", include_in_schema=False)
    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(FAVICON_SVG, media_type="image/svg+xml", headers={"Cache-Control": "public, max-age=86400"})

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/docs/openapi.json", title=f"{app.title} API",
                                   swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css", swagger_favicon_url="/favicon.svg",
                                   oauth2_redirect_url="/docs/oauth2-redirect")

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/docs/openapi.json", include_in_schema=False)
    async def docs_openapi() -> JSONResponse:
        document: dict[str, Any] = {**app.openapi(), "openapi": "3.0.3"}
        return JSONResponse(document)


__all__ = ["DOCS_ASSETS", "FAVICON_SVG", "PAGE_CSP", "install_pages"]
