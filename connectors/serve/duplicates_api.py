"""The near-duplicate routes: the listing of groups page by page, and a decision on one group.

A group is named by its members, or by its id as listed at the same tier, cut and ``k`` (the
listing is made once per ``(cut, k, tier)`` while the collection is unchanged, see
:meth:`~.service.SearchService.duplicates`).
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from ..search.duplicates import DECISIONS, TIERS, default_min_relevance, page_of
from .calls import call
from .errors import ApiError
from .search_api import MAX_K
from .state import State

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


#: ``GET /v1/duplicates`` and ``POST /v1/duplicates/review``
duplicates_router = APIRouter()


@duplicates_router.get("/v1/duplicates", summary="Near-duplicate groups (edits of one photo, or with tier=similar "
                       "look-alikes), page by page (largest first)")
async def duplicates(state: State, tier: Literal[TIERS] = Query("duplicates", description=(  # type: ignore[valid-type]
                         "duplicates: the k-NN pass, then a pixel check keeps edits of one photo; similar: the k-NN pass alone")),
                     min_relevance: Optional[float] = Query(None, ge=0, lt=1, description=(
                         "the k-NN pass's calibrated cut [default: 0.5 for duplicates, 0.9 for similar]")),
                     threshold: Optional[float] = Query(None, ge=-1, le=1, description="a raw cosine instead of min_relevance"),
                     k: int = Query(10, ge=1, le=MAX_DUPLICATE_K), include_resolved: bool = False,
                     limit: int = Query(DUPLICATES_PAGE, ge=1, le=MAX_DUPLICATES_PAGE), offset: int = Query(0, ge=0),
                     cursor: Optional[str] = Query(None, max_length=100, description="next_cursor of the page before")) -> dict[str, Any]:
    if cursor is not None and offset:
        raise ApiError(400, "give offset or cursor, not both", param="cursor")
    service = state.service
    cut, groups = await call(service.duplicates, min_relevance=min_relevance, threshold=threshold, k=k,
                             include_resolved=include_resolved, tier=tier)
    page = await call(page_of, groups, limit=limit, offset=offset, cursor=cursor)
    return {"collection": service.collection, "model_id": service.model_id, "tier": tier,
            "min_relevance": None if threshold is not None else default_min_relevance(tier) if min_relevance is None else min_relevance,
            "threshold": cut, "k": k, "total_groups": page.total_groups, "total_members": page.total_members,
            "offset": offset, "limit": limit, "next_cursor": page.next_cursor, "groups": [g.to_dict() for g in page.groups]}


@duplicates_router.post("/v1/duplicates/review", summary="Store a decision on a group (by id or members): it is not "
                        "listed again unless a new member joins")
async def review(state: State, body: ReviewRequest) -> dict[str, Any]:
    if (body.members is None) == (body.group is None):
        raise ApiError(400, "give the group's id or its members, not both", param="group")
    if body.group is None:
        return await call(state.service.review, body.members, body.decision, body.keep)
    return await call(state.service.review_group, body.group, body.decision, body.keep, min_relevance=body.min_relevance,
                      threshold=body.threshold, k=body.k, tier=body.tier)


__all__ = ["DUPLICATES_PAGE", "MAX_DUPLICATES_PAGE", "MAX_DUPLICATE_K", "ReviewRequest", "duplicates_router"]
