"""Milvus through pymilvus' ``MilvusClient``: a Milvus server (``uri="http://host:19530"``) or
Milvus Lite, the embedded default (``uri`` ending in ``.db``).

Schema: ``id`` VARCHAR(64) primary key (canonical UUID strings), ``vector`` FLOAT_VECTOR(dim)
with a COSINE index (``AUTOINDEX`` by default, which Milvus Lite and every server >= 2.2.9
accept; ``index_type="HNSW"`` or ``"FLAT"`` for deployments that want a fixed one), and dynamic
fields: every payload key is its own top-level dynamic field, so a filter on payload field
``colour`` compiles to an expression on ``colour`` (:mod:`.compile`).

Where the model is remembered: in the collection's properties, ``clip_ingest.model_id`` and
``clip_ingest.dim``. Both Milvus Lite and Milvus 2.3.5 keep collection properties (Lite drops
the description, so that is not used). A collection without them (made by another tool) reports
:data:`~.base.UNKNOWN_MODEL` and fails verification unless recreated.

Deployment differences handled here (found by version, once per connection):

* Scalar indexes for ``CollectionSpec.indexed_fields``: payload keys are dynamic fields, which
  only Milvus >= 2.5.11 can index (JSON-path indexes on ``$meta``). Milvus Lite cannot, so a
  Lite collection gets a typed nullable column per indexed key (``__clip_<key>``: VARCHAR,
  DOUBLE or BOOL, with an INVERTED index), written beside the key on every upsert: null where
  the key is missing or holds a value the column cannot hold exactly (a list, another type),
  which marks the key a *misfit* and sends its filters back to the JSON key. Filters on a
  fitting key compare the column (:class:`~.compile.KeyLayout`): 5-10x faster than parsing
  every row's JSON. The payload is still read from the dynamic fields only. Milvus 2.3.5
  can do neither, so there filters on those fields scan (correct, just not indexed) and an
  INFO line says so.
* Every collection created here records in its properties the keys that ever held a list
  (``clip_ingest.list.<key>``) and the misfits (``clip_ingest.misfit.<key>``), before the rows
  that make them so are written; filters match the elements of a list only on those keys,
  which spares every other ``=`` / ``in`` a per-row ``json_contains_any``. A collection
  without the record (``clip_ingest.key_shapes``: made by an older version) gets it from one
  scan of its payloads on the next ``ensure_collection``; until then it is filtered as if any
  key might hold a list.
* Expression templates (``filter_params``) exist from Milvus 2.5; older servers and Milvus Lite
  get fully escaped inline literals from the filter compiler (``inline=True``).
* Milvus Lite merges the fields of an upsert into the stored row, while a server replaces the
  row. Upsert here always means *replace*, so on Lite the rows whose payload would keep stale
  keys are deleted right before they are written again.
* Milvus Lite's HNSW (FAISS) keeps ``ef`` candidates among all points and only then applies a
  filter, so its filtered searches run at an ``ef`` of the collection's size, which visits
  every point, up to :data:`LITE_FILTERED_EF` points; larger collections rank few matches by a
  scan (:meth:`MilvusStore.search`; docs/search-correctness.md).
* A Milvus Lite file is created by ``ensure_collection`` only: reads of a missing file find no
  collection and leave nothing behind. Lite opens a file in one process at a time; a file held
  by another process is one :class:`~.base.StoreError` naming that process.

Writes go in requests of at most ``max_request_bytes`` (16 MiB; Milvus refuses over 64 MiB).
Reads used for correctness (retrieve, scroll, count, and by default search) use Strong
consistency, so an acknowledged write is visible to the next read.

Errors: connection refused, unavailable, timeouts and rate limits become
:class:`~.base.TransientStoreError`; everything else :class:`~.base.StoreError` (or
:class:`~.base.DimensionMismatchError` / :class:`~.base.ModelMismatchError`). Every request
carries ``timeout`` (``admin_timeout`` for create / load / index / drop / flush). The token
(and any credentials inside ``uri``) never appears in ``repr``, logs or exception messages.
A store is not thread-safe; use one per thread.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence
from urllib.parse import urlsplit

import grpc
import numpy as np
from pymilvus import DataType, MilvusClient
from pymilvus.exceptions import (
    ConnectError,
    ConnectionConfigException,
    ErrorCode,
    MilvusException,
    MilvusUnavailableException,
)

from ..base import (
    CollectionSpec,
    Hit,
    InvalidSettingError,
    Point,
    StoreError,
    TransientStoreError,
    UNKNOWN_MODEL,
    ServerStore,
    check_collection_model,
    check_point_id,
    check_vector,
    refuse_recreate_through_alias,
)
from ..common import GEO_KEYS, redact_uri, scrub_secrets
from .compile import KeyLayout, scalar_kind, to_milvus_expr
from .options import CONSISTENCY_LEVELS, DEFAULT_MAX_REQUEST_BYTES, JSON_CAST_TYPES

log = logging.getLogger(__name__)

ID_FIELD = "id"
VECTOR_FIELD = "vector"
#: collection properties holding the model record
MODEL_PROPERTY = "clip_ingest.model_id"
SPEC_PROPERTY = "clip_ingest.model_spec"
DIM_PROPERTY = "clip_ingest.dim"
#: the property marking a collection that records its list and misfit keys, and their prefixes
SHAPES_PROPERTY = "clip_ingest.key_shapes"
LIST_PROPERTY = "clip_ingest.list."
MISFIT_PROPERTY = "clip_ingest.misfit."
#: name prefix of the typed column of an indexed payload key (Milvus Lite)
COLUMN_PREFIX = "__clip_"
#: indexed_fields type -> (column type, the :func:`~.compile.scalar_kind` of the values it holds)
COLUMN_TYPES: dict[str, tuple[DataType, str]] = {
    "keyword": (DataType.VARCHAR, "str"), "integer": (DataType.DOUBLE, "number"), "float": (DataType.DOUBLE, "number"),
    "datetime": (DataType.DOUBLE, "number"), "bool": (DataType.BOOL, "bool"),
}
_KIND_OF_TYPE = {column_type: kind for column_type, kind in COLUMN_TYPES.values()}
#: bytes a VARCHAR column holds
MAX_VARCHAR_BYTES = 65_535
#: payload keys that would collide with the schema or Milvus' own names
RESERVED_KEYS = frozenset({ID_FIELD, VECTOR_FIELD})
#: ids per get/delete request (each becomes an ``id in [...]`` expression)
IDS_PER_REQUEST = 1000
#: HNSW ``ef`` of searches (Qdrant's default ``hnsw_ef`` too)
DEFAULT_SEARCH_EF = 128
#: the widest ``ef`` a short filtered page is retried with before the matches are scanned
MAX_SEARCH_EF = 4096
#: filters matching at most this many points are ranked exactly when a page comes back short
EXACT_SEARCH_MAX_MATCHES = 4096
#: the widest HNSW ``ef`` of a filtered search on Milvus Lite (see :meth:`MilvusStore.search`)
LITE_FILTERED_EF = 16384
#: vector index types offered, with their build parameters
INDEX_PARAMS: dict[str, dict[str, Any]] = {
    "AUTOINDEX": {},
    "HNSW": {"M": 16, "efConstruction": 200},
    "FLAT": {},
}

_TRANSIENT_GRPC = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
}
#: pymilvus' own code for "could not connect" (``pymilvus.client.types.Status.CONNECT_FAILED``)
_CONNECT_FAILED = 2
#: Milvus' error code for a read of a collection that is not (yet) loaded: a restarted server
#: answers a while before it has reloaded its collections
_COLLECTION_NOT_LOADED = 101
_VERSION_RE = re.compile(r"(\d+)\.(\d+)\.(\d+)")
#: gRPC options of a Milvus Lite connection. pymilvus pings every 10 s even with no call in
#: flight, and Milvus Lite's server answers such pings on an idle connection that has written
#: and read with GOAWAY "too_many_pings"; the next connect to that file in the process fails.
#: Measured with pymilvus 3.0 / Milvus Lite 3.2 after an insert and a query: a client opened
#: after 45 or 60 s idle failed in 4 tries of 4, after 25 or 35 s never (after only a version
#: call, 70 and 90 s idle did not fail). Keepalive pings detect dead peers across networks; a
#: local subprocess needs none while idle, so Lite pings only during calls.
_LITE_GRPC_OPTIONS = {"grpc.keepalive_permit_without_calls": False}


@dataclass(frozen=True)
class Capabilities:
    """What the connected deployment supports, from its version string."""

    version: str
    lite: bool
    filter_params: bool
    json_path_index: bool
    list_aliases: bool = True
    """``ListAliases`` answers for a collection or an alias (Lite, servers >= 2.4); before, the
    collection's description names its aliases."""
    typed_columns: bool = False
    """Indexed keys get typed nullable columns (Milvus Lite; servers >= 2.5.11 index JSON paths instead)."""

    @classmethod
    def from_version(cls, version: str) -> "Capabilities":
        """Parse ``v2.3.5``-style server versions; Milvus Lite reports ``milvus_lite-X.Y.Z``."""
        lite = version.startswith("milvus_lite")
        match = _VERSION_RE.search(version)
        numbers = tuple(int(part) for part in match.groups()) if match else (0, 0, 0)
        server = not lite and match is not None
        return cls(
            version=version,
            lite=lite,
            filter_params=server and numbers >= (2, 5, 0),
            json_path_index=server and numbers >= (2, 5, 11),
            list_aliases=lite or numbers >= (2, 4, 0),
            typed_columns=lite,
        )


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the failed call may help (connection, availability, timeout, rate limit)."""
    if isinstance(exc, (ConnectError, MilvusUnavailableException, TimeoutError, ConnectionError)):
        return True
    if isinstance(exc, grpc.FutureTimeoutError):
        return True
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
        return exc.code() in _TRANSIENT_GRPC
    if isinstance(exc, MilvusException):
        code = exc.code
        if isinstance(code, grpc.StatusCode):
            return code in _TRANSIENT_GRPC
        return code in (_CONNECT_FAILED, ErrorCode.RATE_LIMIT, _COLLECTION_NOT_LOADED) or exc.retriable
    return False


class LiteTimestampNoise(logging.Filter):
    """Drops the log noise of one harmless Milvus Lite gap: its in-process gRPC server does not
    implement ``AllocTimestamp``, which pymilvus' ``query_iterator`` asks for first and then
    replaces by a client-side timestamp. Without this filter every scroll on Milvus Lite logs an
    ERROR traceback and a WARNING although nothing failed (cron jobs alert on those).
    Other records pass untouched.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("failed to get mvccTs from milvus server"):
            return False
        if not record.exc_info or not isinstance(record.exc_info[1], NotImplementedError):
            return True
        tb = record.exc_info[2]
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        return tb is None or tb.tb_frame.f_code.co_name != "AllocTimestamp"


