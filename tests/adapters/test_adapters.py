"""LangChain, LlamaIndex and Haystack adapters, each exercised through its framework's own retrieval API
on the real tiny model: a near-duplicate of a planted image must retrieve it, and a text query must rank
exactly as the embedder's own cosine similarities do."""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")

from clip_ingest.connectors.adapters import INSTALL_HINT, as_lists, image_source, require, resolve_embedder  # noqa: E402
from clip_ingest.connectors.decode import ImageDecodeError  # noqa: E402

pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")
pytest.importorskip("haystack")

PLANTED = 5  # index (in sorted path order) of the image every near-duplicate query is made from
TEXT = "a red circle"


@pytest.fixture
def images(shape_folder: Path) -> list[str]:
    return sorted(str(p) for p in shape_folder.rglob("*.png"))


@pytest.fixture
def near_duplicate(images: list[str], tmp_path: Path) -> str:
    """The planted image re-encoded as a JPEG: other bytes, same picture."""
    from PIL import Image

    path = tmp_path / "query.jpg"
    Image.open(images[PLANTED]).convert("RGB").save(path, "JPEG", quality=90)
    return str(path)


def text_ranking(embedder, images: list[str], text: str) -> list[str]:
    """Images by descending cosine similarity to ``text``, computed directly with the embedder."""
    scores = embedder.embed_images(images) @ embedder.embed_texts([text])[0]
    return [images[i] for i in np.argsort(-scores, kind="stable")]


# -- shared helpers
def test_require_names_the_extra():
    with pytest.raises(ImportError, match=r'pip install "clip-ingest\[adapters\]"') as info:
        require("clip_ingest_no_such_framework", "Nothing")
    assert "Nothing" in str(info.value) and INSTALL_HINT in str(info.value)


@pytest.mark.parametrize(
    "module, framework_module",
    [("langchain", "langchain_core.embeddings"), ("llamaindex", "llama_index.core.embeddings"), ("haystack", "haystack")],
)
def test_adapter_without_its_framework_says_how_to_install(monkeypatch, module, framework_module):
    name = f"clip_ingest.connectors.adapters.{module}"
    monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setitem(sys.modules, framework_module, None)  # makes `import framework_module` fail
    with pytest.raises(ImportError, match=r"clip-ingest\[adapters\]"):
        importlib.import_module(name)


def test_resolve_embedder_checks_its_input(tiny_embedder):
    assert resolve_embedder(tiny_embedder) is tiny_embedder
    with pytest.raises(TypeError, match="batch_size"):
        resolve_embedder(tiny_embedder, batch_size=4)
    with pytest.raises(TypeError, match="Embedder or a model spec"):
        resolve_embedder(42)  # type: ignore[arg-type]


def test_image_source_accepts_local_files_only(tmp_path):
    assert image_source(f"file://{tmp_path}/a%20b.png") == f"{tmp_path}/a b.png"
    assert image_source(tmp_path / "x.png") == tmp_path / "x.png"
    with pytest.raises(ValueError, match="file://"):
        image_source("https://example.com/cat.png")


def test_as_lists_gives_plain_floats():
    rows = as_lists(np.array([[0.5, 0.25]], dtype=np.float32))
    assert rows == [[0.5, 0.25]] and type(rows[0][0]) is float


# -- LangChain
def test_langchain_embeddings_match_the_embedder(tiny_embedder, images):
    from clip_ingest.connectors.adapters.langchain import ClipIngestEmbeddings

    lc = ClipIngestEmbeddings(tiny_embedder)
    assert lc.dim == tiny_embedder.dim
    np.testing.assert_allclose(lc.embed_documents(["a", "b b"]), tiny_embedder.embed_texts(["a", "b b"]), atol=1e-6)
    np.testing.assert_allclose(lc.embed_query(TEXT), tiny_embedder.embed_texts([TEXT])[0], atol=1e-6)
    np.testing.assert_allclose(asyncio.run(lc.aembed_query(TEXT)), lc.embed_query(TEXT), atol=1e-6)
    batch = lc.embed_image(images[:3] + [f"file://{images[3]}"])
    np.testing.assert_allclose(batch, tiny_embedder.embed_images(images[:4]), atol=1e-5)
    with pytest.raises(ImageDecodeError):
        lc.embed_image([images[0], __file__])


