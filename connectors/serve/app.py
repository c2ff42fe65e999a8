"""The HTTP API (FastAPI) of ``clip-search serve``; the generated OpenAPI document is at
``/openapi.json``, rendered offline at ``/docs``.

:func:`create_app` only assembles: the guard in front (:mod:`.guard`: API key, body size,
request metrics), then the routers by area, each reading the app's :class:`~.state.ServeState`
through one dependency: search (:mod:`.search_api`), OpenAI-compatible embeddings
(:mod:`.openai_embeddings`), near-duplicates (:mod:`.duplicates_api`), native embeddings
(:mod:`.embed_api`), items (:mod:`.items_api`), operations (:mod:`.operations_api`) and the pages
(:mod:`.docs_pages`). Every error answer has OpenAI's shape (:mod:`.errors`): malformed filter
-> 400 with ``position``; undecodable or bomb image -> 400 with the decoder's reason as
``code``; upload over ``max_upload_bytes`` -> 413; unknown id -> 404; database down or
collection missing -> 503 with ``Retry-After`` (the next request tries again, so the server
recovers by itself). Blocking work (model, database, decoding) runs in worker threads, never on
the event loop. ``/v1/ingest`` triggers and ``/v1/info`` reports the server's own scheduled
ingestion (``--ingest-every``).
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from .docs_pages import install_pages
from .duplicates_api import duplicates_router
from .embed_api import embed_router
from .errors import ApiError, install_error_handlers
from .guard import install_guard
from .items_api import items_router
from .metrics import Metrics
from .openai_embeddings import openai_router
from .operations_api import health_router, info_router
from .scheduled_ingest import ScheduledIngest
from .search_api import search_router
from .service import SearchService
from .state import ServeState

#: default upload limit (bytes of one image)
MAX_UPLOAD_BYTES = 20 << 20


def create_app(service: SearchService, *, max_upload_bytes: int = MAX_UPLOAD_BYTES, api_key: str | None = None,
               cors_origins: tuple[str, ...] = (), metrics: Metrics | None = None,
               ingest: ScheduledIngest | None = None) -> FastAPI:
    """The ASGI app over ``service`` (which the caller closes), with ``ingest``'s status and trigger
    when the server runs the scheduled ingestion itself."""
    metrics = metrics or Metrics()
    app = FastAPI(title="clip-search", version="1", description="Text, image and more-like-this search over one "
                  "clip-ingest collection, and its embedder as a service.", docs_url=None, redoc_url=None)
    app.state.serve = ServeState(service, max_upload_bytes, ingest, metrics)
    install_error_handlers(app)
    if cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type"])
    install_guard(app, metrics, api_key=api_key, max_upload_bytes=max_upload_bytes)
    for router in (search_router, openai_router, duplicates_router, embed_router, items_router, info_router):
        app.include_router(router)
    install_pages(app)
    app.include_router(health_router)
    return app


__all__ = ["ApiError", "MAX_UPLOAD_BYTES", "Metrics", "create_app"]