class LiteLockedNoise(logging.Filter):
    """Drops the traceback Milvus Lite logs when another process holds a database file: the
    store reports that itself, in one line naming the holder (:func:`lite_file_holder`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and type(record.exc_info[1]).__name__ == "DataDirLockedError")


_LITE_NOISE = LiteTimestampNoise()
_LITE_LOCKED_NOISE = LiteLockedNoise()
#: the loggers of Milvus Lite's gRPC server thread and of pymilvus' query iterator
LITE_NOISY_LOGGERS = ("grpc._server", "pymilvus.client.iterator.query_iterator")
#: the logger of Milvus Lite's server start (a held database file)
LITE_START_LOGGER = "milvus_lite.server_manager"
#: the lock file inside a Milvus Lite database folder, held (flock) by the process that has it open
LITE_LOCK_FILE = "LOCK"


def quiet_lite_noise() -> None:
    """Install :class:`LiteTimestampNoise` and :class:`LiteLockedNoise` on the loggers that
    emit them (idempotent)."""
    for name, noise in [*((name, _LITE_NOISE) for name in LITE_NOISY_LOGGERS), (LITE_START_LOGGER, _LITE_LOCKED_NOISE)]:
        logger = logging.getLogger(name)
        if noise not in logger.filters:
            logger.addFilter(noise)


def lite_file_holder(database: Path) -> str | None:
    """Who holds the Milvus Lite ``database`` open: ``"process 123 (clip-ingest)"``, or
    ``"another process"`` where the lock's owner cannot be read; None when nobody does.

    The owner comes from ``/proc/locks`` (Linux); its command name only, never its arguments.
    """
    try:
        fd = os.open(database / LITE_LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return _flock_owner(os.fstat(fd).st_ino) or "another process"
    finally:
        os.close(fd)  # releases the probe's own shared lock too
    return None


def _flock_owner(inode: int) -> str | None:
    """``"process PID (command)"`` of the exclusive flock on ``inode``, from ``/proc/locks``."""
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()  # "1: FLOCK ADVISORY WRITE 4242 00:2f:1234 0 EOF"
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[3] == "WRITE" and fields[5].rsplit(":", 1)[-1] == str(inode):
            pid = fields[4]
            try:
                command = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                return f"process {pid}"
            return f"process {pid} ({command})"
    return None


def row_bytes(row: Mapping[str, Any]) -> int:
    """Estimated wire size of one row: 4 bytes per vector value plus the JSON of everything else."""
    rest = {key: value for key, value in row.items() if key != VECTOR_FIELD}
    return 4 * len(row.get(VECTOR_FIELD, ())) + len(json.dumps(rest, ensure_ascii=False).encode()) + 16


def split_by_bytes(rows: Sequence[Mapping[str, Any]], max_bytes: int) -> Iterator[list[Mapping[str, Any]]]:
    """Consecutive groups of ``rows`` whose estimated size stays within ``max_bytes`` each.

    Raises :class:`StoreError` (before yielding anything) if a single row is larger than that.
    """
    sizes = [row_bytes(row) for row in rows]
    for row, size in zip(rows, sizes):
        if size > max_bytes:
            raise StoreError(
                f"point {row[ID_FIELD]} is about {size} bytes, over the {max_bytes}-byte request limit; "
                "shrink its payload"
            )
    group: list[Mapping[str, Any]] = []
    total = 0
    for row, size in zip(rows, sizes):
        if group and total + size > max_bytes:
            yield group
            group, total = [], 0
        group.append(row)
        total += size
    if group:
        yield group


def _chunks(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _check_options(index_type: str, search_consistency: str, max_request_bytes: int, timeout: float,
                   admin_timeout: float, search_ef: int) -> None:
    """Refuse a store option out of range with :class:`~..base.InvalidSettingError`, before any connection."""
    if index_type not in INDEX_PARAMS:
        raise InvalidSettingError(f"index_type {index_type!r} is not one of {', '.join(INDEX_PARAMS)}")
    if search_consistency not in CONSISTENCY_LEVELS:
        raise InvalidSettingError(f"search_consistency {search_consistency!r} is not one of {', '.join(CONSISTENCY_LEVELS)}")
    if not 1024 <= max_request_bytes <= 64 * 2**20:
        raise InvalidSettingError("max_request_bytes must be between 1 KiB and 64 MiB")
    if timeout <= 0 or admin_timeout <= 0:
        raise InvalidSettingError("timeout and admin_timeout must be positive")
    if search_ef < 1:
        raise InvalidSettingError("search_ef must be >= 1")


class MilvusStore(ServerStore):
    """A clip-ingest collection in Milvus or Milvus Lite (see the module docstring)."""

    backend = "milvus"

    def __init__(
        self,
        collection: str,
        *,
        uri: str | Path | None = "./milvus.db",
        token: str | None = None,
        db_name: str | None = None,
        timeout: float = 10.0,
        secure: bool | None = None,
        server_pem_path: str | None = None,
        server_name: str | None = None,
        ca_pem_path: str | None = None,
        client_pem_path: str | None = None,
        client_key_path: str | None = None,
        admin_timeout: float = 300.0,
        index_type: str = "AUTOINDEX",
        search_consistency: str = "Strong",
        search_ef: int = DEFAULT_SEARCH_EF,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    ) -> None:
        """Describe the connection; nothing is contacted until the first operation.

        ``uri``: a ``.db`` file for Milvus Lite (created, with its folder, by :meth:`ensure_collection`
        only) or ``http(s)://host:port``.
        ``token``: ``"user:password"`` or an API key (callers read ``CLIP_INGEST_MILVUS_TOKEN``).
        TLS: ``secure=True`` (implied by ``https://``), ``server_pem_path``/``server_name`` for
        one-way TLS, plus ``ca_pem_path``/``client_pem_path``/``client_key_path`` for mutual TLS.
        ``timeout`` bounds every request except those that wait for server-side work (create,
        load, index, drop, flush: seconds even for an empty collection), bounded by ``admin_timeout``.
        ``search_consistency="Bounded"`` trades read-your-writes for lower search latency.
        ``search_ef``: HNSW candidate list size of a search (at least ``k + offset``); the
        server's own default is ``k``, which measured recall@10 0.13 on 10k random 512-d
        vectors, against 0.78 at 256 (real image embeddings are far easier than random ones).
        """
        _check_options(index_type, search_consistency, max_request_bytes, timeout, admin_timeout, search_ef)
        self.collection = collection
        self.uri = str(uri if uri is not None else "./milvus.db")
        self.db_name = db_name
        self.timeout = float(timeout)
        self.admin_timeout = float(admin_timeout)
        self.index_type = index_type
        self.search_consistency = search_consistency
        self.search_ef = search_ef
        self.max_request_bytes = max_request_bytes
        self._token = token or ""
        tls = {"secure": secure, "server_pem_path": server_pem_path, "server_name": server_name,
               "ca_pem_path": ca_pem_path, "client_pem_path": client_pem_path, "client_key_path": client_key_path}
        self._tls = {name: value for name, value in tls.items() if value is not None}
        self._client: MilvusClient | None = None
        self._caps: Capabilities | None = None
        self._dim: int | None = None  # known once the collection is verified / loaded

    def __repr__(self) -> str:
        token = ", token=***" if self._token else ""
        return f"MilvusStore(collection={self.collection!r}, uri={redact_uri(self.uri)!r}{token})"

    # -- connection and errors -------------------------------------------------------------

    @property
    def is_lite(self) -> bool:
        """Whether ``uri`` names a Milvus Lite database file."""
        return self.uri.endswith(".db")

    def _scrub(self, text: str) -> str:
        """``text`` without the token or the credentials of ``uri``."""
        text = text.replace(self.uri, redact_uri(self.uri))
        return scrub_secrets(text, self._token, urlsplit(self.uri).password)

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Translate pymilvus / gRPC failures of ``action`` into our error types, secrets scrubbed."""
        try:
            yield
        except StoreError:
            raise
        except Exception as exc:
            detail = exc.message if isinstance(exc, MilvusException) else str(exc)
            where = f"collection {self.collection!r} at {self.uri}"
            message = self._scrub(f"Milvus {action} on {where} failed: {detail or type(exc).__name__}")
            error_type = TransientStoreError if is_transient(exc) else StoreError
            if isinstance(exc, MilvusException) and exc.code == _COLLECTION_NOT_LOADED:
                self._dim = None  # the retry verifies the collection again and waits for (or starts) its loading
            clean = self._scrub(str(exc)) == str(exc)
            raise error_type(message) from (exc if clean else None)

    def _lite_file_missing(self) -> bool:
        """Whether this is Milvus Lite and its database file does not exist (yet)."""
        return self.is_lite and self._client is None and not Path(self.uri).exists()

    def _no_lite_file(self) -> StoreError:
        return StoreError(
            f"no collection at {self.uri} (no Milvus Lite database there); ingest first with "
            f"clip-ingest --target milvus (collection {self.collection!r})"
        )

    def _conn(self, *, create: bool = False) -> MilvusClient:
        """The client, connected on first use; also learns what the deployment supports.

        Only ``create=True`` (:meth:`ensure_collection`) may create a Milvus Lite database file
        and its folder; any other first request on a missing file raises :class:`StoreError`, so
        a search never leaves a store behind. A file another process holds open (Milvus Lite
        allows one process per file) is one :class:`StoreError` naming that process.
        """
        if self._client is None:
            if self._lite_file_missing() and not create:
                raise self._no_lite_file()
            with self._errors("connect"):
                if self.is_lite:
                    Path(self.uri).parent.mkdir(parents=True, exist_ok=True)
                    quiet_lite_noise()
                try:
                    client = MilvusClient(
                        uri=self.uri, token=self._token, db_name=self.db_name or "", timeout=self.timeout, **self._tls,
                        **({"grpc_options": _LITE_GRPC_OPTIONS} if self.is_lite else {}),
                    )
                except ConnectionConfigException:
                    holder = lite_file_holder(Path(self.uri)) if self.is_lite else None
                    if holder is None:
                        raise
                    raise StoreError(
                        f"the Milvus Lite file {self.uri} is in use by {holder} (a running clip-ingest or "
                        "clip-search serve; Milvus Lite opens a file in one process at a time): search it through "
                        "that server (`clip-search serve`), or wait for the ingest to finish"
                    ) from None
                try:
                    self._caps = Capabilities.from_version(client.get_server_version(timeout=self.timeout))
                except BaseException:
                    client.close()
                    raise
            self._client = client
        return self._client

    @property
    def capabilities(self) -> Capabilities:
        """What the connected deployment supports (connects if needed)."""
        self._conn()
        assert self._caps is not None
        return self._caps

    def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            with self._errors("close"):
                client.close()

    # -- collection ------------------------------------------------------------------------

    def _properties(self) -> dict[str, Any] | None:
        """The collection's properties (where the model record lives), or None if it does not exist."""
        if self._lite_file_missing():
            return None
        client = self._conn()
        with self._errors("describe"):
            if not client.has_collection(self.collection, timeout=self.timeout):
                return None
            return client.describe_collection(self.collection, timeout=self.timeout).get("properties") or {}

    def collection_model(self) -> tuple[str, int] | None:
        properties = self._properties()
        if properties is None:
            return None
        if MODEL_PROPERTY not in properties or DIM_PROPERTY not in properties:
            return (UNKNOWN_MODEL, self._schema_dim())
        return (properties[MODEL_PROPERTY], int(properties[DIM_PROPERTY]))

    def collection_model_spec(self) -> str | None:
        return (self._properties() or {}).get(SPEC_PROPERTY) or None

    def _schema_dim(self) -> int:
        with self._errors("describe"):
            description = self._conn().describe_collection(self.collection, timeout=self.timeout)
        for field in description.get("fields", []):
            if field.get("name") == VECTOR_FIELD:
                return int(field.get("params", {}).get("dim", 0))
        return 0

    def ensure_collection(self, spec: CollectionSpec, *, recreate: bool = False) -> None:
        unknown = {name: kind for name, kind in spec.indexed_fields.items() if kind not in JSON_CAST_TYPES}
        if unknown:
            raise InvalidSettingError(f"unknown indexed_fields types {unknown}; use {', '.join(JSON_CAST_TYPES)}")
        bad_names = sorted(name for name in spec.indexed_fields if not _is_payload_key(name))
        if bad_names:
            raise InvalidSettingError(f"indexed_fields {bad_names} cannot be payload fields in Milvus")
        client = self._conn(create=True)
        stored = self.collection_model()
        if stored is not None and recreate:
            refuse_recreate_through_alias(self)
            with self._errors("drop collection"):
                client.drop_collection(self.collection, timeout=self.admin_timeout)
            stored = None
        if stored is None:
            self._create(spec)
        else:
            check_collection_model(self.collection, spec, stored)
            self._start_shape_record()
        self._dim = spec.dim
        self._load()
        self._ensure_scalar_indexes(spec)

    def _create(self, spec: CollectionSpec) -> None:
        client = self._conn()
        schema = MilvusClient.create_schema(
            auto_id=False, enable_dynamic_field=True, description=f"clip-ingest images embedded by {spec.model_id}"
        )
        schema.add_field(ID_FIELD, DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=spec.dim)
        index_params = client.prepare_index_params()
        index_params.add_index(
            VECTOR_FIELD, index_type=self.index_type, metric_type="COSINE", params=INDEX_PARAMS[self.index_type]
        )
        if self.capabilities.typed_columns:
            for key, kind in spec.indexed_fields.items():
                if kind in COLUMN_TYPES:
                    column = COLUMN_PREFIX + key
                    extra = {"max_length": MAX_VARCHAR_BYTES} if COLUMN_TYPES[kind][0] == DataType.VARCHAR else {}
                    schema.add_field(column, COLUMN_TYPES[kind][0], nullable=True, **extra)
                    index_params.add_index(column, index_type="INVERTED")
        with self._errors("create collection"):
            client.create_collection(
                self.collection,
                schema=schema,
                index_params=index_params,
                consistency_level="Strong",  # query_iterator follows the collection's level, not the call's
                properties={MODEL_PROPERTY: spec.model_id, DIM_PROPERTY: str(spec.dim), SHAPES_PROPERTY: "1",
                            **({SPEC_PROPERTY: spec.model_spec} if spec.model_spec else {})},
                timeout=self.admin_timeout,
            )

    # -- aliases: Milvus's own, resolved by the server on every request

    def alias_target(self) -> str | None:
        if self._lite_file_missing():
            return None
        client = self._conn()
        with self._errors("resolve alias"):
            if self.capabilities.list_aliases:
                real = client.list_aliases(self.collection, timeout=self.timeout).get("collection_name")
            elif client.has_collection(self.collection, timeout=self.timeout):
                real = client.describe_collection(self.collection, timeout=self.timeout).get("collection_name")
            else:
                real = None
        return real if real and real != self.collection else None

    def aliases(self) -> dict[str, str]:
        if self._lite_file_missing():
            return {}
        client = self._conn()
        found: dict[str, str] = {}
        with self._errors("list aliases"):
            for collection in client.list_collections(timeout=self.timeout):
                if self.capabilities.list_aliases:
                    names = client.list_aliases(collection, timeout=self.timeout).get("aliases", [])
                else:
                    names = client.describe_collection(collection, timeout=self.timeout).get("aliases", [])
                for alias in names:
                    found[alias] = collection
        return found

    def collections(self) -> list[str]:
        if self._lite_file_missing():
            return []
        with self._errors("list collections"):
            return sorted(self._conn().list_collections(timeout=self.timeout))

    def switch_alias(self, alias: str, collection: str) -> None:
        client = self._conn()
        with self._errors("switch alias"):
            client.load_collection(collection, timeout=self.admin_timeout)  # searchable before anyone is sent there
            if alias in self.aliases():
                client.alter_alias(collection, alias, timeout=self.admin_timeout)  # atomic on the server
            else:
                client.create_alias(collection, alias, timeout=self.admin_timeout)
        self._dim = None

    def adopt(self, physical: str) -> None:
        if self.alias_target() is not None:
            raise StoreError(f"{self.collection!r} is an alias already")
        client = self._conn()
        # Milvus cannot rename and alias in one step: the name is missing from the rename until
        # the alias exists (searches wait for it, see Searcher), so only the load runs between.
        with self._errors("rename collection"):
            client.rename_collection(self.collection, physical, timeout=self.admin_timeout)
        with self._errors("load"):
            client.load_collection(physical, timeout=self.admin_timeout)  # a rename releases it
        with self._errors("create alias"):
            client.create_alias(physical, self.collection, timeout=self.admin_timeout)
        self._dim = None

    def drop_collection(self, collection: str) -> None:
        self._check_droppable(collection)
        with self._errors("drop collection"):
            self._conn().drop_collection(collection, timeout=self.admin_timeout)

    def _load(self) -> None:
        """Load the collection for reads (Milvus Lite reopens collections released)."""
        client = self._conn()
        with self._errors("load"):
            state = client.get_load_state(self.collection, timeout=self.timeout).get("state")
            if getattr(state, "name", str(state)) != "Loaded":
                client.load_collection(self.collection, timeout=self.admin_timeout)

    def _ensure_scalar_indexes(self, spec: CollectionSpec) -> None:
        if not spec.indexed_fields:
            return
        if self.capabilities.typed_columns:
            missing = sorted(set(spec.indexed_fields) - set(self._keys().columns))
            if missing:
                log.info("collection %r has no typed column for %s (made before they were indexed, or geo points); "
                         "filters on them read every row's JSON until it is recreated (clip-ingest migrate)",
                         self.collection, ", ".join(missing))
            return
        if not self.capabilities.json_path_index:
            log.info(
                "%s cannot index dynamic fields; filters on %s scan without an index",
                self.capabilities.version,
                ", ".join(sorted(spec.indexed_fields)),
            )
            return
        client = self._conn()
        with self._errors("create scalar index"):
            existing = set(client.list_indexes(self.collection, timeout=self.timeout))
            for name, kind in spec.indexed_fields.items():
                paths = {f"payload_{name}": name} if kind != "geo" else {
                    f"payload_{name}_{key}": f'{name}["{key}"]' for key in GEO_KEYS}
                for index_name, json_path in paths.items():
                    if index_name in existing:
                        continue
                    params = client.prepare_index_params()
                    params.add_index(
                        name,
                        index_type="INVERTED",
                        index_name=index_name,
                        params={"json_path": json_path, "json_cast_type": JSON_CAST_TYPES[kind]},
                    )
                    client.create_index(self.collection, params, timeout=self.admin_timeout)

    def _keys(self) -> "_Keys":
        """What the collection says about its payload keys now: its schema may have changed behind
        an alias and another writer may have recorded a list, so it is read for every write and
        every filter (one describe, under a millisecond on Lite)."""
        with self._errors("describe"):
            description = self._conn().describe_collection(self.collection, timeout=self.timeout)
        properties = description.get("properties") or {}
        columns = {
            field["name"][len(COLUMN_PREFIX):]: (field["name"], _KIND_OF_TYPE[field["type"]])
            for field in description.get("fields", [])
            if field.get("name", "").startswith(COLUMN_PREFIX) and field.get("type") in _KIND_OF_TYPE
        }
        recorded = ({name for name in properties if name.startswith((LIST_PROPERTY, MISFIT_PROPERTY))}
                    if SHAPES_PROPERTY in properties else None)
        return _Keys(columns, recorded)

    def _key_layout(self) -> KeyLayout:
        """What the filter compiler may assume about the keys."""
        return self._keys().layout()

    def _start_shape_record(self) -> None:
        """Give a collection made before list keys were recorded its record: one scan of the payloads."""
        if self._keys().recorded is not None:
            return
        self._ready()
        lists = {key for point in self.scroll() for key, value in point.payload.items() if isinstance(value, list)}
        log.info("collection %r: recorded the payload keys that hold lists (%s), so filters on the others "
                 "compare without json_contains_any", self.collection, ", ".join(sorted(lists)) or "none")
        with self._errors("record payload shapes"):
            self._conn().alter_collection_properties(
                self.collection, properties={SHAPES_PROPERTY: "1", **dict.fromkeys((LIST_PROPERTY + key for key in lists), "1")},
                timeout=self.admin_timeout)

    def _record_shapes(self, payloads: Sequence[Mapping[str, Any]], keys: "_Keys") -> None:
        """Record the keys of ``payloads`` that hold a list or misfit their column, before they are written."""
        if keys.recorded is None:  # a collection without the record is read as if any key held a list
            return
        wanted = {LIST_PROPERTY + key for payload in payloads for key, value in payload.items() if isinstance(value, list)}
        wanted |= {MISFIT_PROPERTY + key for payload in payloads for key, (_, kind) in keys.columns.items()
                   if payload.get(key) is not None and _column_value(payload[key], kind) is None}
        missing = wanted - keys.recorded
        if missing:
            with self._errors("record payload shapes"):
                self._conn().alter_collection_properties(self.collection, properties=dict.fromkeys(missing, "1"),
                                                         timeout=self.admin_timeout)

    def _ready(self) -> int:
        """The collection's dimension, verifying once per store that it exists and is loaded."""
        if self._dim is None:
            if self._lite_file_missing():
                raise self._no_lite_file()
            stored = self.collection_model()
            if stored is None:
                raise StoreError(
                    f"Milvus collection {self.collection!r} does not exist; create it with ensure_collection first"
                )
            self._load()
            self._dim = stored[1]
        return self._dim

    # -- writes ----------------------------------------------------------------------------

    def _row(self, point: Point, dim: int, columns: Mapping[str, tuple[str, str]]) -> dict[str, Any]:
        """``point`` as a Milvus row, validated (id, vector, payload keys, JSON values), with its typed
        ``columns`` (payload key -> column, kind) filled."""
        point_id = check_point_id(point.id)
        if point.vector is None:
            raise StoreError(f"point {point_id} has no vector")
        vector = check_vector(point.vector, dim)
        bad_keys = sorted(str(key) for key in point.payload if not _is_payload_key(key))
        if bad_keys:
            raise StoreError(
                f"point {point_id}: payload keys {bad_keys} are reserved or not strings "
                f"(reserved: id, vector, $..., {COLUMN_PREFIX}...)"
            )
        try:
            json.dumps(point.payload, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise StoreError(f"point {point_id}: payload is not plain JSON ({exc})") from None
        typed = {column: _column_value(point.payload.get(key), kind) for key, (column, kind) in columns.items()}
        return {ID_FIELD: point_id, VECTOR_FIELD: vector.tolist(), **point.payload, **typed}

    def upsert(self, points: Sequence[Point]) -> None:
        dim = self._ready()
        keys = self._keys()
        by_id = {row[ID_FIELD]: row for row in (self._row(point, dim, keys.columns) for point in points)}  # all checked first
        rows = list(by_id.values())  # a repeated id: the last one wins, as in sequential upserts
        self._record_shapes([point.payload for point in points], keys)
        client = self._conn()
        for group in split_by_bytes(rows, self.max_request_bytes):
            if self.capabilities.lite:
                self._drop_rows_that_would_merge(group)
            with self._errors("upsert"):
                client.upsert(self.collection, group, timeout=self.timeout)

    def _drop_rows_that_would_merge(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Milvus Lite only: delete stored rows whose keys the new rows lack, so upsert replaces them."""
        new_keys = {row[ID_FIELD]: set(row) for row in rows}
        for chunk in _chunks(list(new_keys), IDS_PER_REQUEST):
            with self._errors("upsert"):
                stored = self._conn().get(
                    self.collection,
                    ids=chunk,
                    output_fields=["$meta"],
                    timeout=self.timeout,
                    consistency_level="Strong",
                )
                stale = [row[ID_FIELD] for row in stored if set(row) - new_keys[row[ID_FIELD]]]
                if stale:
                    self._conn().delete(self.collection, ids=stale, timeout=self.timeout)

    def set_payloads(self, payloads: Mapping[str, Mapping[str, Any]]) -> None:
        """Milvus has no payload update: the stored vectors are read back and upserted with the new payloads."""
        wanted, found = self._stored_for(payloads, with_vectors=True)
        if found:
            self.upsert([Point(id=p.id, vector=p.vector, payload=wanted[p.id]) for p in found])

    def delete(self, ids: Sequence[str]) -> None:
        canonical = [check_point_id(point_id) for point_id in ids]
        self._ready()
        for chunk in _chunks(canonical, IDS_PER_REQUEST):
            with self._errors("delete"):
                self._conn().delete(self.collection, ids=chunk, timeout=self.timeout)

    def flush(self) -> None:
        self._ready()
        with self._errors("flush"):
            self._conn().flush(self.collection, timeout=self.admin_timeout)

    def wait_until_indexed(self, timeout: float = 600.0, poll: float = 0.5) -> bool:
        """Wait until the vector index covers every flushed row and the query nodes search it;
        ``False`` if ``timeout`` ran out.

        A Milvus server builds indexes in the background after a flush; until then searches
        run on temporary per-segment indexes or by brute force, and the query nodes switch to
        the built index some 10 s after it is finished: the same search then returns different
        (approximate) hits. Call this after a bulk load, before searching, so that answers stop
        changing (Milvus Lite indexes synchronously and returns at once). Raises
        :class:`StoreError` when there is no index or its build failed.
        """
        self._ready()
        deadline = time.monotonic() + timeout
        while True:
            with self._errors("describe index"):
                info = self._conn().describe_index(self.collection, VECTOR_FIELD, timeout=self.timeout)
            if not info:
                raise StoreError(f"collection {self.collection!r} has no vector index")
            if str(info.get("state", "")).lower() == "failed":
                raise StoreError(f"building the vector index of {self.collection!r} failed: {info.get('index_state_fail_reason', '')}")
            indexed = int(info.get("indexed_rows", 0))
            if int(info.get("pending_index_rows", 0)) == 0 and indexed >= int(info.get("total_rows", 0)):
                if self.capabilities.lite or self._served_indexed_rows() >= indexed:
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll)

    def _served_indexed_rows(self) -> int:
        """Rows of the sealed segments the query nodes have loaded (with their index, where the
        segment is large enough to get one)."""
        with self._errors("list loaded segments"):
            segments = self._conn().list_loaded_segments(self.collection, timeout=self.timeout)
        return sum(int(segment.num_rows) for segment in segments)

    # -- reads -----------------------------------------------------------------------------

    def retrieve(self, ids: Sequence[str], *, with_vectors: bool = False) -> list[Point]:
        canonical = [check_point_id(point_id) for point_id in ids]
        if not canonical:
            return []
        self._ready()
        fields = [VECTOR_FIELD, "$meta"] if with_vectors else ["$meta"]
        points: list[Point] = []
        for chunk in _chunks(canonical, IDS_PER_REQUEST):
            with self._errors("retrieve"):
                rows = self._conn().get(
                    self.collection, ids=chunk, output_fields=fields, timeout=self.timeout, consistency_level="Strong"
                )
            points.extend(_to_point(row, with_vectors) for row in rows)
        return points

    def scroll(self, fields: Sequence[str] | None = None, batch_size: int = 1000) -> Iterator[Point]:
        self._ready()
        output_fields = ["$meta"] if fields is None else [ID_FIELD, *fields]
        for batch in self._batches("scroll", batch_size=batch_size, output_fields=output_fields, consistency_level="Strong"):
            for row in batch:
                yield _to_point(row, with_vectors=False)

    def _batches(self, action: str, **query: Any) -> Iterator[list[dict[str, Any]]]:
        """The rows of a ``query_iterator(**query)``, one batch at a time (errors translated)."""
        with self._errors(action):
            iterator = self._conn().query_iterator(self.collection, timeout=self.timeout, **query)
        try:
            while True:
                with self._errors(action):
                    batch = iterator.next()
                if not batch:
                    return
                yield batch
        finally:
            iterator.close()

    def _expression(self, filter: Any | None) -> tuple[str, dict[str, Any]]:
        """The compiled filter: ``(expr, params)``, or ``("", {})`` for no filter."""
        if filter is None:
            return "", {}
        return to_milvus_expr(filter, inline=not self.capabilities.filter_params, layout=self._key_layout())

    def search(
        self,
        vector: np.ndarray,
        *,
        k: int = 10,
        filter: Any | None = None,
        offset: int = 0,
        score_threshold: float | None = None,
    ) -> list[Hit]:
        """Nearest points by cosine; with a filter, the top ``k`` of the matching points.

        Milvus Lite's HNSW (FAISS) keeps ``ef`` candidates among *all* points and returns those
        that pass the filter, so a filter whose matches lie away from the query came back as a
        full page of the wrong items: filtered recall@10 of a 1% label on 8,677 clustered 512-d
        vectors was 0.29 at ``ef`` 128, 0.84 at 1024 and 1.0 at 4096. A filtered search on Lite
        therefore runs at an ``ef`` of the collection's size: the graph search then visits every
        point and is exact, and up to 8,677 points its cost is dominated by evaluating the
        filter in Python, not by ``ef`` (20-90 ms for ``ef`` 128 to 16384 alike). FAISS keeps
        its candidates in a list scanned at every step, so this costs the square of ``ef``: it
        is capped at :data:`LITE_FILTERED_EF`, and a larger collection (where ``ef`` 16384 had
        recall@10 0.88 for a 0.5% filter on 50,000 points) ranks a filter of at most
        :data:`EXACT_SEARCH_MAX_MATCHES` matches by their vectors instead, read in one query
        (one evaluation of the filter, which is most of the cost: Lite evaluates filters on
        payload fields in Python).

        A Milvus server filters during the graph search (hnswlib-style: the search goes on until
        ``ef`` *matching* candidates are found, and knowhere scans by brute force when few points
        match), so it keeps :attr:`search_ef`.

        A short filtered page is checked against the exact count of matches; when points are
        missing the search is repeated with a 4x wider ``ef`` (up to :data:`MAX_SEARCH_EF`), and
        where that still falls short, or few points match (:data:`EXACT_SEARCH_MAX_MATCHES`),
        the matches are ranked exactly by a scan. A full page costs one search.
        """
        query = check_vector(vector, self._ready())
        if k < 1 or offset < 0:
            raise ValueError("k must be >= 1 and offset >= 0")
        expr, params = self._expression(filter)
        ef = max(self.search_ef, k + offset)
        if expr and self.capabilities.lite:
            size = self.count()
            matches = self._few_matches(expr, params, EXACT_SEARCH_MAX_MATCHES) if size > LITE_FILTERED_EF else None
            if matches is not None:
                return _at_least(self._ranked(query, matches, k, offset), score_threshold)
            ef = max(ef, min(size, LITE_FILTERED_EF))
        hits = self._ann_search(query, expr, params, k, offset, ef)
        if expr and len(hits) < k:
            matches = self.count(filter)
            wanted = min(k, max(0, matches - offset))
            if len(hits) < wanted and matches > EXACT_SEARCH_MAX_MATCHES:
                while len(hits) < wanted and ef < MAX_SEARCH_EF:
                    ef = min(MAX_SEARCH_EF, ef * 4)
                    hits = self._ann_search(query, expr, params, k, offset, ef)
            if len(hits) < wanted:
                log.info("milvus: filtered search found %d of %d hits at ef=%d; ranking the matches exactly",
                         len(hits), wanted, ef)
                hits = self._exact_search(query, expr, params, k, offset)
        return _at_least(hits, score_threshold)

    def _ann_search(
        self, query: np.ndarray, expr: str, params: dict[str, Any], k: int, offset: int, ef: int
    ) -> list[Hit]:
        extra = {"filter_params": params} if params else {}
        with self._errors("search"):
            results = self._conn().search(
                self.collection,
                data=[query.tolist()],
                filter=expr,
                limit=k,
                offset=offset,
                output_fields=["$meta"],
                anns_field=VECTOR_FIELD,
                search_params={"metric_type": "COSINE", "params": {"ef": ef}},
                timeout=self.timeout,
                consistency_level=self.search_consistency,
                **extra,
            )
        return [
            Hit(id=hit["id"], score=float(hit["distance"]), payload=_payload(hit.get("entity", {})))
            for hit in results[0]
        ]

    def _exact_search(self, query: np.ndarray, expr: str, params: dict[str, Any], k: int, offset: int) -> list[Hit]:
        """Rank every point matching ``expr`` by exact cosine (a scan of ids and vectors), then
        fetch the payloads of the page only."""
        extra = {"filter_params": params} if params else {}
        rows = [row for batch in self._batches("search", batch_size=1000, filter=expr,
                                               output_fields=[ID_FIELD, VECTOR_FIELD],
                                               consistency_level=self.search_consistency, **extra)
                for row in batch]
        return self._ranked(query, rows, k, offset)

    def _few_matches(self, expr: str, params: dict[str, Any], most: int) -> list[dict[str, Any]] | None:
        """The ids and vectors of every point matching ``expr`` in one request, or None when more
        than ``most`` match (one evaluation of the filter, where counting first would be two)."""
        extra = {"filter_params": params} if params else {}
        with self._errors("search"):
            rows = self._conn().query(self.collection, filter=expr, output_fields=[ID_FIELD, VECTOR_FIELD],
                                      limit=most + 1, timeout=self.timeout,
                                      consistency_level=self.search_consistency, **extra)
        return rows if len(rows) <= most else None

    def _ranked(self, query: np.ndarray, rows: Sequence[Mapping[str, Any]], k: int, offset: int) -> list[Hit]:
        """Page ``offset:offset + k`` of ``rows`` (ids and vectors) ranked by exact cosine to
        ``query`` (ties by id), with the payloads of that page only."""
        if not rows:
            return []
        vectors = np.asarray([row[VECTOR_FIELD] for row in rows], dtype=np.float32)
        unit_query = query / max(float(np.linalg.norm(query)), 1e-12)
        scores = vectors @ unit_query / np.maximum(np.linalg.norm(vectors, axis=1), 1e-12)
        ids = [row[ID_FIELD] for row in rows]
        order = sorted(range(len(ids)), key=lambda i: (-float(scores[i]), ids[i]))[offset : offset + k]
        payloads = {p.id: p.payload for p in self.retrieve([ids[i] for i in order])}
        return [Hit(id=ids[i], score=float(scores[i]), payload=payloads.get(ids[i], {})) for i in order]

    def count(self, filter: Any | None = None) -> int:
        self._ready()
        expr, params = self._expression(filter)
        extra = {"filter_params": params} if params else {}
        with self._errors("count"):
            rows = self._conn().query(
                self.collection,
                filter=expr,
                output_fields=["count(*)"],
                timeout=self.timeout,
                consistency_level="Strong",
                **extra,
            )
        return int(rows[0]["count(*)"])


@dataclass(frozen=True)
class _Keys:
    """A collection's typed columns and its list / misfit record, read at one moment."""

    columns: dict[str, tuple[str, str]]
    """payload key -> (typed column, value kind): every typed column of the schema."""
    recorded: set[str] | None
    """The list and misfit properties set; None for a collection that keeps no record."""

    def layout(self) -> KeyLayout:
        if self.recorded is None:
            return KeyLayout()
        misfits = {name[len(MISFIT_PROPERTY):] for name in self.recorded if name.startswith(MISFIT_PROPERTY)}
        return KeyLayout(
            columns={key: column for key, column in self.columns.items() if key not in misfits},
            lists=frozenset(name[len(LIST_PROPERTY):] for name in self.recorded if name.startswith(LIST_PROPERTY)),
        )


def _at_least(hits: list[Hit], score_threshold: float | None) -> list[Hit]:
    """``hits`` scoring at least ``score_threshold``: applied to the returned top k, which is exact
    and the same on every deployment."""
    return [hit for hit in hits if score_threshold is None or hit.score >= score_threshold]


def _is_payload_key(key: Any) -> bool:
    return (isinstance(key, str) and bool(key) and key not in RESERVED_KEYS and not key.startswith("$")
            and not key.startswith(COLUMN_PREFIX))


def _column_value(value: Any, kind: str) -> Any:
    """``value`` as its typed column holds it, or None (missing, or a misfit: another kind, too long)."""
    if scalar_kind(value) != kind or (kind == "str" and len(value.encode("utf-8")) > MAX_VARCHAR_BYTES):
        return None
    return float(value) if kind == "number" else value


def _payload(row: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in row.items() if key not in RESERVED_KEYS and not key.startswith(COLUMN_PREFIX)}


def _to_point(row: Mapping[str, Any], with_vectors: bool) -> Point:
    vector = np.asarray(row[VECTOR_FIELD], dtype=np.float32) if with_vectors else None
    return Point(id=row[ID_FIELD], vector=vector, payload=_payload(row))


__all__ = ["Capabilities", "MilvusStore", "is_transient", "redact_uri", "row_bytes", "split_by_bytes"]
