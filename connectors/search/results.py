"""The JSON form of search results, shared by ``clip-search --json`` and ``clip-search serve``."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..backends.base import Hit


def hit_dict(rank: int, hit: Hit) -> dict[str, Any]:
    """One hit: ``{"rank", "id", "score", "payload"}`` (ranks count from 1 across pages)."""
    return {"rank": rank, "id": hit.id, "score": hit.score, "payload": hit.payload}


def result_document(query: Mapping[str, Any], hits: Sequence[Hit], *, offset: int = 0, filter_text: str | None = None) -> dict[str, Any]:
    """One query's results: ``{"filter", "query", "hits"}``, as ``clip-search --json`` prints them."""
    return {"filter": filter_text, "query": dict(query),
            "hits": [hit_dict(rank, hit) for rank, hit in enumerate(hits, offset + 1)]}


__all__ = ["hit_dict", "result_document"]
