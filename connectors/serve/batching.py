"""Dynamic micro-batching: concurrent queries share one forward pass.

One batcher per input kind (texts; decoded images): a request's items join a queue; one worker
thread takes the first waiting request plus every request that is already waiting (after at most
``max_wait_s`` more, up to ``max_batch`` items),
embeds them all in one call and hands each request its rows. Items are whatever ``embed``
takes; images are decoded before they are queued, so one undecodable upload fails only its own
request, never the batch it would have shared. The default wait is 0: requests
that arrive while the model runs queue up and form the next batch by themselves (continuous
batching, as Infinity and text-embeddings-inference do), so a lone query never waits and a busy
server still runs few, large batches.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Sequence

import numpy as np

#: called with the number of items in each forward pass (metrics)
BatchObserver = Callable[[int], None]


class MicroBatcher:
    """Embed item lists (texts, or decoded images) from many threads with shared forward passes of ``embed``."""

    def __init__(self, embed: Callable[[list[Any]], np.ndarray], *, name: str = "clip-search-batcher", max_batch: int = 64, max_wait_s: float = 0.0,
                 on_batch: BatchObserver | None = None) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self._embed = embed
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._on_batch = on_batch
        self._queue: queue.Queue[tuple[list[Any], Future] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, items: Sequence[Any]) -> Future:
        """A future of the ``(len(items), dim)`` vectors; it raises what ``embed`` raised."""
        future: Future = Future()
        self._queue.put((list(items), future))
        return future

    def embed(self, items: Sequence[Any]) -> np.ndarray:
        """Blocking form of :meth:`submit`."""
        return self.submit(items).result()

    def close(self) -> None:
        """Finish the queued requests, then stop the worker."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            size = len(first[0])
            deadline = time.monotonic() + self._max_wait_s
            stop = False
            while size < self._max_batch:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
                size += len(item[0])
            self._run_batch(batch)
            if stop:
                return

    def _run_batch(self, batch: list[tuple[list[Any], Future]]) -> None:
        items = [item for request, _ in batch for item in request]
        try:
            vectors = self._embed(items)
        except BaseException as exc:  # every waiting request learns why
            for _, future in batch:
                future.set_exception(exc)
            return
        if self._on_batch is not None:
            self._on_batch(len(items))
        start = 0
        for request, future in batch:
            future.set_result(vectors[start : start + len(request)])
            start += len(request)


__all__ = ["BatchObserver", "MicroBatcher"]
