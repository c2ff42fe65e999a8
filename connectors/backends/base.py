"""The connector interface: what ingestion and search need from a vector database.

Each database is one package implementing :class:`VectorStore` and describing itself with a
:class:`~.descriptor.Backend` listed in :mod:`.registry` (see docs/architecture.md). Point IDs are strings
(UUIDs, see :func:`clip_ingest.connectors.ingest.ids.point_id`), vectors are
L2-normalised float32 rows and the score of a hit is the cosine similarity.
"""

from __future__ import annotations

import copy
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import numpy as np


class StoreError(Exception):
    """A database operation failed; ``transient`` says whether retrying may help."""

    transient: bool = False


class InvalidSettingError(ValueError):
    """A store option or collection setting given by the user is invalid; raised before
    anything is written (the CLIs exit with the usage code 2)."""


class TransientStoreError(StoreError):
    """Connection refused, timeout, unavailable: worth retrying with backoff."""

    transient = True


class ModelMismatchError(StoreError):
    """The collection was built with another model or dimension than the embedder's."""


class DimensionMismatchError(ModelMismatchError):
    """A vector's length differs from the collection's dimension."""


@dataclass(frozen=True)
class CollectionSpec:
    """What a collection must look like.

    ``indexed_fields`` maps payload field names to a type (``keyword``,
    ``integer``, ``float``, ``bool``, ``datetime``, ``geo``: a ``{"lat", "lon"}`` point) and gets
    a payload / scalar index so filters on them are fast.
    """

    name: str
    dim: int
    model_id: str
    indexed_fields: Mapping[str, str] = field(default_factory=dict)
    model_spec: str | None = None
    """How to load the model again (``starter``, ``ViT-B-32:laion2b_s34b_b79k``, an absolute
    model directory): recorded with the collection so that searches can default to it."""


@dataclass
class Point:
    """One image: its deterministic id, its vector (may be None when not fetched) and payload."""

    id: str
    vector: np.ndarray | None
    payload: dict[str, Any]


@dataclass(frozen=True)
class Hit:
    """One search result, in the database's order: best first."""

    id: str
    score: float
    payload: dict[str, Any]


#: ``model_id`` reported for a collection that exists but has no clip-ingest model record
UNKNOWN_MODEL = "<unrecorded>"

#: a migrated name's physical collections are called ``{name}{VERSION_SEPARATOR}{model hash}``
VERSION_SEPARATOR = "__"


def check_collection_model(collection: str, spec: CollectionSpec, stored: tuple[str, int]) -> None:
    """Raise :class:`ModelMismatchError` unless ``stored`` ``(model_id, dim)`` equals the spec's.

    Shared by every backend so the message (both models, both dimensions, the way out) is the same.
    """
    model_id, dim = stored
    if (model_id, dim) == (spec.model_id, spec.dim):
        return
    raise ModelMismatchError(
        f"collection {collection!r} was built with model {model_id!r} (dim {dim}), but the embedder is "
        f"{spec.model_id!r} (dim {spec.dim}); vectors of different models cannot be searched together. "
        "Use --recreate to drop the collection and re-ingest, or choose another --collection."
    )


def refuse_recreate_through_alias(store: "VectorStore") -> None:
    """``--recreate`` on an alias would drop what every client reads: refused, with the way out."""
    target = store.alias_target()
    if target is not None:
        raise InvalidSettingError(
            f"{store.collection!r} is an alias of collection {target!r}; --recreate would drop it under every "
            "client. Build the new collection with `clip-ingest migrate` (it switches the alias when ready)."
        )


def check_vector(vector: Any, dim: int) -> np.ndarray:
    """``vector`` as a 1-D float32 array of length ``dim``; :class:`DimensionMismatchError` otherwise.

    Checked before a vector reaches any database so the error names the problem, not a wire format.
    """
    array = np.asarray(vector, dtype=np.float32)
    if array.ndim != 1 or array.shape[0] != dim:
        raise DimensionMismatchError(
            f"vector of shape {tuple(array.shape)} does not fit the collection's dimension {dim}"
        )
    if not np.all(np.isfinite(array)):
        raise StoreError("vector contains NaN or infinite values")
    return array


def check_point_id(point_id: str) -> str:
    """``point_id`` in canonical UUID form (lowercase, hyphenated); :class:`StoreError` if it is no UUID."""
    try:
        return str(uuid.UUID(str(point_id)))
    except ValueError:
        raise StoreError(f"point id {point_id!r} is not a UUID string") from None


