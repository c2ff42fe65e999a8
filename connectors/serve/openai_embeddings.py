"""OpenAI-compatible ``/v1/embeddings`` and ``/v1/models``: texts and images in one request.

An ``input`` item is a text, or an image given as

* a data URI (``data:image/png;base64,...``), the form OpenAI-compatible embedding servers take;
* bare base64 of an image file: a string is taken for an image only when it is valid base64
  *and* its bytes start with an image format's signature, so ordinary text is never mistaken
  for one;
* chat-style content, as vLLM accepts: ``{"type": "image_url", "image_url": {"url": "data:..."}}``
  (or ``"image_url": "data:..."``), and ``{"type": "text", "text": "..."}``.

Texts and images may be mixed; each goes through its micro-batcher, and ``data`` keeps the
order of ``input``. A URL that is not a data URI is refused: the server never fetches a
caller's address. Token arrays are refused (this model's tokenizer is not OpenAI's). ``model``
must name the served model (its id, as ``/v1/models`` lists it); another name is OpenAI's 404
``model_not_found``, so a client never gets vectors of a model it did not ask for.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Literal, Optional, Union

import numpy as np
from fastapi import APIRouter
from PIL import Image
from pydantic import BaseModel, Field

from ..decode import ImageDecodeError
from .calls import call
from .errors import ApiError
from .service import SearchService
from .state import State

#: items in one request (OpenAI's own limit)
MAX_INPUTS = 2048
#: signatures of the image formats the decoder reads (the first bytes of the file)
IMAGE_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")
DATA_URI = re.compile(r"data:(?P<type>[\w.+-]+/[\w.+-]+)?(?:;[\w.+-]+=[\w.+-]+)*;base64,(?P<data>.*)", re.DOTALL)

InputItem = Union[str, dict[str, Any], list[int]]


class OpenAIEmbeddingRequest(BaseModel):
    """The OpenAI ``/v1/embeddings`` request; ``input`` items are texts or images (see the module)."""

    input: Union[str, list[InputItem]] = Field(..., description=(
        "a text, or a list of texts and images: data URIs, bare base64 of an image file, or chat-style "
        '{"type": "image_url", "image_url": {"url": "data:..."}} items'))
    model: Optional[str] = Field(None, description="the served model's id (GET /v1/models); another name is a 404")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Optional[int] = None
    user: Optional[str] = None


def image_bytes(item: str, max_bytes: int) -> bytes | None:
    """The image file's bytes that ``item`` carries (data URI or bare base64), or None for a text.

    Raises:
        ApiError: a data URI that is not base64 of an image, or an image over ``max_bytes``.
    """
    if item.startswith("data:"):
        match = DATA_URI.fullmatch(item.strip())
        if match is None or (match["type"] and not match["type"].startswith("image/")):
            raise ApiError(400, "a data URI input must be data:image/...;base64,...", code="invalid_image")
        data = _b64(match["data"])
        if data is None:
            raise ApiError(400, "the data URI is not valid base64", code="invalid_image")
    else:
        if len(item) < 16 or " " in item:
            return None
        data = _b64(item)
        if data is None or not _looks_like_image(data):
            return None
    if len(data) > max_bytes:
        raise ApiError(413, f"image over {max_bytes} bytes", code="image_too_large")
    return data


def _b64(text: str) -> bytes | None:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        return None


def _looks_like_image(data: bytes) -> bool:
    return data.startswith(IMAGE_SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def parse_item(item: InputItem, max_bytes: int) -> str | bytes:
    """One ``input`` item as a text (str) or an image file's bytes."""
    if isinstance(item, str):
        image = image_bytes(item, max_bytes)
        return item if image is None else image
    if isinstance(item, list):
        raise ApiError(400, "token arrays are not supported: send strings (LangChain: "
                       "OpenAIEmbeddings(check_embedding_ctx_length=False))", code="unsupported_input")
    kind = item.get("type")
    if kind == "text" and isinstance(item.get("text"), str):
        return item["text"]
    if kind == "image_url":
        url = item.get("image_url")
        url = url.get("url") if isinstance(url, dict) else url
        if not isinstance(url, str) or not url.startswith("data:"):
            raise ApiError(400, "image_url must be a data URI (data:image/...;base64,...); the server fetches no URL",
                           code="invalid_image")
        data = image_bytes(url, max_bytes)
        assert data is not None  # a data URI is an image or an ApiError
        return data
    raise ApiError(400, 'an input object must be {"type": "text", "text": ...} or {"type": "image_url", "image_url": '
                   '{"url": "data:..."}}', code="unsupported_input")


