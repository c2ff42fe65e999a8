"""``/v1/embeddings`` with images (data URIs, bare base64, chat-style ``image_url`` items) mixed
with texts, and the model name checked, through the unmodified openai SDK and LangChain's
``OpenAIEmbeddings``; the SDK's exceptions carry the server's message."""

from __future__ import annotations

import base64

import numpy as np
import openai
import pytest
from langchain_openai import OpenAIEmbeddings
from PIL import Image

from imagegen import image_bytes
from serve_helpers import served  # noqa: F401 (fixture)


def sdk_for(client) -> openai.OpenAI:
    return openai.OpenAI(base_url=str(client.base_url).rstrip("/") + "/v1", api_key="unused", max_retries=0)


def data_uri(content: bytes, kind: str = "png") -> str:
    return f"data:image/{kind};base64," + base64.b64encode(content).decode()


def test_texts_and_images_in_one_request_in_every_form(served, tiny_embedder):
    client, _, points, _, _ = served
    png = open(points[3].payload["path"], "rb").read()
    jpeg = image_bytes(Image.new("RGB", (300, 200), (20, 160, 40)), "JPEG")
    inputs = ["a red circle", data_uri(png), base64.b64encode(jpeg).decode(),
              {"type": "image_url", "image_url": {"url": data_uri(jpeg, "jpeg")}}, {"type": "text", "text": "a blue square"},
              {"type": "image_url", "image_url": data_uri(png)}]
    result = sdk_for(client).embeddings.create(model=tiny_embedder.model_id, input=inputs)
    got = np.array([d.embedding for d in sorted(result.data, key=lambda d: d.index)])
    texts = tiny_embedder.embed_texts(["a red circle", "a blue square"])
    images = tiny_embedder.embed_images([png, jpeg])  # as ingestion embeds the same files
    expected = np.stack([texts[0], images[0], images[1], images[1], texts[1], images[0]])
    assert got.shape == expected.shape and np.allclose(got, expected, atol=1e-5)
    assert not np.allclose(got[1], got[2], atol=1e-3)  # different pictures, different vectors


def test_text_that_happens_to_be_base64_stays_text(served, tiny_embedder):
    client, *_ = served
    words = ["abcdefghijklmnopqrstuvwx", "Zm9vYmFyYmF6cXV4cXV1eA=="]  # valid base64, but no image inside
    body = client.post("/v1/embeddings", json={"input": words, "model": tiny_embedder.model_id}).json()
    assert np.allclose([d["embedding"] for d in body["data"]], tiny_embedder.embed_texts(words), atol=1e-5)


def test_the_sdk_shows_the_servers_message_and_model_names_are_checked(served, tiny_embedder):
    client, *_ = served
    sdk = sdk_for(client)
    assert [m.id for m in sdk.models.list().data] == [tiny_embedder.model_id]
    assert sdk.models.retrieve(tiny_embedder.model_id).id == tiny_embedder.model_id
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.embeddings.create(model="text-embedding-3-small", input="a cat")
    assert "'text-embedding-3-small' does not exist here" in str(missing.value) and missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as broken:
        sdk.embeddings.create(model=tiny_embedder.model_id, input=["a cat", data_uri(b"\x89PNG\r\n\x1a\n broken")])
    assert "input 1: not a decodable image" in str(broken.value) and broken.value.param == "input.1"
    with pytest.raises(openai.BadRequestError) as remote:
        sdk.embeddings.create(model=tiny_embedder.model_id,
                              input=[{"type": "image_url", "image_url": {"url": "http://example.invalid/cat.png"}}])  # type: ignore[list-item]
    assert "fetches no URL" in str(remote.value)


def test_langchain_embeds_image_data_uris(served, tiny_embedder):
    client, _, points, _, _ = served
    embeddings = OpenAIEmbeddings(base_url=str(client.base_url).rstrip("/") + "/v1", api_key="unused",
                                  model=tiny_embedder.model_id, check_embedding_ctx_length=False)
    pictures = [open(p.payload["path"], "rb").read() for p in points[:2]]
    vectors = embeddings.embed_documents([data_uri(content) for content in pictures] + ["a green triangle"])
    expected = np.vstack([tiny_embedder.embed_images(pictures), tiny_embedder.embed_texts(["a green triangle"])])
    assert np.allclose(vectors, expected, atol=1e-5)
