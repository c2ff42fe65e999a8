"""Milvus facts that the descriptor and the store share, kept apart from the store so that
describing the backend (``--help``, config checks) never imports pymilvus."""

from __future__ import annotations

#: consistency levels of Milvus searches
CONSISTENCY_LEVELS = ("Strong", "Bounded", "Session", "Eventually")

#: default size of one write request (Milvus refuses requests over 64 MiB)
DEFAULT_MAX_REQUEST_BYTES = 16 * 2**20

#: CollectionSpec.indexed_fields type -> JSON cast type of a Milvus JSON-path index
#: (``datetime`` casts to DOUBLE: dates are stored as Unix seconds and compared as numbers)
JSON_CAST_TYPES = {"keyword": "VARCHAR", "integer": "DOUBLE", "float": "DOUBLE", "bool": "BOOL", "datetime": "DOUBLE",
                   "geo": "DOUBLE"}
