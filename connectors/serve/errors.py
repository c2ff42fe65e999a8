"""One error shape for every answer of the HTTP API that is an error: OpenAI's.

``{"error": {"message", "type", "param", "code"}}``, whatever raised it: our own checks
(:class:`ApiError`), request validation (FastAPI's 422, whose ``{"detail": [...]}`` would echo
each rejected input back: here summarised in one line naming the fields, never the values),
unknown routes and methods (Starlette's 404/405) and unexpected failures (500, logged with the
traceback; the client learns only that it happened). The openai SDK shows ``error.message`` in
its exception; the page shows it for every status. Extra facts a client can act on (a filter's
``position``) sit beside the four keys inside ``error``.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("clip_ingest.serve")

#: Retry-After (seconds) of a 503: the next request tries the database again
RETRY_AFTER_S = 5
#: validation problems named in one message (the rest are counted)
SHOWN_PROBLEMS = 3
#: characters of one validation message kept (pydantic's own texts are short; a custom one may not be)
PROBLEM_CHARS = 160

#: OpenAI's error ``type`` per HTTP status
ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
    405: "invalid_request_error", 409: "conflict_error", 413: "invalid_request_error", 422: "invalid_request_error",
    429: "rate_limit_error", 500: "server_error", 503: "service_unavailable_error",
}


class ApiError(Exception):
    """An error answer: ``status``, a message a person can act on, the request field it concerns
    (``param``), a machine-readable ``code``, and any ``extra`` facts (e.g. ``position``)."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.extra = status, message, param, code, extra


def error_body(status: int, message: str, *, param: str | None = None, code: str | None = None,
               **extra: Any) -> dict[str, Any]:
    """The JSON document of an error answer."""
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "invalid_request_error" if status < 500
                                                                  else "server_error"),
                      "param": param, "code": code, **extra}}


def error_response(status: int, message: str, *, param: str | None = None, code: str | None = None,
                   **extra: Any) -> JSONResponse:
    """An error answer (a 503 says when to retry)."""
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
    return JSONResponse(error_body(status, message, param=param, code=code, **extra), status_code=status, headers=headers)


def summarise_validation(problems: Sequence[Any]) -> tuple[str, str | None]:
    """``(message, param)`` of FastAPI's validation errors: ``field: problem`` for the first
    few, the field of the first as ``param``; the rejected values are left out (a 5,000-text
    request must not come back 5,000 texts long)."""
    parts: list[str] = []
    fields: list[str] = []
    for problem in problems:
        field = _field(problem.get("loc", ()))
        text = f"{field}: {problem.get('msg', 'invalid')}" if field else str(problem.get("msg", "invalid"))
        if field not in fields:  # a union type reports each alternative; the first says enough
            fields.append(field)
            parts.append(text[:PROBLEM_CHARS])
    shown = "; ".join(parts[:SHOWN_PROBLEMS])
    more = len(parts) - SHOWN_PROBLEMS
    message = f"invalid request: {shown}" + (f" (and {more} more)" if more > 0 else "")
    return message, (fields[0] or None) if fields else None


def _field(loc: Sequence[Any]) -> str:
    """``("body", "input", 3)`` -> ``input.3``: where the value was, without the request part."""
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "form", "cookie")]
    # pydantic names each alternative of a union (``input.list[str].3``): the value's path is enough
    return ".".join(p for p in parts if "[" not in p and p not in ("str", "int", "function-after"))


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error of ``app`` in the one shape."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, param=exc.param, code=exc.code, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = summarise_validation(exc.errors())
        return error_response(422, message, param=param, code="invalid_value")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "unknown_url", 405: "method_not_allowed"}
        message = f"no such endpoint: {request.method} {request.url.path}" if exc.status_code in (404, 405) else str(exc.detail)
        response = error_response(exc.status_code, message, code=codes.get(exc.status_code))
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error answering %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal server error (logged by the server)", code="internal_error")


__all__ = ["ApiError", "ERROR_TYPES", "RETRY_AFTER_S", "error_body", "error_response", "install_error_handlers",
           "summarise_validation"]