def test_langchain_in_memory_store_retrieves_planted_image(tiny_embedder, images, near_duplicate):
    from langchain_core.vectorstores import InMemoryVectorStore

    from clip_ingest.connectors.adapters.langchain import ClipIngestImageEmbeddings

    store = InMemoryVectorStore(ClipIngestImageEmbeddings(tiny_embedder))
    store.add_texts(images, metadatas=[{"n": i} for i in range(len(images))])
    query = store.embeddings.embed_image([near_duplicate])[0]
    [top] = store.similarity_search_by_vector(query, k=1)
    assert top.page_content == images[PLANTED] and top.metadata == {"n": PLANTED}
    hits = store.similarity_search(TEXT, k=3)
    assert [d.page_content for d in hits] == text_ranking(tiny_embedder, images, TEXT)[:3]


def test_langchain_qdrant_store_from_its_constructor_and_from_texts(tiny_embedder, images, tmp_path):
    """The real langchain-qdrant store, built the ways its docs show, answers text queries
    with the embedder's own ranking (it embeds "dummy_text" to learn the vector size)."""
    from langchain_qdrant import QdrantVectorStore
    from qdrant_client import QdrantClient
    from qdrant_client.models import Distance, VectorParams

    from clip_ingest.connectors.adapters.langchain import ClipIngestImageEmbeddings

    emb = ClipIngestImageEmbeddings(tiny_embedder)
    expected = text_ranking(tiny_embedder, images, TEXT)[:3]
    store = QdrantVectorStore.from_texts(images, emb, location=":memory:", collection_name="pics")
    assert [d.page_content for d in store.similarity_search(TEXT, k=3)] == expected
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    client.create_collection("pics", vectors_config=VectorParams(size=emb.dim, distance=Distance.COSINE))
    built = QdrantVectorStore(client=client, collection_name="pics", embedding=emb)  # validates the config
    built.add_texts(images)
    assert [d.page_content for d in built.similarity_search(TEXT, k=3)] == expected
    client.close()


def test_langchain_milvus_store_from_texts_and_add_texts(tiny_embedder, images, tmp_path):
    from langchain_milvus import Milvus

    from clip_ingest.connectors.adapters.langchain import ClipIngestImageEmbeddings

    emb = ClipIngestImageEmbeddings(tiny_embedder)
    uri = str(tmp_path / "lc.db")
    store = Milvus.from_texts(images[:6], emb, connection_args={"uri": uri}, collection_name="pics",
                              index_params={"index_type": "FLAT", "metric_type": "COSINE"})
    store.add_texts(images[6:])
    assert [d.page_content for d in store.similarity_search(TEXT, k=3)] == text_ranking(tiny_embedder, images, TEXT)[:3]


def test_image_embeddings_still_refuse_a_missing_file_that_is_not_a_size_probe(tiny_embedder, images):
    from clip_ingest.connectors.adapters.langchain import ClipIngestImageEmbeddings

    emb = ClipIngestImageEmbeddings(tiny_embedder)
    assert len(emb.embed_documents(["dummy_text"])[0]) == emb.dim
    with pytest.raises(ImageDecodeError):
        emb.embed_documents(["no/such/photo.jpg"])
    with pytest.raises(ImageDecodeError):
        emb.embed_documents([images[0], "dummy_text"])


# -- LlamaIndex
def test_llamaindex_embedding_batches_like_the_embedder(tiny_embedder, images):
    from clip_ingest.connectors.adapters.llamaindex import ClipIngestEmbedding

    li = ClipIngestEmbedding(tiny_embedder, embed_batch_size=5)
    assert li.model_name == tiny_embedder.model_id
    expected = tiny_embedder.embed_images(images)
    np.testing.assert_allclose(li.get_image_embedding_batch(images), expected, atol=1e-5)
    np.testing.assert_allclose(li.get_image_embedding(BytesIO(Path(images[2]).read_bytes())), expected[2], atol=1e-5)
    np.testing.assert_allclose(li.get_text_embedding_batch(["x", "y", "z"]), tiny_embedder.embed_texts(["x", "y", "z"]), atol=1e-6)
    np.testing.assert_allclose(asyncio.run(li.aget_query_embedding(TEXT)), li.get_query_embedding(TEXT), atol=1e-6)


