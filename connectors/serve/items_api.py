"""The item routes: a stored point's payload, a JPEG thumbnail of its image, its original file.

No route takes a file path: the image is the one whose ``path`` ingestion stored in the item's
payload (:meth:`~.service.SearchService.image_file`), and the original is sent so that a
browser never renders it as a page of this origin, whatever the file holds.
"""

from __future__ import annotations

import mimetypes
import os
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse, Response

from .calls import call
from .state import State

#: ``GET /v1/items/{item_id}``, its ``/thumbnail`` and its ``/file``
items_router = APIRouter()


@items_router.get("/v1/items/{item_id}", summary="One item's payload")
async def item(state: State, item_id: str) -> dict[str, Any]:
    point = await call(state.service.item, item_id)
    return {"id": point.id, "payload": point.payload}


@items_router.get("/v1/items/{item_id}/thumbnail", summary="A JPEG thumbnail of the item's stored image",
                  response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
async def thumbnail(state: State, item_id: str, size: int = 256) -> Response:
    jpeg = await call(state.service.thumbnail, item_id, size)
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"})


@items_router.get("/v1/items/{item_id}/file", summary="The item's original image file, as stored",
                  response_class=FileResponse, responses={200: {"content": {"image/*": {}}}})
async def original(state: State, item_id: str) -> FileResponse:
    path, _ = await call(state.service.image_file, item_id)
    media = mimetypes.guess_type(os.fsdecode(path))[0] or "application/octet-stream"
    return FileResponse(path, media_type=media, headers={"Content-Security-Policy": "sandbox",
                                                         "X-Content-Type-Options": "nosniff"})


__all__ = ["items_router"]
