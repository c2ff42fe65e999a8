"""What the routes share: one :class:`ServeState` that :func:`~.app.create_app` puts on
``app.state``, handed to each route as a FastAPI dependency (:data:`State`), so the routers are
plain module-level objects and no route closes over its app's arguments. The dependency takes
only the request, so it adds nothing to the OpenAPI document."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from .metrics import Metrics
from .scheduled_ingest import ScheduledIngest
from .service import SearchService


@dataclass(frozen=True)
class ServeState:
    """The service answering every route, the largest image upload in bytes, the server's own
    scheduled ingestion (None: it does not ingest) and the app's metrics."""

    service: SearchService
    max_upload_bytes: int
    ingest: ScheduledIngest | None
    metrics: Metrics


def serve_state(request: Request) -> ServeState:
    """The :class:`ServeState` of the app answering ``request`` (``app.state.serve``)."""
    return request.app.state.serve


#: a route parameter of this type receives its app's :class:`ServeState`
State = Annotated[ServeState, Depends(serve_state)]

__all__ = ["ServeState", "State", "serve_state"]
