"""Text, image and "more like this" search over one collection.

The :class:`Searcher` only joins an :class:`~clip_ingest.connectors.embedder.Embedder` (query
vectors) to a :class:`~clip_ingest.connectors.backends.base.VectorStore` (nearest neighbours with
a payload filter); it does no ranking of its own, so hits come back in the database's order.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Sequence, TypeVar, Union

import numpy as np
from PIL import Image

from ..backends.base import Hit, ModelMismatchError, StoreError, TransientStoreError, VectorStore
from ..calibration import load_text_calibration, reference_vectors
from ..decode import ImageInput
from ..embedder import Embedder
from ..filters import And, Compare, Filter, FilterInput, Not, parse_filter

#: how long a search waits for a collection name that is being turned into an alias (Milvus:
#: renamed, then loaded, then aliased; loading a large collection takes seconds)
ALIAS_WAIT_S = 30.0
#: how long a search retries a name it saw before (missing with no version of it, or failing)
ALIAS_GRACE_S = 2.0

#: payload field holding the sha256 of an image's bytes (written by ingestion)
SHA256_FIELD = "sha256"

#: a stored point (its id) or an image given as a file path / bytes / PIL image
SimilarTo = Union[str, os.PathLike, bytes, Image.Image]


_T = TypeVar("_T")
_UNSEEN = object()


class _AliasMoved(Exception):
    """The alias was switched while a query ran: its result is thrown away and it runs again."""


class PointNotFoundError(LookupError):
    """``search_similar`` was given a point id that is not in the collection (and no such file)."""


class Searcher:
    """Search ``store`` with query vectors from ``embedder``.

    Every method takes ``k`` (hits per query), ``filter`` (text, dict or parsed
    :data:`~.filters.Filter`; see docs/filters.md), ``offset`` (hits to skip, for paging) and
    ``score_threshold`` (minimum cosine similarity) and returns :class:`Hit` objects best first.
    Filters are parsed before any embedding is computed, so a bad filter fails fast with
    :class:`~.filters.FilterSyntaxError`.
    """

    def __init__(self, store: VectorStore, embedder: Embedder, *,
                 load_model: Callable[[str | None], Embedder] | None = None) -> None:
        """``load_model(spec)`` (optional) loads the query model of a collection that an alias
        switch put behind the name (``spec``: the model spec it records): without it a switch to
        another model raises :class:`ModelMismatchError`."""
        self.store = store
        self._view = store  # where queries go: the collection behind the name, once verified
        self.embedder = embedder
        self.load_model = load_model
        self._target: str | None | object = _UNSEEN  # the collection behind the name (verified on the first query)
        self._generation = 0  # counts alias switches seen: a query runs within one generation
        self._switching = threading.Lock()
        # the reference sample of calibrated text queries, kept while the collection behind the
        # name and its point count stay the same: ((generation, count), vectors)
        self._reference: tuple[tuple[int, int], np.ndarray] | None = None

    def verify_model(self) -> None:
        """Fail unless the collection exists and was built with this embedder's model.

        Raises :class:`StoreError` for a missing collection and :class:`ModelMismatchError`
        when its vectors come from another model (their scores would be meaningless).
        """
        stored = self._view.collection_model()
        if stored is None:
            raise StoreError(
                f"the collection does not exist in {self.store!r} (ingest images first, or check "
                "--collection, --target and --data-dir / the store location)"
            )
        model_id, dim = stored
        if (model_id, dim) != (self.embedder.model_id, self.embedder.dim):
            raise ModelMismatchError(
                f"the collection was built with model {model_id!r} (dim {dim}) but the query model is "
                f"{self.embedder.model_id!r} (dim {self.embedder.dim}); pass the same --model (and --quantize) as at ingestion"
            )

    # -- single queries
    def search_text(
        self, text: str, k: int = 10, filter: FilterInput | None = None, offset: int = 0,
        score_threshold: float | None = None, min_relevance: float | None = None,
    ) -> list[Hit]:
        """The images best matching ``text`` (``min_relevance``: see :meth:`search_texts`)."""
        return self.search_texts([text], k=k, filter=filter, offset=offset, score_threshold=score_threshold,
                                 min_relevance=min_relevance)[0]

    def search_image(
        self, image: ImageInput, k: int = 10, filter: FilterInput | None = None, offset: int = 0,
        score_threshold: float | None = None,
    ) -> list[Hit]:
        """The images most similar to ``image`` (path, bytes, file object or PIL image)."""
        return self.search_images([image], k=k, filter=filter, offset=offset, score_threshold=score_threshold)[0]

    def search_similar(
        self, item: SimilarTo, k: int = 10, filter: FilterInput | None = None, offset: int = 0,
        score_threshold: float | None = None,
    ) -> list[Hit]:
        """The images most similar to a stored point or an image file, excluding that image itself.

        ``item`` is a point id, or an image (an existing file path, bytes or PIL image). For
        an image the stored copies are found by the sha256 of its bytes (payload field
        ``sha256``) and excluded by filter, so paging stays exact; an image never ingested is
        simply embedded. A point id uses the stored vector.
        """
        parsed = _parse_optional(filter)
        if isinstance(item, str) and not os.path.exists(item):
            if not _is_uuid(item):
                raise PointNotFoundError(
                    f"{item!r} is neither an existing image file nor a point id (point ids are UUIDs, "
                    "as printed by clip-search): check the path"
                )
            return self.search_like_point(item, k, parsed, offset, score_threshold)
        content = _image_bytes(item)
        if content is not None:
            parsed = _excluding_sha256(parsed, hashlib.sha256(content).hexdigest())

        def run(generation: int) -> list[Hit]:
            vector = self.embedder.embed_images([content if content is not None else item])[0]
            return self._search(vector, k, parsed, offset, score_threshold, generation)

        return self._fresh(run)

    def search_like_point(
        self, point_id: str, k: int = 10, filter: FilterInput | None = None, offset: int = 0,
        score_threshold: float | None = None,
    ) -> list[Hit]:
        """The images most similar to the stored point ``point_id``, excluding it; never reads a file
        (for ids that come from a request). Raises :class:`PointNotFoundError` for an unknown id."""
        parsed = _parse_optional(filter)
        if not _is_uuid(point_id):
            raise PointNotFoundError(f"{point_id!r} is not a point id (point ids are UUIDs)")
        return self._fresh(lambda generation: self._similar_to_point(point_id, k, parsed, offset, score_threshold, generation))

    # -- batches
    def search_texts(
        self, texts: Sequence[str], k: int = 10, filter: FilterInput | None = None, offset: int = 0,
        score_threshold: float | None = None, min_relevance: float | None = None,
    ) -> list[list[Hit]]:
        """One hit list per text (texts are embedded in one batch).

        ``min_relevance`` (instead of a raw ``score_threshold``) keeps the hits at or above that
        calibrated relevance: each query gets its own cut, from the model's text calibration and
        the query's scores over the collection (:class:`~..calibration.TextCalibration`).
        ``ValueError`` when the model has no text calibration."""
        if min_relevance is not None and score_threshold is not None:
            raise ValueError("give a raw score threshold or a minimum relevance, not both")
        parsed = _parse_optional(filter)

        def run(generation: int) -> list[list[Hit]]:
            vectors = self.embedder.embed_texts(list(texts))
            cuts = [score_threshold] * len(vectors) if min_relevance is None else self._text_cuts(vectors, min_relevance)
            return [self._search(v, k, parsed, offset, cut, generation) for v, cut in zip(vectors, cuts)]

        return self._fresh(run)

    def search_images(
        self, images: Sequence[ImageInput], k: int = 10, filter: FilterInput | None = None, offset: int = 0,
        score_threshold: float | None = None,
    ) -> list[list[Hit]]:
        """One hit list per image (images are embedded in one batch)."""
        parsed = _parse_optional(filter)
        return self._fresh(lambda generation: [self._search(v, k, parsed, offset, score_threshold, generation)
                                               for v in self.embedder.embed_images(list(images))])

    # -- internals: every query runs within one generation of the alias (see _fresh)
    def _fresh(self, run: Callable[[int], _T]) -> _T:
        """``run(generation)`` after following the alias, again if the alias moved while it ran.

        ``clip-ingest migrate`` switches a name between collections (and models). A query whose
        vectors were computed, or whose hits were found, in another collection than the one now
        behind the name is thrown away and run again, so no result mixes two collections or
        two models. A collection name missing while a first migration adopts its collection is
        waited for (up to ``ALIAS_WAIT_S``).
        """
        started = time.monotonic()
        generation: int | None = None
        while True:
            try:
                generation = self._follow_alias()
                result = run(generation)
                if self._follow_alias() == generation:
                    return result
            except _AliasMoved:
                continue
            except StoreError as error:
                if not self._worth_retrying(error, generation, started):
                    raise

    def _worth_retrying(self, error: StoreError, generation: int | None, started: float) -> bool:
        """After ``error`` failed a query of ``generation`` (None: none started), whether to run it
        again (after a short sleep): when the alias moved under it (e.g. to a collection of
        another dimension), or while the name is missing because a first migration adopts its
        collection.

        Milvus renames the collection, loads it (seconds when large) and only then creates the
        alias, and Milvus Lite can fail a search during a rename that it still lists the old name
        for. So a missing name is waited for up to ``ALIAS_WAIT_S`` while a version of it exists,
        and up to ``ALIAS_GRACE_S`` when this searcher saw it before; a name that is there now gets
        ``ALIAS_GRACE_S`` too. A name never seen, with no version, is missing for good, and a
        model mismatch or an unreachable database is final: none of them is waited for.
        """
        if isinstance(error, TransientStoreError):
            return False  # the database is unreachable: said at once (serve answers 503)
        try:  # presence first: a name there now because its alias was just made is followed next
            present = self.store.collection_model() is not None
            if generation is not None and self._follow_alias() != generation:
                return True
        except (ModelMismatchError, TransientStoreError):
            raise  # the name moved to a model this searcher cannot load, or the database went away
        except StoreError:
            present = False  # following the name failed too: it is missing
        waited = time.monotonic() - started
        if present:
            if isinstance(error, ModelMismatchError) or waited > ALIAS_GRACE_S:
                return False
        elif waited > ALIAS_WAIT_S:
            return False
        elif (waited > ALIAS_GRACE_S or self._target is _UNSEEN) and not self._has_versions():
            return False
        time.sleep(0.02)
        return True

    def _has_versions(self) -> bool:
        """Whether a physical collection named as a version of the name exists (a migration's)."""
        try:
            return bool(self.store.versions())
        except StoreError:
            return False  # a store without aliases

    def _follow_alias(self) -> int:
        """The current generation, after taking in an alias switch (new model loaded or refused)."""
        target = self.store.alias_target()
        if target != self._target:
            with self._switching:  # one thread takes in the switch (and loads the model) for all
                if target != self._target:
                    self._take_in(target)
        return self._generation

    def _take_in(self, target: str | None) -> None:
        """Adopt the collection now behind the name: its dimension, its model (loaded or refused).

        Queries then go to that physical collection itself (:meth:`VectorStore.pinned`), not
        through the alias: a server that is still spreading the alias change to its proxies
        (Milvus) cannot send them elsewhere.
        """
        self.store.refresh()
        view = self.store.pinned(target) if target is not None else self.store
        stored = view.collection_model()
        if stored is not None and self.load_model is not None and stored[0] != self.embedder.model_id:
            self.embedder = self.load_model(view.collection_model_spec())
        self._view = view
        self.verify_model()
        self._target = target
        self._generation += 1

    def _text_cuts(self, vectors: np.ndarray, min_relevance: float) -> list[float | None]:
        calibration = load_text_calibration(self.embedder)
        if calibration is None:
            raise ValueError(f"the model {self.embedder.model_id!r} has no text calibration (clip-model calibrate-text "
                             "measures one on captioned images): give a raw --min-score for text")
        key = (self._generation, self._view.count())
        cached = self._reference
        if cached is None or cached[0] != key:  # not a scan of the collection per query
            cached = self._reference = (key, reference_vectors(self._view))
        return [calibration.cut(vector, cached[1], min_relevance) for vector in vectors]

    def _search(self, vector: np.ndarray, k: int, filter: Filter | None, offset: int, score_threshold: float | None,
                generation: int) -> list[Hit]:
        if k < 1:
            raise ValueError("k must be >= 1")
        if offset < 0:
            raise ValueError("offset must be >= 0")
        if self._generation != generation:  # a switch seen since the query started (checked again after it)
            raise _AliasMoved
        return self._view.search(vector, k=k, filter=filter, offset=offset, score_threshold=score_threshold)

    def _similar_to_point(
        self, point_id: str, k: int, filter: Filter | None, offset: int, score_threshold: float | None, generation: int
    ) -> list[Hit]:
        found = self._view.retrieve([point_id], with_vectors=True)
        if not found or found[0].vector is None:
            raise PointNotFoundError(f"no point with id {point_id!r} in the collection, and no file of that name")
        point = found[0]
        sha = point.payload.get(SHA256_FIELD)
        if isinstance(sha, str):
            return self._search(point.vector, k, _excluding_sha256(filter, sha), offset, score_threshold, generation)
        # no content hash to filter on: fetch one extra hit from the start and drop the point itself
        hits = self._search(point.vector, offset + k + 1, filter, 0, score_threshold, generation)
        return [hit for hit in hits if hit.id != point.id][offset : offset + k]


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _parse_optional(filter: FilterInput | None) -> Filter | None:
    return None if filter is None else parse_filter(filter)


def _excluding_sha256(filter: Filter | None, sha: str) -> Filter:
    exclude = Not(Compare(SHA256_FIELD, "=", sha))
    return exclude if filter is None else And((filter, exclude))


def _image_bytes(item: SimilarTo) -> bytes | None:
    """The file bytes of a path or bytes item (None for a PIL image)."""
    if isinstance(item, bytes):
        return item
    if isinstance(item, (str, os.PathLike)):
        return Path(item).read_bytes()
    return None


__all__ = ["PointNotFoundError", "SHA256_FIELD", "Searcher", "SimilarTo"]
