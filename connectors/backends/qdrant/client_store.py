"""Qdrant through ``qdrant-client``: a Qdrant server (``url=``) or qdrant-client's local mode.

Local mode keeps a collection in a folder (``path=``) or in memory (``location=":memory:"``);
it is pure Python, single-process, and ignores payload indexes (so none are created there).

Where the model is remembered: in the collection's own ``metadata`` (Qdrant >= 1.16; local
mode persists it in ``meta.json``), under the key ``"clip_ingest"`` as
``{"model_id": ..., "dim": ..., "format": 1}``. It lives and dies with the collection, so it
cannot drift from the vectors the way a companion collection or a side file could. A collection
without that record (made by another tool) reports :data:`~.base.UNKNOWN_MODEL` and fails
verification unless recreated; a server too old to keep metadata is refused when the collection
is created, with a message saying so.

Errors: connection refused, timeouts, 408/429/502/503/504 and gRPC UNAVAILABLE /
DEADLINE_EXCEEDED / RESOURCE_EXHAUSTED become :class:`~.base.TransientStoreError`; everything
else becomes :class:`~.base.StoreError`. Every request carries the client ``timeout``. The API
key is scrubbed from every message and never shown by ``repr``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import httpx
import numpy as np
from qdrant_client import QdrantClient, models
from qdrant_client.common.client_exceptions import ResourceExhaustedResponse
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from ..base import CollectionSpec, InvalidSettingError, StoreError, TransientStoreError, UNKNOWN_MODEL, ServerStore
from ..common import redact_uri, scrub_secrets
from .common import Pager, QdrantStore, metadata_record, payload_indexes
from .compile import to_qdrant_filter

#: key of our record inside the collection metadata
METADATA_KEY = "clip_ingest"

_TRANSIENT_HTTP = {408, 429, 502, 503, 504}
_TRANSIENT_GRPC = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"}


def _is_transient(exc: BaseException) -> bool:
    """Whether retrying ``exc`` may help (network trouble or an overloaded server)."""
    if isinstance(exc, UnexpectedResponse):
        return exc.status_code in _TRANSIENT_HTTP
    if isinstance(exc, ResponseHandlingException):
        return _is_transient(exc.source)
    if isinstance(exc, (httpx.TransportError, ResourceExhaustedResponse, TimeoutError, ConnectionError)):
        return True
    code = getattr(exc, "code", None)  # grpc.RpcError, without importing grpc for REST users
    if callable(code):
        return getattr(code(), "name", "") in _TRANSIENT_GRPC
    return False


def _describe(exc: BaseException) -> str:
    """A short human description of a client exception."""
    if isinstance(exc, UnexpectedResponse):
        try:
            detail = exc.structured()["status"]["error"]
        except Exception:
            detail = exc.content[:200].decode("utf-8", "replace")
        return f"HTTP {exc.status_code}: {detail}"
    if isinstance(exc, ResponseHandlingException):
        return _describe(exc.source)
    details = getattr(exc, "details", None)  # grpc.RpcError
    if callable(details):
        return f"gRPC {exc.code().name}: {details()}"  # type: ignore[attr-defined]
    return f"{type(exc).__name__}: {exc}"


class QdrantClientStore(QdrantStore, ServerStore):
    """A clip-ingest collection in Qdrant, reached through ``qdrant_client.QdrantClient``.

    Give exactly one of ``url`` (a server, e.g. ``http://localhost:6333``), ``path`` (local mode
    persisted in that folder) or ``location=":memory:"``. ``api_key`` is sent to servers only;
    callers read it from ``CLIP_INGEST_QDRANT_API_KEY`` or their config. ``prefer_grpc`` talks
    gRPC on ``grpc_port`` where the client can. ``https`` forces TLS,
    ``verify`` is ``False`` or a CA bundle path for REST TLS verification. A ``path`` that does
    not exist is created by :meth:`ensure_collection` only: reads there find no collection.
    """

    backend = "qdrant"
    _compile = staticmethod(to_qdrant_filter)

    def __init__(
        self,
        collection: str,
        *,
        url: str | None = None,
        api_key: str | None = None,
        path: str | None = None,
        location: str | None = None,
        timeout: float = 10.0,
        prefer_grpc: bool = False,
        grpc_port: int = 6334,
        https: bool | None = None,
        verify: bool | str = True,
    ) -> None:
        if sum(option is not None for option in (url, path, location)) != 1:
            raise InvalidSettingError("give exactly one of url= (server), path= (local folder) or location=':memory:'")
        if location is not None and location != ":memory:":
            raise InvalidSettingError("location= only accepts ':memory:'; use url= for a server")
        if api_key is not None and url is None:
            raise InvalidSettingError("api_key= only applies to a Qdrant server (url=)")
        self.collection = collection
        self._secret = api_key or None
        self._local = url is None
        self._where = redact_uri(url) if url is not None else (path or str(location))
        self._dim: int | None = None
        self._path = path
        self._qdrant: QdrantClient | None = None
        if self._local:
            if not self._folder_missing():
                self._open_local()
            return
        with self._translated("connect"):
            self._qdrant = QdrantClient(
                    url=url,
                    api_key=api_key,
                    timeout=max(1, int(np.ceil(timeout))),
                    prefer_grpc=prefer_grpc,
                    grpc_port=grpc_port,
                    https=https,
                    verify=verify,
                    check_compatibility=False,  # would cost a request (and a warning) per open
                )

    def _folder_missing(self) -> bool:
        """Whether this is local mode on a folder that does not exist (yet): nothing to read there."""
        return self._qdrant is None and self._path is not None and not Path(self._path).exists()

    def _open_local(self) -> None:
        """Open local mode (which creates its folder): at construction when the folder exists,
        else by :meth:`ensure_collection`, so a read never leaves a store folder behind."""
        if self._qdrant is None:
            with self._translated("connect"):
                self._qdrant = QdrantClient(path=self._path, location=None if self._path else ":memory:")

    @property
    def _client(self) -> QdrantClient:
        if self._qdrant is None:
            raise StoreError(f"collection {self.collection!r} does not exist at {self._where}; ingest first")
        return self._qdrant

    def __repr__(self) -> str:
        key = "***" if self._secret else None
        return f"QdrantClientStore(collection={self.collection!r}, at={self._where!r}, api_key={key})"

    # -- error handling -------------------------------------------------------------------

    def _error(self, action: str, exc: Exception) -> StoreError:
        """A StoreError, or TransientStoreError where retrying may help, with the key scrubbed."""
        message = scrub_secrets(f"qdrant {action} on {self.collection!r} at {self._where}: {_describe(exc)}", self._secret)
        return (TransientStoreError if _is_transient(exc) else StoreError)(message)

    # -- collection -----------------------------------------------------------------------

    def _config(self) -> models.CollectionConfig | None:
        """The collection's config (its metadata holds the model record), or None if it does not exist."""
        if self._folder_missing():
            return None
        with self._translated("read collection"):
            if not self._client.collection_exists(self.collection):
                return None
            return self._client.get_collection(self.collection).config

    def collection_model(self) -> tuple[str, int] | None:
        config = self._config()
        if config is None:
            return None
        record = (config.metadata or {}).get(METADATA_KEY)
        if isinstance(record, dict) and "model_id" in record and "dim" in record:
            return str(record["model_id"]), int(record["dim"])
        vectors = config.params.vectors
        return UNKNOWN_MODEL, int(vectors.size) if isinstance(vectors, models.VectorParams) else 0

    def collection_model_spec(self) -> str | None:
        config = self._config()
        record = (config.metadata or {}).get(METADATA_KEY) if config is not None else None
        spec = record.get("model_spec") if isinstance(record, dict) else None
        return spec if isinstance(spec, str) else None

    def _prepare(self) -> None:
        self._open_local()

    def _create(self, spec: CollectionSpec, *, drop: bool) -> None:
        """Create the collection (after dropping the old one) with cosine float32 vectors and our record."""
        with self._translated("create collection"):
            if drop:
                self._client.delete_collection(self.collection)
            self._client.create_collection(
                self.collection,
                vectors_config=models.VectorParams(
                    size=spec.dim, distance=models.Distance.COSINE, datatype=models.Datatype.FLOAT32
                ),
                metadata={METADATA_KEY: metadata_record(spec)},
            )
        if self.collection_model() != (spec.model_id, spec.dim):
            raise StoreError(
                f"Qdrant at {self._where} did not keep the collection metadata of {self.collection!r}; "
                "clip-ingest needs Qdrant >= 1.16"
            )

    def _build(self, spec: CollectionSpec) -> None:
        """Create the payload indexes the spec asks for that the collection lacks or holds with
        another type (servers only; see :meth:`.edge_store.QdrantEdgeStore._build`)."""
        if self._local or not spec.indexed_fields:
            return
        with self._translated("create payload index"):
            existing = self._client.get_collection(self.collection).payload_schema
            for name, kind in payload_indexes(spec):
                schema = models.PayloadSchemaType(kind)
                if name not in existing or existing[name].data_type != schema:
                    self._client.create_payload_index(self.collection, name, field_schema=schema, wait=True)

    # -- points ---------------------------------------------------------------------------

    def _write(self, rows: list[tuple[str, list[float], dict[str, Any]]]) -> None:
        structs = [models.PointStruct(id=point_id, vector=vector, payload=payload) for point_id, vector, payload in rows]
        with self._translated("upsert"):
            self._client.upsert(self.collection, points=structs, wait=True)

    def set_payloads(self, payloads: Mapping[str, Mapping[str, Any]]) -> None:
        wanted, _ = self._stored_for(payloads)
        if not wanted:
            return
        operations = [
            models.OverwritePayloadOperation(overwrite_payload=models.SetPayload(payload=payload, points=[point_id]))
            for point_id, payload in wanted.items()
        ]
        with self._translated("set payload"):
            self._client.batch_update_points(self.collection, update_operations=operations, wait=True)

    def _fetch(self, ids: list[str], with_vectors: bool) -> Sequence[Any]:
        return self._client.retrieve(self.collection, ids=ids, with_payload=True, with_vectors=with_vectors)

    def _pager(self, with_payload: bool | list[str], batch_size: int) -> Pager:
        def page(offset: Any) -> tuple[Sequence[Any], Any]:
            return self._client.scroll(self.collection, limit=batch_size, offset=offset, with_payload=with_payload,
                                       with_vectors=False)

        return page

    def _remove(self, ids: list[str]) -> None:
        with self._translated("delete"):
            self._client.delete(self.collection, points_selector=models.PointIdsList(points=ids), wait=True)

    def _query(self, query: list[float], k: int, offset: int, native: Any, score_threshold: float | None) -> Sequence[Any]:
        return self._client.query_points(self.collection, query=query, limit=k, offset=offset, query_filter=native,
                                         score_threshold=score_threshold, with_payload=True).points

    def _count(self, native: Any) -> int:
        return self._client.count(self.collection, count_filter=native, exact=True).count

    # -- aliases: Qdrant's own, resolved by the server on every request

    def alias_target(self) -> str | None:
        return self.aliases().get(self.collection)

    def aliases(self) -> dict[str, str]:
        if self._folder_missing():
            return {}
        with self._translated("list aliases"):
            return {a.alias_name: a.collection_name for a in self._client.get_aliases().aliases}

    def collections(self) -> list[str]:
        if self._folder_missing():
            return []
        with self._translated("list collections"):
            return sorted(c.name for c in self._client.get_collections().collections)

    def switch_alias(self, alias: str, collection: str) -> None:
        operations: list[Any] = [models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=collection, alias_name=alias))]
        if alias in self.aliases():  # delete + create in one request: Qdrant applies them atomically
            operations.insert(0, models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias)))
        with self._translated("switch alias"):
            self._client.update_collection_aliases(change_aliases_operations=operations)
        self._dim = None

    def adopt(self, physical: str) -> None:
        if self.alias_target() is not None:
            raise StoreError(f"{self.collection!r} is an alias already")
        config = self._config()
        if config is None:
            raise StoreError(f"collection {self.collection!r} does not exist at {self._where}")
        with self._translated("copy collection"):  # Qdrant cannot rename: copy points, vectors included
            self._client.create_collection(physical, vectors_config=config.params.vectors, metadata=config.metadata)
            offset = None
            while True:
                records, offset = self._client.scroll(self.collection, limit=256, offset=offset, with_payload=True, with_vectors=True)
                if records:
                    self._client.upsert(physical, [models.PointStruct(id=r.id, vector=r.vector, payload=r.payload) for r in records], wait=True)
                if offset is None:
                    break
            schema = self._client.get_collection(self.collection).payload_schema
            for name, info in schema.items():
                if not self._local:
                    self._client.create_payload_index(physical, name, field_schema=info.data_type, wait=True)
            self._client.delete_collection(self.collection)
        self.switch_alias(self.collection, physical)

    def drop_collection(self, collection: str) -> None:
        self._check_droppable(collection)
        with self._translated("drop collection"):
            self._client.delete_collection(collection)

    def close(self) -> None:
        if self._qdrant is not None:
            with self._translated("close"):
                self._qdrant.close()

