"""The serving core, without HTTP: everything the server answers, over one store and one query
model, as blocking thread-safe calls.

Embedded stores (Qdrant local, Qdrant Edge, Milvus Lite) are not made for concurrent callers, so
every store call goes through one lock; server stores are called concurrently. Texts and images
go through shared forward passes (:mod:`.query_embedder`). Nothing here takes a file path from a
caller: a thumbnail is read only from the ``path`` that ingestion stored in the item's payload
(:mod:`.thumbnails`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from ..backends.base import Hit, Point, StoreError, VectorStore, check_point_id
from ..calibration import Calibration, collection_calibration, cosine_for, load_text_calibration
from ..decode import ImageInput
from ..embedder import Embedder
from ..search.duplicates import Group, GroupingCache, default_min_relevance, group_by_id, record_review, same_photo_check
from ..search.searcher import PointNotFoundError, Searcher
from .batching import BatchObserver, MicroBatcher
from .fields import FIELD_SAMPLE, FieldSample, sample_fields
from .query_embedder import BatchedEmbedder, decode_for
from .thumbnails import ThumbnailCache, check_size, image_file

#: seconds a sample of the payload fields (warnings, facets) is reused
FIELD_SAMPLE_TTL_S = 60.0


log = logging.getLogger("clip_ingest.serve")


class LockedStore:
    """``store`` with every method call serialised by one lock (embedded stores: one caller at a time)."""

    def __init__(self, store: VectorStore) -> None:
        self._store = store
        self._lock = threading.RLock()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not callable(attr):
            return attr

        def locked(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return attr(*args, **kwargs)

        return locked

    @property
    def lock(self) -> threading.RLock:
        """The lock every call takes (hold it to iterate a ``scroll`` safely)."""
        return self._lock

    def __repr__(self) -> str:
        return repr(self._store)


class SearchService:
    """Everything ``clip-search serve`` answers, as blocking, thread-safe calls.

    ``store`` must hold a collection built with ``embedder``'s model (checked here, so a server
    never starts on a mismatch). ``serialise_store`` wraps it in :class:`LockedStore`.
    """

    def __init__(self, store: VectorStore, embedder: Embedder, *, serialise_store: bool, collection: str,
                 max_batch: int = 64, max_wait_s: float = 0.0, on_batch: BatchObserver | None = None,
                 load_model: Callable[[str | None], Embedder] | None = None,
                 on_image_batch: BatchObserver | None = None) -> None:
        """``load_model(spec)``: how to load the query model of a collection that ``clip-ingest
        migrate`` switches the name to (None: such a switch is refused with a model mismatch)."""
        self.store: Any = LockedStore(store) if serialise_store else store
        self.collection = collection
        self._batching = {"max_batch": max_batch, "max_wait_s": max_wait_s, "on_batch": on_batch}
        self._on_image_batch = on_image_batch
        self._load_model = load_model
        batched = self._use(embedder)
        self.searcher = Searcher(self.store, batched, load_model=self._switch_model if load_model else None)
        self.searcher.verify_model()
        self._thumbs = ThumbnailCache()
        self._calibration_lock = threading.Lock()
        self._groupings = GroupingCache(self.store)
        self._fields: tuple[float, FieldSample] | None = None
        self._fields_lock = threading.Lock()

    def _use(self, embedder: Embedder) -> Embedder:
        """Make ``embedder`` the query model (its texts and images micro-batched); returns the batched embedder."""
        self.embedder = embedder
        self.batcher = MicroBatcher(embedder.embed_texts, **self._batching)
        self.image_batcher = MicroBatcher(embedder.embed_images, name="clip-search-image-batcher",
                                          max_batch=self._batching["max_batch"], max_wait_s=self._batching["max_wait_s"],
                                          on_batch=self._on_image_batch)
        self.batched = BatchedEmbedder(embedder, self.batcher, self.image_batcher)
        return self.batched

    def _switch_model(self, spec: str | None) -> Embedder:
        """The collection behind the name changed model (a migration): load it, retire the old one."""
        assert self._load_model is not None
        old = (self.batcher, self.image_batcher)
        batched = self._use(self._load_model(spec))
        for batcher in old:
            batcher.close()
        return batched

    @property
    def model_id(self) -> str:
        return self.embedder.model_id

    def close(self) -> None:
        self.batcher.close()
        self.image_batcher.close()

    # -- search
    def search(self, kind: str, value: Any, **options: Any) -> list[Hit]:
        """``kind`` ``text`` (a string), ``image`` (bytes) or ``like`` (a point id), with the
        :class:`Searcher` options ``k``, ``filter``, ``offset``, ``score_threshold`` (and for text
        ``min_relevance``)."""
        run: dict[str, Callable[..., list[Hit]]] = {
            "text": self.searcher.search_text, "image": self.searcher.search_image, "like": self.searcher.search_like_point,
        }
        return run[kind](value, **options)

    # -- calibrated thresholds and near-duplicates
    def calibration(self) -> Calibration:
        """The query model's calibration: cached, or measured once on the collection's images."""
        with self._calibration_lock:  # two first requests must not both measure it
            return collection_calibration(self.embedder, self.store)

    @property
    def text_calibrated(self) -> bool:
        """Whether text queries take ``min_relevance`` (the query model carries a text calibration)."""
        return load_text_calibration(self.embedder) is not None

    def relevance_cut(self, min_relevance: float) -> float:
        """The raw cosine at which the model's calibration reaches ``min_relevance``
        (``ValueError`` when the collection cannot calibrate it, or no pair can reach it)."""
        return cosine_for(self.calibration(), min_relevance)

    def duplicate_cut(self, min_relevance: float | None = None, threshold: float | None = None,
                      tier: str = "duplicates") -> float:
        """The raw cosine a duplicates listing's k-NN pass cuts at: ``threshold`` itself, else the
        calibrated cut of ``min_relevance`` (default: the tier's,
        :func:`~..search.duplicates.default_min_relevance`)."""
        if threshold is not None:
            if min_relevance is not None:
                raise ValueError("give min_relevance or threshold, not both")
            return threshold
        return self.relevance_cut(default_min_relevance(tier) if min_relevance is None else min_relevance)

    def duplicates(self, *, min_relevance: float | None = None, threshold: float | None = None, k: int = 10,
                   include_resolved: bool = False, tier: str = "duplicates") -> tuple[float, list[Group]]:
        """``(raw cosine, groups)`` of ``tier`` at :meth:`duplicate_cut`, as
        :func:`~..search.duplicates.find_groups` finds them (``duplicates``: then the pixel check;
        ``similar``: the k-NN pass alone). The k-NN pass (one search per stored point, as long as
        a ``clip-search duplicates`` run) and the check are made once per ``(cut, k, tier)`` while
        the collection is unchanged; each call after it lists the points again, so reviews and
        moves show at once."""
        cut = self.duplicate_cut(min_relevance, threshold, tier)
        return cut, self._groupings.groups(cut, k=k, include_resolved=include_resolved, same_photo=same_photo_check(tier))

    def warm_duplicates(self, **listing: Any) -> None:
        """Make a duplicates listing's k-NN pass and pixel check now (``listing``: the arguments of
        :meth:`duplicates`; none: the page's default listing), so that the first person to open
        it does not wait for them: minutes on a large collection. ``clip-search serve`` runs it in
        the background at start and after each scheduled ingestion pass. Never raises: a
        collection too small to calibrate, or a failing store, is logged and the listing is then
        made on first request as before."""
        started = time.monotonic()
        try:
            _, groups = self.duplicates(**listing)
        except ValueError as exc:
            log.info("duplicates listing not precomputed: %s", exc)
            return
        except Exception:  # a background warm-up must not take the server down
            log.exception("could not precompute the duplicates listing")
            return
        log.info("duplicates listing ready: %d groups, %.1f s", len(groups), time.monotonic() - started)

    def review(self, member_ids: Sequence[str], decision: str, keep: str | None = None) -> dict[str, Any]:
        """Store a decision on a group (see :func:`~..search.duplicates.record_review`)."""
        try:
            members = [check_point_id(point_id) for point_id in member_ids]
            keep = None if keep is None else check_point_id(keep)
        except StoreError:
            raise PointNotFoundError("members and keep are point ids (UUIDs)") from None
        return record_review(self.store, members, decision, keep)

    def review_group(self, group: str, decision: str, keep: str | None = None, *, min_relevance: float | None = None,
                     threshold: float | None = None, k: int = 10, tier: str = "duplicates") -> dict[str, Any]:
        """Store a decision on the group listed with id ``group`` at the same tier, cut and ``k``;
        :class:`PointNotFoundError` when no group has that id now (it changed, or it never was)."""
        _, groups = self.duplicates(min_relevance=min_relevance, threshold=threshold, k=k, include_resolved=True, tier=tier)
        return self.review(group_by_id(groups, group).member_ids, decision, keep)

    # -- embeddings
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self.batcher.embed(texts)

    def embed_images(self, images: Sequence[ImageInput]) -> np.ndarray:
        """Vectors of image files' bytes (or PIL images), in shared forward passes;
        :class:`~..decode.ImageDecodeError` for the first that is no image."""
        return self.batched.embed_images(images)

    def decode(self, image: ImageInput) -> Image.Image:
        """``image`` decoded as the query model decodes it (see :func:`decode_for`)."""
        return decode_for(self.embedder, image)

    # -- items
    def item(self, point_id: str) -> Point:
        """The stored point (payload only); :class:`PointNotFoundError` for an unknown or malformed id."""
        try:
            canonical = check_point_id(point_id)
        except StoreError:
            raise PointNotFoundError(f"{point_id!r} is not a point id (point ids are UUIDs)") from None
        found = self.store.retrieve([canonical])
        if not found:
            raise PointNotFoundError(f"no point with id {point_id!r}")
        return found[0]

    def image_file(self, point_id: str) -> tuple[Any, os.stat_result]:
        """``(path, stat)`` of the item's stored image file (:func:`~.thumbnails.image_file`)."""
        return image_file(point_id, self.item(point_id).payload)

    def thumbnail(self, point_id: str, size: int) -> bytes:
        """A JPEG of the item's image fitting ``size`` px (:class:`~.thumbnails.ThumbnailCache`)."""
        check_size(size)  # before the lookup: a bad size is a 400 whatever the id
        return self._thumbs.thumbnail(point_id, self.item(point_id).payload, size)

    # -- payload fields
    def fields(self) -> FieldSample:
        """The payload fields of the collection's first points (:mod:`.fields`), sampled again
        after :data:`FIELD_SAMPLE_TTL_S` so new labels show up."""
        with self._fields_lock:
            if self._fields is None or time.monotonic() - self._fields[0] > FIELD_SAMPLE_TTL_S:
                with getattr(self.store, "lock", contextlib.nullcontext()):
                    sample = sample_fields(self.store.scroll(batch_size=FIELD_SAMPLE))
                self._fields = (time.monotonic(), sample)
            return self._fields[1]

    # -- health
    def readiness(self) -> str | None:
        """None when the model is loaded and the collection answers, else why not."""
        try:
            stored = self.store.collection_model()
        except StoreError as exc:
            return f"database: {exc}"
        if stored is None:
            return f"collection {self.collection!r} does not exist"
        return None

    def count(self) -> int:
        return self.store.count()


__all__ = ["LockedStore", "SearchService"]
