"""The search routes: by text, by an image (base64 or uploaded) or by a stored item, the filter
check, and the facets the page offers.

A query is exactly one of ``text``, ``image`` and ``like``; an empty or blank text is a 400 (it
would rank by nothing). The filter is parsed before any embedding, so a malformed one fails
fast with its position. A filter naming a field that none of the collection's sampled items
has (:mod:`.fields`) still runs, and the answer carries a ``warnings`` entry saying so: a typo
such as ``lable`` otherwise looks like an empty result.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Optional

from fastapi import APIRouter, File, Form, Query, UploadFile
from pydantic import BaseModel, Field

from ..filters import FilterSyntaxError, parse_filter
from ..search.results import result_document
from .calls import call
from .errors import ApiError
from .service import SearchService
from .state import State

MAX_K = 1000
MAX_TEXT = 2000


class SearchRequest(BaseModel):
    """Exactly one of ``text``, ``image`` (base64) or ``like`` (a point id)."""

    text: Optional[str] = Field(None, max_length=MAX_TEXT)
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


async def read_upload(file: UploadFile, limit: int) -> bytes:
    """An uploaded file's bytes; 413 past ``limit``."""
    content = await file.read(limit + 1)
    if len(content) > limit:
        raise ApiError(413, f"image over {limit} bytes", param="file", code="image_too_large")
    return content


#: ``/v1/search`` (GET and POST), ``/v1/search/image``, ``/v1/filter/validate`` and ``/v1/facets``
search_router = APIRouter()


@search_router.get("/v1/search", summary="Search by text or by a stored item (shareable URL form)")
async def search_get(state: State, text: Optional[str] = Query(None, max_length=MAX_TEXT), like: Optional[str] = None,
                     filter: Optional[str] = None, k: int = Query(10, ge=1, le=MAX_K), offset: int = Query(0, ge=0),
                     min_score: Optional[float] = None,
                     min_relevance: Optional[float] = Query(None, ge=0, lt=1)) -> dict[str, Any]:
    return await search(state.service, SearchRequest(text=text, like=like, filter=filter, k=k, offset=offset,
                                                     min_score=min_score, min_relevance=min_relevance),
                        state.max_upload_bytes)


@search_router.post("/v1/search", summary="Search by text, base64 image or stored item")
async def search_post(state: State, body: SearchRequest) -> dict[str, Any]:
    return await search(state.service, body, state.max_upload_bytes)


@search_router.post("/v1/search/image", summary="Search by an uploaded image (multipart)")
async def search_upload(state: State, file: UploadFile = File(...), filter: Optional[str] = Form(None),
                        k: int = Form(10, ge=1, le=MAX_K), offset: int = Form(0, ge=0),
                        min_score: Optional[float] = Form(None),
                        min_relevance: Optional[float] = Form(None, ge=0, lt=1)) -> dict[str, Any]:
    content = await read_upload(file, state.max_upload_bytes)
    return await run_search(state.service, "image", content, {"image": file.filename or "upload"}, filter, k, offset,
                            min_score, min_relevance)


@search_router.get("/v1/filter/validate", summary="Check a filter; the error names its position")
async def validate_filter(state: State, filter: str) -> dict[str, Any]:
    try:
        parsed = parse_filter(filter)
    except FilterSyntaxError as exc:
        return {"valid": False, "error": exc.reason, "position": exc.position, "warnings": []}
    warning = (await call(state.service.fields)).warning(parsed)
    return {"valid": True, "error": None, "position": None, "warnings": [warning] if warning else []}


@search_router.get("/v1/facets", summary="Labels to filter by: text fields whose values repeat, with their counts "
                   "in a sample of the collection")
async def facets(state: State) -> dict[str, Any]:
    sample = await call(state.service.fields)
    return {"sampled": sample.sampled, "facets": sample.facets()}


async def search(service: SearchService, body: SearchRequest, max_upload_bytes: int) -> dict[str, Any]:
    """Answer one :class:`SearchRequest`."""
    given = [(kind, value) for kind, value in (("text", body.text), ("image", body.image), ("like", body.like))
             if value is not None]
    if len(given) != 1:
        raise ApiError(400, "give exactly one of text, image or like", code="one_query")
    kind, value = given[0]
    query: dict[str, Any] = {kind: value}
    if kind == "text" and not value.strip():
        raise ApiError(400, "text is empty: give words to search for", param="text", code="empty_text")
    if kind == "image":
        try:
            value = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(400, "image: not valid base64", param="image", code="invalid_image") from None
        if len(value) > max_upload_bytes:
            raise ApiError(413, f"image over {max_upload_bytes} bytes", param="image", code="image_too_large")
        query = {"image": f"<{len(value)} bytes>"}
    return await run_search(service, kind, value, query, body.filter, body.k, body.offset, body.min_score,
                            body.min_relevance)


async def run_search(service: SearchService, kind: str, value: Any, query: dict[str, Any], filter_text: str | None,
                     k: int, offset: int, min_score: float | None, min_relevance: float | None = None) -> dict[str, Any]:
    """The result document of one query (the CLI's ``--json`` schema, plus ``model_id``, and
    ``warnings`` when there are any)."""
    parsed = None if filter_text is None else await call(parse_filter, filter_text)
    options: dict[str, Any] = {}
    if min_relevance is not None:
        if min_score is not None:
            raise ApiError(400, "give min_score or min_relevance, not both", param="min_relevance")
        if kind == "text":  # each text query gets its own cut (the model's text calibration)
            options["min_relevance"] = min_relevance
        else:
            min_score = await call(service.relevance_cut, min_relevance)
    hits = await call(service.search, kind, value, k=k, filter=parsed, offset=offset, score_threshold=min_score, **options)
    document = result_document(query, hits, offset=offset, filter_text=filter_text)
    document["model_id"] = service.model_id
    if min_relevance is not None:  # the cut the calibration gave (image queries), so a client can show it
        document.update(min_relevance=min_relevance, min_score=min_score)
    if parsed is not None:
        warning = (await call(service.fields)).warning(parsed)
        if warning:
            document["warnings"] = [warning]
    return document


__all__ = ["MAX_K", "SearchRequest", "read_upload", "run_search", "search", "search_router"]