class VectorStore(ABC):
    """A collection in a vector database, as clip-ingest uses it."""

    #: the store's dialect: its ``--target`` name, or ``qdrant`` for qdrant-client (keys ``Backend.filter_compilers``)
    backend: str = ""
    #: the collection's name
    collection: str = ""

    @abstractmethod
    def ensure_collection(self, spec: CollectionSpec, *, recreate: bool = False) -> None:
        """Create the collection if missing; if it exists, verify its model and dimension.

        Raises :class:`ModelMismatchError` when the stored ``model_id`` or dimension
        differs from ``spec`` (``recreate=True`` drops and rebuilds it instead).
        """

    @abstractmethod
    def collection_model(self) -> tuple[str, int] | None:
        """The ``(model_id, dim)`` the collection was built with, or None if it does not exist."""

    @abstractmethod
    def upsert(self, points: Sequence[Point]) -> None:
        """Insert or replace points by id (never duplicates an id)."""

    @abstractmethod
    def set_payloads(self, payloads: Mapping[str, Mapping[str, Any]]) -> None:
        """Replace the payloads of existing points (``{point id: payload}``), keeping their vectors.

        Raises :class:`StoreError` and writes nothing when one of the points does not exist.
        One call costs a few requests however many points it changes, which matters on a
        server where every strongly consistent read waits for a time tick.
        """

    def set_payload(self, point_id: str, payload: Mapping[str, Any]) -> None:
        """Replace the payload of one existing point, keeping its vector (see :meth:`set_payloads`)."""
        self.set_payloads({point_id: payload})

    def _stored_for(
        self, payloads: Mapping[str, Mapping[str, Any]], *, with_vectors: bool = False
    ) -> tuple[dict[str, dict[str, Any]], list[Point]]:
        """For :meth:`set_payloads`: the payloads by canonical id and their stored points.

        Raises :class:`StoreError` naming the ids that do not exist, before anything is written.
        """
        wanted = {check_point_id(point_id): dict(payload) for point_id, payload in payloads.items()}
        found = self.retrieve(list(wanted), with_vectors=with_vectors) if wanted else []
        missing = sorted(set(wanted) - {point.id for point in found})
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise StoreError(f"no point with id {', '.join(missing[:3])}{more} in {self.collection!r}")
        return wanted, found

    @abstractmethod
    def retrieve(self, ids: Sequence[str], *, with_vectors: bool = False) -> list[Point]:
        """The points with these ids that exist (order not guaranteed)."""

    @abstractmethod
    def scroll(self, fields: Sequence[str] | None = None, batch_size: int = 1000) -> Iterator[Point]:
        """Every point, payload limited to ``fields`` (None: all), without vectors."""

    @abstractmethod
    def delete(self, ids: Sequence[str]) -> None:
        """Delete points by id; unknown ids are ignored."""

    @abstractmethod
    def search(
        self,
        vector: np.ndarray,
        *,
        k: int = 10,
        filter: Any | None = None,
        offset: int = 0,
        score_threshold: float | None = None,
    ) -> list[Hit]:
        """Nearest points by cosine similarity.

        ``filter`` is a parsed :class:`clip_ingest.connectors.filters.Filter`
        (or None); each backend compiles it to its own filter form.
        """

    def collection_model_spec(self) -> str | None:
        """The model spec recorded when the collection was created (None: not recorded, or a
        collection made before specs were recorded)."""
        return None

    @abstractmethod
    def count(self, filter: Any | None = None) -> int:
        """Exact number of points (matching ``filter`` when given)."""

    # -- aliases: the name clients use, switched atomically between physical collections (migration)
    def alias_target(self) -> str | None:
        """The physical collection this store's name points to when the name is an alias, else None."""
        return None

    def refresh(self) -> None:
        """Forget what is cached about the collection behind the name (its dimension): called
        when an alias switch is seen, so the next request describes the new collection."""

    def pinned(self, collection: str) -> "VectorStore":
        """A view of this store that sends every request to the physical ``collection``, sharing
        the connection (never closed on its own). ``Searcher`` queries through it, so a search
        reaches exactly the collection it verified. Default: this store itself (Qdrant Edge
        follows its alias link at each request)."""
        return self

    def aliases(self) -> dict[str, str]:
        """Every alias of this database (or storage folder) and the collection it points to."""
        raise StoreError(f"{self.backend} does not support collection aliases")

    def collections(self) -> list[str]:
        """The physical collections of this database (or storage folder), aliases not included."""
        raise StoreError(f"{self.backend} does not support collection aliases")

    def versions(self) -> list[str]:
        """The physical collections named as versions of this store's name
        (``{name}{VERSION_SEPARATOR}…``, see :func:`~..ingest.migration.physical_name`)."""
        prefix = self.collection + VERSION_SEPARATOR
        return [name for name in self.collections() if name.startswith(prefix)]

    def switch_alias(self, alias: str, collection: str) -> None:
        """Point ``alias`` at ``collection`` in one atomic step (created if missing): a client
        resolving the alias sees the old collection or the new one, never neither."""
        raise StoreError(f"{self.backend} does not support collection aliases")

    def adopt(self, physical: str) -> None:
        """Turn this store's plain collection into ``physical`` with this store's name as its alias.

        Done once, before a collection's first migration. Renamed where the database can rename;
        copied where it cannot (vectors and payloads, no model run). Between dropping the name and
        creating the alias the name is missing (for as long as the database takes to load the
        renamed collection); ``Searcher`` waits through that gap. Each store says which it does.
        """
        raise StoreError(f"{self.backend} does not support collection aliases")

    def drop_collection(self, collection: str) -> None:
        """Delete the physical ``collection`` of this database; refused while an alias points to it."""
        raise StoreError(f"{self.backend} does not support collection aliases")

    def _check_droppable(self, collection: str) -> None:
        """Refuse to drop a collection that an alias still points to (what clients would lose)."""
        users = sorted(alias for alias, target in self.aliases().items() if target == collection)
        if users:
            raise StoreError(f"collection {collection!r} is what alias {users[0]!r} points to; switch the alias first")

    def flush(self) -> None:
        """Make every acknowledged write durable and visible (no-op where writes already are)."""

    def close(self) -> None:
        """Release connections and file handles."""

    def __enter__(self) -> "VectorStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ServerStore(VectorStore):
    """A store talking to a database over one client, caching its collection's dimension.

    Such databases resolve aliases themselves at every request, so after a switch only the
    cached dimension is stale (:meth:`refresh`), and a view pinned to a physical collection is
    a copy sharing the client (:meth:`pinned`).
    """

    _dim: int | None = None

    def refresh(self) -> None:
        self._dim = None

    def pinned(self, collection: str) -> "VectorStore":
        view = copy.copy(self)  # the same client: never closed through the view
        view.collection, view._dim = collection, None
        return view
