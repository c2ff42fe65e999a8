"""The middleware in front of every route: the API key, the request size, and the request
metrics.

With ``api_key`` set, ``/v1/*`` and ``/metrics`` need ``Authorization: Bearer KEY`` (or
``X-API-Key``); the key is compared in constant time and never logged. A body over the upload
limit is refused with 413 before it is read. Every answer, refusals included, is counted and
timed per route.
"""

from __future__ import annotations

import hmac
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from .errors import error_response
from .metrics import Metrics


def install_guard(app: FastAPI, metrics: Metrics, *, api_key: str | None, max_upload_bytes: int) -> None:
    """Add the guard to ``app``: ``api_key`` (None: open), images up to ``max_upload_bytes``."""
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


def _authorised(request: Request, api_key: str) -> bool:
    given = request.headers.get("x-api-key") or ""
    auth = request.headers.get("authorization") or ""
    if auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    return hmac.compare_digest(given.encode(), api_key.encode())


__all__ = ["install_guard"]
