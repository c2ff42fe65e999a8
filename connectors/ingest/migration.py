"""Model migration without downtime: the collection name clients use becomes an alias.

A collection outlives its model. ``clip-ingest migrate --model NEW`` builds a second physical
collection for the new model beside the live one, from the same sources, with the ordinary
incremental pipeline (so it resumes after a crash and can be run again to catch up), then
points the name at it in one atomic step: Qdrant and Milvus collection aliases, a symbolic link
renamed over the old one for Qdrant Edge. The old collection stays until it is dropped
explicitly, so ``--rollback`` is one more alias switch.

Physical collections are named ``NAME__<10 hex of sha256(model_id)>``: one per model, found
again by a re-run. A collection made before aliases existed is *adopted* on its first
migration (:meth:`~..backends.base.VectorStore.adopt`): it becomes ``NAME__<its model>`` with
``NAME`` as its alias.

Everything here works through the :class:`~..backends.base.VectorStore` alias methods, so every
backend that implements them migrates the same way.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable

from ..backends.base import VERSION_SEPARATOR, StoreError, VectorStore


def physical_name(alias: str, model_id: str) -> str:
    """The physical collection that holds ``alias``'s points embedded by ``model_id``."""
    return f"{alias}{VERSION_SEPARATOR}{hashlib.sha256(model_id.encode()).hexdigest()[:10]}"


@dataclass(frozen=True)
class MigrationState:
    """Where a name stands: what it points to and which model versions exist beside it."""

    alias: str
    live: str | None
    """The physical collection the name points to (None: the name is a plain collection or missing)."""
    live_model: str | None
    versions: dict[str, str]
    """``{physical collection: model_id}`` of every ``NAME__*`` collection."""

    def to_dict(self) -> dict[str, object]:
        return {"collection": self.alias, "points_to": self.live, "model_id": self.live_model, "versions": self.versions}


class ModelOf:
    """Reads the model id of another collection of the same database through a second store."""

    def __init__(self, open_collection: Callable[[str], VectorStore]) -> None:
        self._open = open_collection

    def __call__(self, name: str) -> str:
        with self._open(name) as other:
            stored = other.collection_model()
        return stored[0] if stored else "<missing>"


class AlreadyMigrated(Exception):
    """The collection's name already points to a collection of the requested model."""


def state(store: VectorStore, model_of: ModelOf) -> MigrationState:
    """The migration state of ``store``'s name (``model_of(name)`` reads a collection's model id)."""
    versions = {name: model_of(name) for name in store.versions()}
    stored = store.collection_model()
    return MigrationState(store.collection, store.alias_target(), stored[0] if stored else None, versions)


def prepare(store: VectorStore, new_model_id: str) -> str:
    """Make the name an alias (adopting a plain collection) and return the new model's physical name.

    Raises :class:`StoreError` when there is nothing to migrate (no collection) and
    :class:`AlreadyMigrated` when the name already serves ``new_model_id``.
    """
    stored = store.collection_model()
    if stored is None:
        raise StoreError(f"collection {store.collection!r} does not exist: there is nothing to migrate, ingest with the new model")
    if stored[0] == new_model_id:
        raise AlreadyMigrated(f"{store.collection!r} already serves model {new_model_id!r}")
    if store.alias_target() is None:
        store.adopt(physical_name(store.collection, stored[0]))
    return physical_name(store.collection, new_model_id)


def switch(store: VectorStore, physical: str) -> str | None:
    """Point the name at ``physical``; returns what it pointed to before."""
    if physical not in store.collections():
        raise StoreError(f"no collection {physical!r} to switch {store.collection!r} to")
    before = store.alias_target()
    store.switch_alias(store.collection, physical)
    return before


def rollback_target(current: MigrationState, to: str | None) -> str:
    """The collection ``--rollback`` switches back to: ``to``, or the one other version there is."""
    others = sorted(name for name in current.versions if name != current.live)
    if to is not None:
        if to not in others:
            raise StoreError(f"{to!r} is not another version of {current.alias!r}; there are: {', '.join(others) or 'none'}")
        return to
    if len(others) != 1:
        listed = ", ".join(f"{n} ({current.versions[n]})" for n in others) or "none (dropped?)"
        raise StoreError(f"say which version to roll back to with --to: {listed}")
    return others[0]