def test_llamaindex_multimodal_index_retrieves_planted_image(tiny_embedder, images, near_duplicate):
    from llama_index.core.indices import MultiModalVectorStoreIndex
    from llama_index.core.schema import ImageNode

    from clip_ingest.connectors.adapters.llamaindex import ClipIngestEmbedding

    clip = ClipIngestEmbedding(tiny_embedder)
    nodes = [ImageNode(image_path=p, text=Path(p).name) for p in images]  # nodes without text are skipped
    index = MultiModalVectorStoreIndex(nodes, embed_model=clip, image_embed_model=clip)
    retriever = index.as_retriever(image_similarity_top_k=3)
    [top, *_] = retriever.image_to_image_retrieve(near_duplicate)
    assert top.node.image_path == images[PLANTED]
    hits = retriever.text_to_image_retrieve(TEXT)
    assert [h.node.image_path for h in hits] == text_ranking(tiny_embedder, images, TEXT)[:3]


# -- Haystack
def _indexed_store(embedder, documents):
    from haystack import Pipeline
    from haystack.components.writers import DocumentWriter
    from haystack.document_stores.in_memory import InMemoryDocumentStore

    from clip_ingest.connectors.adapters.haystack import ClipIngestDocumentImageEmbedder

    store = InMemoryDocumentStore(embedding_similarity_function="cosine")
    indexing = Pipeline()
    indexing.add_component("embed", ClipIngestDocumentImageEmbedder(embedder))
    indexing.add_component("write", DocumentWriter(store))
    indexing.connect("embed.documents", "write.documents")
    result = indexing.run({"embed": {"documents": documents}})
    assert result["write"]["documents_written"] == len(documents)
    return store


def _query(store, query_component, inputs: dict, top_k: int):
    from haystack import Pipeline
    from haystack.components.retrievers.in_memory import InMemoryEmbeddingRetriever

    pipeline = Pipeline()
    pipeline.add_component("query", query_component)
    pipeline.add_component("retrieve", InMemoryEmbeddingRetriever(store, top_k=top_k))
    pipeline.connect("query.embedding", "retrieve.query_embedding")
    return pipeline.run({"query": inputs})["retrieve"]["documents"]


def test_haystack_pipelines_retrieve_planted_image(tiny_embedder, images, near_duplicate):
    from haystack import Document

    from clip_ingest.connectors.adapters.haystack import ClipIngestImageEmbedder, ClipIngestTextEmbedder

    docs = [Document(content=Path(p).name, meta={"file_path": p}) for p in images]
    store = _indexed_store(tiny_embedder, docs)
    [top] = _query(store, ClipIngestImageEmbedder(tiny_embedder), {"image": near_duplicate}, top_k=1)
    assert top.meta["file_path"] == images[PLANTED]
    hits = _query(store, ClipIngestTextEmbedder(tiny_embedder), {"text": TEXT}, top_k=3)
    assert [d.meta["file_path"] for d in hits] == text_ranking(tiny_embedder, images, TEXT)[:3]


def test_haystack_document_embedder_reads_blobs_and_relative_paths(tiny_embedder, images):
    from haystack import Document
    from haystack.dataclasses import ByteStream

    from clip_ingest.connectors.adapters.haystack import ClipIngestDocumentImageEmbedder

    root = str(Path(images[0]).parent.parent)
    docs = [
        Document(content="rel", meta={"file_path": os.path.relpath(images[0], root)}),
        Document(content="blob", blob=ByteStream(Path(images[1]).read_bytes())),
    ]
    out = ClipIngestDocumentImageEmbedder(tiny_embedder, root_path=root).run(docs)["documents"]
    np.testing.assert_allclose([d.embedding for d in out], tiny_embedder.embed_images(images[:2]), atol=1e-5)
    assert all(d.embedding is None for d in docs), "the input documents are not modified"
    with pytest.raises(ValueError, match="neither"):
        ClipIngestDocumentImageEmbedder(tiny_embedder).run([Document(content="no image")])


def test_haystack_component_loads_a_spec_on_warm_up():
    from clip_ingest.connectors.adapters.haystack import ClipIngestTextEmbedder

    component = ClipIngestTextEmbedder("clip-ingest-tiny:random", device="cpu")
    assert component._embedder is None, "nothing is loaded before warm_up"
    component.warm_up()
    vector = component.run(TEXT)["embedding"]
    assert len(vector) == component.embedder.dim and abs(np.linalg.norm(vector) - 1) < 1e-4
    with pytest.raises(TypeError, match="string"):
        component.run(["not", "a", "string"])  # type: ignore[arg-type]
