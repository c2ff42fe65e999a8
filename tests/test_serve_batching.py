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
