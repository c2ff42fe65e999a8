"""Micro-batching: concurrent text requests share forward passes and each gets its own rows."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from clip_ingest.connectors.serve.batching import MicroBatcher


def test_concurrent_requests_share_forward_passes(tiny_embedder):
    batches: list[int] = []
    batcher = MicroBatcher(tiny_embedder.embed_texts, max_batch=64, max_wait_s=0.2, on_batch=batches.append)
    texts = [f"text number {i}" for i in range(16)]
    results: dict[int, np.ndarray] = {}
    start = threading.Barrier(len(texts))

    def ask(i: int) -> None:
        start.wait()
        results[i] = batcher.embed([texts[i]])

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(texts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    batcher.close()
    assert sum(batches) == 16 and len(batches) < 16 and max(batches) > 1
    expected = tiny_embedder.embed_texts(texts)
    for i in range(16):
        assert np.allclose(results[i][0], expected[i], atol=1e-5)


def test_a_failing_forward_fails_every_request_of_its_batch():
    def broken(texts):
        raise RuntimeError("model exploded")

    batcher = MicroBatcher(broken, max_wait_s=0.05)
    futures = [batcher.submit(["a"]), batcher.submit(["b", "c"])]
    for future in futures:
        with pytest.raises(RuntimeError, match="model exploded"):
            future.result(5)
    batcher.close()


def test_max_batch_is_respected(tiny_embedder):
    batches: list[int] = []
    batcher = MicroBatcher(tiny_embedder.embed_texts, max_batch=4, max_wait_s=0.2, on_batch=batches.append)
    futures = [batcher.submit([f"t{i}"]) for i in range(10)]
    assert all(f.result(30).shape == (1, tiny_embedder.dim) for f in futures)
    batcher.close()
    assert max(batches) <= 4 and sum(batches) == 10


def test_without_a_wait_requests_that_queue_during_a_forward_pass_form_the_next_batch(tiny_embedder):
    import time

    def slow(texts):  # the real model, made slow enough that requests queue behind it
        time.sleep(0.2)
        return tiny_embedder.embed_texts(texts)

    batches: list[int] = []
    batcher = MicroBatcher(slow, on_batch=batches.append)  # default: no wait at all
    start = threading.Barrier(8)
    threads = [threading.Thread(target=lambda i=i: (start.wait(), batcher.embed([f"t{i}"]))) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    batcher.close()
    assert sum(batches) == 8 and len(batches) <= 3 and max(batches) >= 4, batches


def test_concurrent_image_requests_share_forward_passes_and_a_bad_image_fails_only_its_own(tmp_path, tiny_embedder):
    """Through the real service (the image batcher behind ``/v1/embeddings`` and image search):
    images are decoded before they are queued, so an undecodable one never joins a batch."""
    from clip_ingest.connectors.backends import open_store
    from clip_ingest.connectors.decode import ImageDecodeError
    from clip_ingest.connectors.serve.service import SearchService

    from imagegen import write_shape_folder
    from serve_helpers import plant_collection

    store = open_store("qdrant-edge", "shapes", path=str(tmp_path / "edge"))
    points, _ = plant_collection(store, tiny_embedder, write_shape_folder(tmp_path / "p", n=8))
    batches: list[int] = []
    service = SearchService(store, tiny_embedder, serialise_store=True, collection="shapes", max_wait_s=0.3,
                            on_image_batch=batches.append)
    pictures = [open(p.payload["path"], "rb").read() for p in points]
    results: dict[int, object] = {}
    start = threading.Barrier(len(pictures) + 1)

    def ask(i: int, content: bytes) -> None:
        start.wait()
        try:
            results[i] = service.embed_images([content])
        except ImageDecodeError as exc:
            results[i] = exc

    threads = [threading.Thread(target=ask, args=(i, c)) for i, c in enumerate(pictures + [b"not an image"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    service.close()
    store.close()
    assert isinstance(results[len(pictures)], ImageDecodeError)
    expected = tiny_embedder.embed_images(pictures)
    assert all(np.allclose(results[i][0], expected[i], atol=1e-5) for i in range(len(pictures)))
    assert sum(batches) == len(pictures) and len(batches) < len(pictures) and max(batches) > 1, batches
