"""The HTTP API (FastAPI) of ``clip-search serve``; the generated OpenAPI document is at
``/openapi.json``, rendered offline at ``/docs``.

The routes live by job: search (:mod:`.search_api`), OpenAI-compatible embeddings
(:mod:`.openai_embeddings`), the pages (:mod:`.docs_pages`); near-duplicates, items, native
embeddings and operations are here. Every error answer has OpenAI's shape
(:mod:`.errors`): malformed filter -> 400 with ``position``; undecodable or bomb image -> 400
with the decoder's reason as ``code``; upload over ``max_upload_bytes`` -> 413; unknown id -> 404;
database down or collection missing -> 503 with ``Retry-After`` (the next request tries again,
so the server recovers by itself). Blocking work (model, database, decoding) runs in worker threads, never on
the event loop. ``/v1/ingest`` triggers and ``/v1/info`` reports the server's own scheduled
ingestion (``--ingest-every``). With ``api_key`` set, ``/v1/*`` and ``/metrics`` need ``Authorization: Bearer KEY``
(or ``X-API-Key``); the key is compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
import mimetypes
import os
import time
from typing import Any, Literal, Optional

from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from ..search.duplicates import DECISIONS, TIERS, default_min_relevance, page_of
from .calls import call
from .docs_pages import install_pages
from .errors import ApiError, error_response, install_error_handlers
from .openai_embeddings import openai_router
from .scheduled_ingest import ScheduledIngest
from .search_api import MAX_K, read_upload, search_router
from .service import SearchService

#: default upload limit (bytes of one image)
MAX_UPLOAD_BYTES = 20 << 20
MAX_DUPLICATE_K = 100
#: groups in one page of GET /v1/duplicates: by default, and at most
DUPLICATES_PAGE, MAX_DUPLICATES_PAGE = 50, 500


class ReviewRequest(BaseModel):
    """A decision on a near-duplicate group, named by its ``members`` or by its ``group`` id as
    listed at ``min_relevance`` (or ``threshold``) and ``k`` (``keep`` names the point to keep,
    for ``keep-one`` only)."""

    members: Optional[list[str]] = Field(None, min_length=2, max_length=MAX_K)
    group: Optional[str] = Field(None, max_length=64, description="a group id from GET /v1/duplicates")
    decision: Literal[DECISIONS]  # type: ignore[valid-type]
    keep: Optional[str] = None
    tier: Literal[TIERS] = Field("duplicates", description="with group: the listing's tier")  # type: ignore[valid-type]
    min_relevance: Optional[float] = Field(None, ge=0, lt=1, description="with group: the listing's cut")
    threshold: Optional[float] = Field(None, ge=-1, le=1, description="with group: the listing's raw cosine instead")
    k: int = Field(10, ge=1, le=MAX_DUPLICATE_K, description="with group: the listing's k")


class EmbedTextRequest(BaseModel):
    texts: list[str] = Field(..., min_length=1, max_length=256)


class Metrics:
    """Prometheus metrics of one app: request counts and latency per endpoint, embed batch sizes."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("clip_search_requests_total", "HTTP requests", ["endpoint", "method", "status"], registry=self.registry)
        self.latency = Histogram("clip_search_request_seconds", "HTTP request latency", ["endpoint"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.batch = Histogram("clip_search_embed_batch_size", "texts per shared forward pass", registry=self.registry,
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128))
        self.image_batch = Histogram("clip_search_embed_image_batch_size", "images per shared forward pass",
                                     registry=self.registry, buckets=(1, 2, 4, 8, 16, 32, 64, 128))
        self.ingest_runs = Counter("clip_search_ingest_runs_total", "scheduled ingestion passes (--ingest-every) by outcome",
                                   ["outcome"], registry=self.registry)


def create_app(service: SearchService, *, max_upload_bytes: int = MAX_UPLOAD_BYTES, api_key: str | None = None,
               cors_origins: tuple[str, ...] = (), metrics: Metrics | None = None,
               ingest: ScheduledIngest | None = None) -> FastAPI:
    """The ASGI app over ``service`` (which the caller closes), with ``ingest``'s status and trigger
    when the server runs the scheduled ingestion itself."""
    metrics = metrics or Metrics()
    app = FastAPI(title="clip-search", version="1", description="Text, image and more-like-this search over one "
                  "clip-ingest collection, and its embedder as a service.", docs_url=None, redoc_url=None)
    app.state.metrics = metrics
    install_error_handlers(app)
    if cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type"])
    # a JSON body carries an image as base64 (4/3 of its size) plus the other fields
    max_body = max_upload_bytes * 4 // 3 + (1 << 20)

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        start = time.perf_counter()
        path = request.url.path
        if api_key and (path.startswith("/v1/") or path == "/metrics") and not _authorised(request, api_key):
            response: Response = error_response(401, "missing or wrong API key (Authorization: Bearer KEY)",
                                                code="invalid_api_key")
        elif int(request.headers.get("content-length") or 0) > max_body:
            response = error_response(413, f"request body over {max_body} bytes (images up to {max_upload_bytes} bytes)",
                                      code="request_too_large")
        else:
            response = await call_next(request)
        route = request.scope.get("route")
        endpoint = getattr(route, "path", "unmatched")
        metrics.requests.labels(endpoint, request.method, str(response.status_code)).inc()
        metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
        return response

    app.include_router(search_router(service, max_upload_bytes))
    app.include_router(openai_router(service, max_upload_bytes))

    # -- near-duplicates
    @app.get("/v1/duplicates", summary="Near-duplicate groups (edits of one photo, or with tier=similar look-alikes), "
             "page by page (largest first)")
    async def duplicates(tier: Literal[TIERS] = Query("duplicates", description=(  # type: ignore[valid-type]
                             "duplicates: the k-NN pass, then a pixel check keeps edits of one photo; similar: the k-NN pass alone")),
                         min_relevance: Optional[float] = Query(None, ge=0, lt=1, description=(
                             "the k-NN pass's calibrated cut [default: 0.5 for duplicates, 0.9 for similar]")),
                         threshold: Optional[float] = Query(None, ge=-1, le=1, description="a raw cosine instead of min_relevance"),
                         k: int = Query(10, ge=1, le=MAX_DUPLICATE_K), include_resolved: bool = False,
                         limit: int = Query(DUPLICATES_PAGE, ge=1, le=MAX_DUPLICATES_PAGE), offset: int = Query(0, ge=0),
                         cursor: Optional[str] = Query(None, max_length=100, description="next_cursor of the page before")) -> dict[str, Any]:
        if cursor is not None and offset:
            raise ApiError(400, "give offset or cursor, not both", param="cursor")
        cut, groups = await call(service.duplicates, min_relevance=min_relevance, threshold=threshold, k=k,
                                  include_resolved=include_resolved, tier=tier)
        page = await call(page_of, groups, limit=limit, offset=offset, cursor=cursor)
        return {"collection": service.collection, "model_id": service.model_id, "tier": tier,
                "min_relevance": None if threshold is not None else default_min_relevance(tier) if min_relevance is None else min_relevance,
                "threshold": cut, "k": k, "total_groups": page.total_groups, "total_members": page.total_members,
                "offset": offset, "limit": limit, "next_cursor": page.next_cursor, "groups": [g.to_dict() for g in page.groups]}

    @app.post("/v1/duplicates/review", summary="Store a decision on a group (by id or members): it is not listed again "
              "unless a new member joins")
    async def review(body: ReviewRequest) -> dict[str, Any]:
        if (body.members is None) == (body.group is None):
            raise ApiError(400, "give the group's id or its members, not both", param="group")
        if body.group is None:
            return await call(service.review, body.members, body.decision, body.keep)
        return await call(service.review_group, body.group, body.decision, body.keep, min_relevance=body.min_relevance,
                           threshold=body.threshold, k=body.k, tier=body.tier)

    # -- embeddings
    @app.post("/v1/embed/text", summary="Texts to vectors")
    async def embed_text(body: EmbedTextRequest) -> dict[str, Any]:
        vectors = await call(service.embed_texts, body.texts)
        return {"model_id": service.model_id, "dim": int(vectors.shape[1]), "vectors": vectors.tolist()}

    @app.post("/v1/embed/image", summary="Images (multipart files) to vectors")
    async def embed_image(files: list[UploadFile] = File(...)) -> dict[str, Any]:
        contents = [await read_upload(f, max_upload_bytes) for f in files]
        vectors = await call(service.embed_images, contents)
        return {"model_id": service.model_id, "dim": int(vectors.shape[1]), "vectors": vectors.tolist()}

    # -- items
    @app.get("/v1/items/{item_id}", summary="One item's payload")
    async def item(item_id: str) -> dict[str, Any]:
        point = await call(service.item, item_id)
        return {"id": point.id, "payload": point.payload}

    @app.get("/v1/items/{item_id}/thumbnail", summary="A JPEG thumbnail of the item's stored image",
             response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
    async def thumbnail(item_id: str, size: int = 256) -> Response:
        jpeg = await call(service.thumbnail, item_id, size)
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"})

    @app.get("/v1/items/{item_id}/file", summary="The item's original image file, as stored",
             response_class=FileResponse, responses={200: {"content": {"image/*": {}}}})
    async def original(item_id: str) -> FileResponse:
        path, _ = await call(service.image_file, item_id)
        media = mimetypes.guess_type(os.fsdecode(path))[0] or "application/octet-stream"
        # never rendered as a page of this origin, whatever the file holds
        return FileResponse(path, media_type=media, headers={"Content-Security-Policy": "sandbox",
                                                             "X-Content-Type-Options": "nosniff"})

    @app.get("/v1/info", summary="Model and collection")
    async def info() -> dict[str, Any]:
        count = await call(service.count)
        return {"model_id": service.model_id, "dim": service.embedder.dim, "collection": service.collection, "count": count,
                "text_calibrated": service.text_calibrated, "ingest": ingest.status() if ingest else None}

    @app.post("/v1/ingest", status_code=202, summary="Run the scheduled ingestion now (with --ingest-every)")
    async def ingest_now() -> dict[str, Any]:
        if ingest is None:
            raise ApiError(404, "this server does not ingest: start it with --ingest-every", code="not_ingesting")
        return {"started": ingest.trigger(), **ingest.status()}

    install_pages(app)

    # -- operations
    @app.get("/healthz", summary="Liveness")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: model loaded and collection reachable")
    async def ready() -> Response:
        problem = await run_in_threadpool(service.readiness)
        if problem:
            return error_response(503, problem, code="not_ready")
        return JSONResponse({"status": "ready", "model_id": service.model_id})

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _authorised(request: Request, api_key: str) -> bool:
    given = request.headers.get("x-api-key") or ""
    auth = request.headers.get("authorization") or ""
    if auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    return hmac.compare_digest(given.encode(), api_key.encode())


__all__ = ["ApiError", "MAX_UPLOAD_BYTES", "Metrics", "create_app"]
