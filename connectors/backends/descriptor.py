"""What a backend says about itself: the one object its package exports to the registry.

A :class:`Backend` names its ``--target`` values and carries everything the rest of the program
needs to know about it: its settings (the config keys, environment variables and flags are
generated from them), how settings become the options of its store (:class:`StoreTarget`), how
to open that store, its write request size, its payload index types and its filter compilers.
Config, the CLIs, the ingestion job, the benchmarks and the tests read these fields through
:mod:`.registry` and never name a backend themselves.

Building a descriptor must stay cheap: a backend package imports its database client only when
a store is opened (``open``), so ``--help`` and config checks never load a database client.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping

from ..setting import Setting
from .base import VectorStore


@dataclass(frozen=True)
class StoreTarget:
    """Where a collection lives: the ``open_store`` arguments plus a secret-free description."""

    target: str
    options: Mapping[str, Any]
    location: str
    """Path or URL (credentials removed): names the lock file and goes into summaries."""
    embedded: bool


@dataclass(frozen=True)
class Backend:
    """One backend, self-described (see the module docstring); its package exports exactly one."""

    names: tuple[str, ...]
    """Its ``--target`` values (``qdrant``, ``qdrant-edge``); the first is its own name."""
    open: Callable[..., VectorStore]
    """``open(name, collection, **options)``: a store of target ``name`` (the client is imported here)."""
    locate: Callable[[str, Mapping[str, Any]], StoreTarget]
    """``locate(name, settings)``: the store options for target ``name`` from resolved settings
    (embedded stores under ``settings["data_dir"]`` unless its own settings say where)."""
    write_batch_bytes: int
    """The most bytes of points one write request carries."""
    settings: tuple[Setting, ...] = ()
    """Its own settings (``qdrant_url``...), in the order ``--help`` lists them."""
    index_types: Mapping[str, str] = field(default_factory=dict)
    """:attr:`~.base.CollectionSpec.indexed_fields` type -> this backend's payload index type."""
    filter_compilers: Mapping[str, Callable[[Any], Any]] = field(default_factory=dict)
    """Filter AST -> native filter, per store dialect (a store's :attr:`~.base.VectorStore.backend`)."""
    address: str | None = None
    """The setting that names a server to connect to (``qdrant_url``): its flag is what a user is
    told to check when the database cannot be reached or an embedded store is busy."""
    holds: Literal["collection", "location"] = "collection"
    """What a process keeps open in an embedded store: one collection, or the whole location
    (a file that one process at a time may open, whichever collections it holds)."""

    @property
    def name(self) -> str:
        return self.names[0]


__all__ = ["Backend", "StoreTarget"]
