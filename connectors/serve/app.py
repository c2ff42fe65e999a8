"""The HTTP API (FastAPI) of ``clip-search serve``; the generated OpenAPI document is at ``/openapi.json``.

Errors: malformed filter -> 400 with ``position``; undecodable or bomb image -> 400 with the
decoder's reason; upload over ``max_upload_bytes`` -> 413; unknown id -> 404; database down or
collection missing -> 503 with ``Retry-After`` (the next request tries again, so the server
recovers by itself). Blocking work (model, database, decoding) runs in worker threads, never on
the event loop. ``/v1/ingest`` triggers and ``/v1/info`` reports the server's own scheduled
ingestion (``--ingest-every``). With ``api_key`` set, ``/v1/*`` and ``/metrics`` need ``Authorization: Bearer KEY``
(or ``X-API-Key``); the key is compared in constant time and never logged.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import time
from pathlib import Path
from typing import Any, Literal, Optional, Union

import numpy as np
from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from ..backends.base import StoreError
from ..decode import ImageDecodeError
from ..search.filters import FilterError, FilterSyntaxError, parse_filter
from ..search.duplicates import DECISIONS, TIERS, default_min_relevance, page_of
from ..search.results import result_document
from ..search.searcher import PointNotFoundError
from .scheduled_ingest import ScheduledIngest
from .service import SearchService, ThumbnailUnavailable

#: default upload limit (bytes of one image)
MAX_UPLOAD_BYTES = 20 << 20
RETRY_AFTER_S = 5
MAX_K = 1000
MAX_DUPLICATE_K = 100
#: groups in one page of GET /v1/duplicates: by default, and at most
DUPLICATES_PAGE, MAX_DUPLICATES_PAGE = 50, 500


class SearchRequest(BaseModel):
    """Exactly one of ``text``, ``image`` (base64) or ``like`` (a point id)."""

    text: Optional[str] = Field(None, max_length=2000)
    image: Optional[str] = Field(None, description="base64 of the image file's bytes")
    like: Optional[str] = Field(None, description="a point id: images similar to it, excluding it")
    filter: Optional[str] = None
    k: int = Field(10, ge=1, le=MAX_K)
    offset: int = Field(0, ge=0)
    min_score: Optional[float] = None
    min_relevance: Optional[float] = Field(None, ge=0, lt=1, description=(
        "keep hits at or above this calibrated relevance, the same for every model, instead of a raw "
        "min_score: for image and like queries the probability of a near-duplicate, for text the "
        "probability that the image matches (models with a text calibration; 400 otherwise)"))


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


class OpenAIEmbeddingRequest(BaseModel):
    """The OpenAI ``/v1/embeddings`` request (strings only: no tokenizer arrays)."""

    input: Union[str, list[str], list[int], list[list[int]]]
    model: Optional[str] = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Optional[int] = None
    user: Optional[str] = None


class ApiError(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra


class Metrics:
    """Prometheus metrics of one app: request counts and latency per endpoint, embed batch sizes."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("clip_search_requests_total", "HTTP requests", ["endpoint", "method", "status"], registry=self.registry)
        self.latency = Histogram("clip_search_request_seconds", "HTTP request latency", ["endpoint"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.batch = Histogram("clip_search_embed_batch_size", "texts per shared forward pass", registry=self.registry,
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128))
        self.ingest_runs = Counter("clip_search_ingest_runs_total", "scheduled ingestion passes (--ingest-every) by outcome",
                                   ["outcome"], registry=self.registry)


def create_app(service: SearchService, *, max_upload_bytes: int = MAX_UPLOAD_BYTES, api_key: str | None = None,
               cors_origins: tuple[str, ...] = (), metrics: Metrics | None = None,
               ingest: ScheduledIngest | None = None) -> FastAPI:
    """The ASGI app over ``service`` (which the caller closes), with ``ingest``'s status and trigger
    when the server runs the scheduled ingestion itself."""
    metrics = metrics or Metrics()
    app = FastAPI(title="clip-search", version="1", description="Text, image and more-like-this search over one "
                  "clip-ingest collection, and its embedder as a service.")
    app.state.metrics = metrics
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type"])
    # a JSON body carries an image as base64 (4/3 of its size) plus the other fields
    max_body = max_upload_bytes * 4 // 3 + (1 << 20)

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        start = time.perf_counter()
        path = request.url.path
        if api_key and (path.startswith("/v1/") or path == "/metrics") and not _authorised(request, api_key):
            response: Response = _error(401, "missing or wrong API key (Authorization: Bearer KEY)")
        elif int(request.headers.get("content-length") or 0) > max_body:
            response = _error(413, f"request body over {max_body} bytes (images up to {max_upload_bytes} bytes)")
        else:
            response = await call_next(request)
        route = request.scope.get("route")
        endpoint = getattr(route, "path", "unmatched")
        metrics.requests.labels(endpoint, request.method, str(response.status_code)).inc()
        metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
        return response

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        return _error(exc.status, exc.message, **exc.extra)

    # -- search
    @app.get("/v1/search", summary="Search by text or by a stored item (shareable URL form)")
    async def search_get(text: Optional[str] = Query(None, max_length=2000), like: Optional[str] = None,
                         filter: Optional[str] = None, k: int = Query(10, ge=1, le=MAX_K), offset: int = Query(0, ge=0),
                         min_score: Optional[float] = None,
                         min_relevance: Optional[float] = Query(None, ge=0, lt=1)) -> dict[str, Any]:
        return await _search(service, SearchRequest(text=text, like=like, filter=filter, k=k, offset=offset, min_score=min_score,
                                                    min_relevance=min_relevance))

    @app.post("/v1/search", summary="Search by text, base64 image or stored item")
    async def search_post(body: SearchRequest) -> dict[str, Any]:
        return await _search(service, body, max_upload_bytes)

    @app.post("/v1/search/image", summary="Search by an uploaded image (multipart)")
    async def search_upload(file: UploadFile = File(...), filter: Optional[str] = Form(None), k: int = Form(10, ge=1, le=MAX_K),
                            offset: int = Form(0, ge=0), min_score: Optional[float] = Form(None),
                            min_relevance: Optional[float] = Form(None, ge=0, lt=1)) -> dict[str, Any]:
        content = await _read_upload(file, max_upload_bytes)
        return await _run_search(service, "image", content, {"image": file.filename or "upload"}, filter, k, offset, min_score,
                                 min_relevance)

    @app.get("/v1/filter/validate", summary="Check a filter; the error names its position")
    async def validate_filter(filter: str) -> dict[str, Any]:
        try:
            parse_filter(filter)
        except FilterSyntaxError as exc:
            return {"valid": False, "error": exc.reason, "position": exc.position}
        return {"valid": True, "error": None, "position": None}

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
            raise ApiError(400, "give offset or cursor, not both")
        cut, groups = await _call(service.duplicates, min_relevance=min_relevance, threshold=threshold, k=k,
                                  include_resolved=include_resolved, tier=tier)
        page = await _call(page_of, groups, limit=limit, offset=offset, cursor=cursor)
        return {"collection": service.collection, "model_id": service.model_id, "tier": tier,
                "min_relevance": None if threshold is not None else default_min_relevance(tier) if min_relevance is None else min_relevance,
                "threshold": cut, "k": k, "total_groups": page.total_groups, "total_members": page.total_members,
                "offset": offset, "limit": limit, "next_cursor": page.next_cursor, "groups": [g.to_dict() for g in page.groups]}

    @app.post("/v1/duplicates/review", summary="Store a decision on a group (by id or members): it is not listed again "
              "unless a new member joins")
    async def review(body: ReviewRequest) -> dict[str, Any]:
        if (body.members is None) == (body.group is None):
            raise ApiError(400, "give the group's id or its members, not both")
        if body.group is None:
            return await _call(service.review, body.members, body.decision, body.keep)
        return await _call(service.review_group, body.group, body.decision, body.keep, min_relevance=body.min_relevance,
                           threshold=body.threshold, k=body.k, tier=body.tier)

    # -- embeddings
    @app.post("/v1/embed/text", summary="Texts to vectors")
    async def embed_text(body: EmbedTextRequest) -> dict[str, Any]:
        vectors = await _call(service.embed_texts, body.texts)
        return {"model_id": service.model_id, "dim": int(vectors.shape[1]), "vectors": vectors.tolist()}

    @app.post("/v1/embed/image", summary="Images (multipart files) to vectors")
    async def embed_image(files: list[UploadFile] = File(...)) -> dict[str, Any]:
        contents = [await _read_upload(f, max_upload_bytes) for f in files]
        vectors = await _call(service.embed_images, contents)
        return {"model_id": service.model_id, "dim": int(vectors.shape[1]), "vectors": vectors.tolist()}

    @app.post("/v1/embeddings", summary="OpenAI-compatible text embeddings")
    async def openai_embeddings(body: OpenAIEmbeddingRequest) -> dict[str, Any]:
        texts = [body.input] if isinstance(body.input, str) else body.input
        if not texts or not all(isinstance(t, str) for t in texts):
            raise ApiError(400, "input must be a string or a list of strings (token arrays are not supported; "
                           "LangChain: OpenAIEmbeddings(check_embedding_ctx_length=False))")
        if body.dimensions is not None and body.dimensions != service.embedder.dim:
            raise ApiError(400, f"this model has {service.embedder.dim} dimensions; it cannot shorten them")
        vectors = await _call(service.embed_texts, texts)
        data = [{"object": "embedding", "index": i, "embedding": _encode(v, body.encoding_format)} for i, v in enumerate(vectors)]
        words = sum(len(t.split()) for t in texts)
        return {"object": "list", "data": data, "model": service.model_id, "usage": {"prompt_tokens": words, "total_tokens": words}}

    @app.get("/v1/models", summary="OpenAI-compatible model list")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": service.model_id, "object": "model", "owned_by": "clip-ingest"}]}

    # -- items
    @app.get("/v1/items/{item_id}", summary="One item's payload")
    async def item(item_id: str) -> dict[str, Any]:
        point = await _call(service.item, item_id)
        return {"id": point.id, "payload": point.payload}

    @app.get("/v1/items/{item_id}/thumbnail", summary="A JPEG thumbnail of the item's stored image",
             response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
    async def thumbnail(item_id: str, size: int = 256) -> Response:
        jpeg = await _call(service.thumbnail, item_id, size)
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"})

    @app.get("/v1/info", summary="Model and collection")
    async def info() -> dict[str, Any]:
        count = await _call(service.count)
        return {"model_id": service.model_id, "dim": service.embedder.dim, "collection": service.collection, "count": count,
                "text_calibrated": service.text_calibrated, "ingest": ingest.status() if ingest else None}

    @app.post("/v1/ingest", status_code=202, summary="Run the scheduled ingestion now (with --ingest-every)")
    async def ingest_now() -> dict[str, Any]:
        if ingest is None:
            raise ApiError(404, "this server does not ingest: start it with --ingest-every")
        return {"started": ingest.trigger(), **ingest.status()}

    # -- the page
    page = (Path(__file__).with_name("page.html")).read_bytes()

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        return Response(page, media_type="text/html; charset=utf-8",
                        headers={"Content-Security-Policy": "default-src 'self'; img-src 'self' blob:; "
                                 "style-src 'unsafe-inline'; script-src 'unsafe-inline'"})

    # -- operations
    @app.get("/healthz", summary="Liveness")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: model loaded and collection reachable")
    async def ready() -> Response:
        problem = await run_in_threadpool(service.readiness)
        if problem:
            return _error(503, problem)
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


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def _encode(vector: np.ndarray, encoding: str) -> Any:
    if encoding == "base64":  # what the openai SDK asks for by default: little-endian float32
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return vector.tolist()


async def _read_upload(file: UploadFile, limit: int) -> bytes:
    content = await file.read(limit + 1)
    if len(content) > limit:
        raise ApiError(413, f"image over {limit} bytes")
    return content


async def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run blocking ``fn`` in a worker thread, turning domain errors into HTTP errors."""
    try:
        return await run_in_threadpool(fn, *args, **kwargs)
    except FilterSyntaxError as exc:
        raise ApiError(400, f"filter: {exc.reason}", position=exc.position) from None
    except FilterError as exc:
        raise ApiError(400, f"filter: {exc}") from None
    except ImageDecodeError as exc:
        raise ApiError(400, f"image: {exc.reason}: {exc.detail}", reason=exc.reason) from None
    except (PointNotFoundError, ThumbnailUnavailable) as exc:
        raise ApiError(404, str(exc)) from None
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    except StoreError as exc:
        raise ApiError(503, f"database unavailable: {exc}") from None


async def _search(service: SearchService, body: SearchRequest, max_upload_bytes: int = MAX_UPLOAD_BYTES) -> dict[str, Any]:
    given = [(kind, value) for kind, value in (("text", body.text), ("image", body.image), ("like", body.like)) if value is not None]
    if len(given) != 1:
        raise ApiError(400, "give exactly one of text, image or like")
    kind, value = given[0]
    query: dict[str, Any] = {kind: value}
    if kind == "image":
        try:
            value = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(400, "image: not valid base64") from None
        if len(value) > max_upload_bytes:
            raise ApiError(413, f"image over {max_upload_bytes} bytes")
        query = {"image": f"<{len(value)} bytes>"}
    return await _run_search(service, kind, value, query, body.filter, body.k, body.offset, body.min_score, body.min_relevance)


async def _run_search(service: SearchService, kind: str, value: Any, query: dict[str, Any], filter_text: str | None,
                      k: int, offset: int, min_score: float | None, min_relevance: float | None = None) -> dict[str, Any]:
    # parsed once, before any embedding: a bad filter fails fast, with its position
    parsed = None if filter_text is None else await _call(parse_filter, filter_text)
    options: dict[str, Any] = {}
    if min_relevance is not None:
        if min_score is not None:
            raise ApiError(400, "give min_score or min_relevance, not both")
        if kind == "text":  # each text query gets its own cut (the model's text calibration)
            options["min_relevance"] = min_relevance
        else:
            min_score = await _call(service.relevance_cut, min_relevance)
    hits = await _call(service.search, kind, value, k=k, filter=parsed, offset=offset, score_threshold=min_score, **options)
    document = result_document(query, hits, offset=offset, filter_text=filter_text)
    document["model_id"] = service.model_id
    if min_relevance is not None:  # the cut the calibration gave (image queries), so a client can show it
        document.update(min_relevance=min_relevance, min_score=min_score)
    return document


__all__ = ["MAX_UPLOAD_BYTES", "Metrics", "create_app"]
