"""Blocking work of a request, run in a worker thread, its domain errors answered as API errors.

Each library error becomes the status a client can act on: a malformed filter 400 with its
``position``; an undecodable or bomb image 400 with the decoder's reason as ``code``; an unknown
item 404; any other ``ValueError`` 400; the database down 503 (with ``Retry-After``: the next
request tries again, so the server recovers by itself).
"""

from __future__ import annotations

from typing import Any, Callable

from starlette.concurrency import run_in_threadpool

from ..backends.base import StoreError
from ..decode import ImageDecodeError
from ..filters import FilterError, FilterSyntaxError
from ..search.searcher import PointNotFoundError
from .errors import ApiError
from .thumbnails import ThumbnailUnavailable


async def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` in a worker thread, never on the event loop."""
    try:
        return await run_in_threadpool(fn, *args, **kwargs)
    except FilterSyntaxError as exc:
        raise ApiError(400, f"filter: {exc.reason} (at position {exc.position})", param="filter", code="invalid_filter",
                       position=exc.position) from None
    except FilterError as exc:
        raise ApiError(400, f"filter: {exc}", param="filter", code="invalid_filter") from None
    except ImageDecodeError as exc:
        raise ApiError(400, f"image: {exc.reason}: {exc.detail}", param="image", code=exc.reason) from None
    except (PointNotFoundError, ThumbnailUnavailable) as exc:
        raise ApiError(404, str(exc), code="not_found") from None
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    except StoreError as exc:
        raise ApiError(503, f"database unavailable: {exc}", code="database_unavailable") from None


__all__ = ["call"]