def embed_inputs(service: SearchService, items: list[str | bytes]) -> np.ndarray:
    """Vectors of texts and image bytes in the order given (texts in one batched call, images in
    another); an undecodable image is a 400 naming its index."""
    vectors = np.zeros((len(items), service.embedder.dim), dtype=np.float32)
    texts = [(i, item) for i, item in enumerate(items) if isinstance(item, str)]
    images = [(i, item) for i, item in enumerate(items) if isinstance(item, bytes)]
    if texts:
        vectors[[i for i, _ in texts]] = service.embed_texts([t for _, t in texts])
    if images:
        vectors[[i for i, _ in images]] = service.embed_images([_decode(service, i, data) for i, data in images])
    return vectors


def _decode(service: SearchService, index: int, data: bytes) -> Image.Image:
    try:
        return service.decode(data)
    except ImageDecodeError as exc:
        raise ApiError(400, f"input {index}: not a decodable image ({exc.reason}: {exc.detail})",
                       param=f"input.{index}", code=exc.reason) from None


def check_model(service: SearchService, model: str | None) -> None:
    """OpenAI's 404 ``model_not_found`` unless ``model`` names the served model (None: the served one)."""
    if model is not None and model != service.model_id:
        raise ApiError(404, f"the model {model!r} does not exist here; this server embeds with {service.model_id!r} "
                       "(GET /v1/models)", param="model", code="model_not_found")


def encode_vector(vector: np.ndarray, encoding: str) -> Any:
    """A vector as a float list, or base64 of little-endian float32 (what the openai SDK asks for by default)."""
    if encoding == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return vector.tolist()


#: ``POST /v1/embeddings``, ``GET /v1/models`` and ``GET /v1/models/{model}``
openai_router = APIRouter()


@openai_router.post("/v1/embeddings", summary="OpenAI-compatible embeddings of texts and images (data URIs, base64, "
                    "chat-style image_url items)")
async def embeddings(state: State, body: OpenAIEmbeddingRequest) -> dict[str, Any]:
    service = state.service
    check_model(service, body.model)
    raw = [body.input] if isinstance(body.input, str) else body.input
    if not raw:
        raise ApiError(400, "input is empty", param="input", code="empty_input")
    if len(raw) > MAX_INPUTS:
        raise ApiError(400, f"at most {MAX_INPUTS} inputs in one request", param="input", code="too_many_inputs")
    if body.dimensions is not None and body.dimensions != service.embedder.dim:
        raise ApiError(400, f"this model has {service.embedder.dim} dimensions; it cannot shorten them",
                       param="dimensions", code="unsupported_dimensions")
    items = [parse_item(item, state.max_upload_bytes) for item in raw]
    vectors = await call(embed_inputs, service, items)
    data = [{"object": "embedding", "index": i, "embedding": encode_vector(v, body.encoding_format)}
            for i, v in enumerate(vectors)]
    words = sum(len(t.split()) for t in items if isinstance(t, str)) + sum(isinstance(t, bytes) for t in items)
    return {"object": "list", "data": data, "model": service.model_id,
            "usage": {"prompt_tokens": words, "total_tokens": words}}


@openai_router.get("/v1/models", summary="OpenAI-compatible model list: the served model")
async def models(state: State) -> dict[str, Any]:
    return {"object": "list", "data": [_model(state.service)]}


@openai_router.get("/v1/models/{model:path}", summary="OpenAI-compatible model lookup")
async def model(state: State, model: str) -> dict[str, Any]:
    check_model(state.service, model)
    return _model(state.service)


def _model(service: SearchService) -> dict[str, Any]:
    return {"id": service.model_id, "object": "model", "created": 0, "owned_by": "clip-ingest"}


__all__ = ["OpenAIEmbeddingRequest", "check_model", "embed_inputs", "encode_vector", "image_bytes", "openai_router",
           "parse_item"]
