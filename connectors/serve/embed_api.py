"""The native embedding routes: texts, or uploaded image files, to vectors of the served model
(through the same shared forward passes as the searches; the OpenAI-compatible form is
:mod:`.openai_embeddings`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, File, UploadFile
from pydantic import BaseModel, Field

from .calls import call
from .search_api import read_upload
from .state import State


class EmbedTextRequest(BaseModel):
    texts: list[str] = Field(..., min_length=1, max_length=256)


#: ``POST /v1/embed/text`` and ``POST /v1/embed/image``
embed_router = APIRouter()


@embed_router.post("/v1/embed/text", summary="Texts to vectors")
async def embed_text(state: State, body: EmbedTextRequest) -> dict[str, Any]:
    vectors = await call(state.service.embed_texts, body.texts)
    return {"model_id": state.service.model_id, "dim": int(vectors.shape[1]), "vectors": vectors.tolist()}


@embed_router.post("/v1/embed/image", summary="Images (multipart files) to vectors")
async def embed_image(state: State, files: list[UploadFile] = File(...)) -> dict[str, Any]:
    contents = [await read_upload(f, state.max_upload_bytes) for f in files]
    vectors = await call(state.service.embed_images, contents)
    return {"model_id": state.service.model_id, "dim": int(vectors.shape[1]), "vectors": vectors.tolist()}


__all__ = ["EmbedTextRequest", "embed_router"]
