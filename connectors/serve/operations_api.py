"""The operations routes: the model and collection (with the scheduled ingestion's status), a
trigger for that ingestion, liveness, readiness and the Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from .calls import call
from .errors import ApiError, error_response
from .state import State

#: ``GET /v1/info`` and ``POST /v1/ingest``
info_router = APIRouter()
#: ``GET /healthz``, ``GET /readyz`` and ``GET /metrics``
health_router = APIRouter()


@info_router.get("/v1/info", summary="Model and collection")
async def info(state: State) -> dict[str, Any]:
    service, ingest = state.service, state.ingest
    count = await call(service.count)
    return {"model_id": service.model_id, "dim": service.embedder.dim, "collection": service.collection, "count": count,
            "text_calibrated": service.text_calibrated, "ingest": ingest.status() if ingest else None}


@info_router.post("/v1/ingest", status_code=202, summary="Run the scheduled ingestion now (with --ingest-every)")
async def ingest_now(state: State) -> dict[str, Any]:
    if state.ingest is None:
        raise ApiError(404, "this server does not ingest: start it with --ingest-every", code="not_ingesting")
    return {"started": state.ingest.trigger(), **state.ingest.status()}


@health_router.get("/healthz", summary="Liveness")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@health_router.get("/readyz", summary="Readiness: model loaded and collection reachable")
async def ready(state: State) -> Response:
    problem = await run_in_threadpool(state.service.readiness)
    if problem:
        return error_response(503, problem, code="not_ready")
    return JSONResponse({"status": "ready", "model_id": state.service.model_id})


@health_router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def prometheus(state: State) -> Response:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


__all__ = ["health_router", "info_router"]
