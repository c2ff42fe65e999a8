"""Compile the filter AST to Qdrant filters (qdrant-client models; the walker is shared with Qdrant Edge).

Mapping (see docs/filters.md for the semantics it implements):

* ``f = "s"`` / ``f = true`` -> ``match: value``; ``f = 2`` -> ``range gte=2, lte=2`` so that ints
  and floats compare by value (Qdrant's exact match never matches a float payload);
* ranges -> ``range``; ``f in [...]`` -> ``match: any`` for strings, one condition per number or
  bool otherwise (in a ``should``);
* ``exists f`` -> ``must_not: is_empty f``; ``startswith`` -> ``match: prefix``;
* a date is a number (Unix seconds): ``range`` as any number;
* ``within D of (lat, lon)`` -> ``geo_radius``; ``within box (S, W) to (N, E)`` -> ranges on the
  point's nested keys ``f.lat`` and ``f.lon`` (two ranges in a ``should`` across the 180th meridian),
  as for Milvus. Not ``geo_bounding_box``: with a geo index, Qdrant (Edge 0.9) answers boxes
  reaching latitude 90 or -90 or spanning all longitudes with too few points (a box from -90 to 0,
  all longitudes, returns none), while ranges are exact with or without an index;
* ``not`` / ``and`` / ``or`` -> ``must_not`` / ``must`` / ``should``.

Qdrant itself gives the list semantics we document: a condition on a list payload holds when
any element satisfies it, and ``must_not`` of a condition on a missing field holds.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

from ...filters import And, Compare, Exists, Filter, GeoBox, GeoRadius, In, Not, Or, Scalar, StartsWith

_RANGE_KEYS = {"<": "lt", "<=": "lte", ">": "gt", ">=": "gte"}


class QdrantDialect(Protocol):
    """Builds one flavour of Qdrant filter objects (qdrant-client or qdrant-edge models)."""

    def match_value(self, field: str, value: str | int | bool) -> Any: ...

    def match_any(self, field: str, values: list[str]) -> Any: ...

    def match_prefix(self, field: str, prefix: str) -> Any: ...

    def range(self, field: str, **bounds: float) -> Any: ...

    def is_empty(self, field: str) -> Any: ...

    def geo_radius(self, field: str, lat: float, lon: float, meters: float) -> Any: ...

    def filter(self, *, must: Sequence[Any] = (), should: Sequence[Any] = (), must_not: Sequence[Any] = ()) -> Any: ...


def compile_qdrant_like(node: Filter, dialect: QdrantDialect) -> Any:
    """The top-level filter object for ``node`` in ``dialect``."""
    if isinstance(node, And):
        return dialect.filter(must=[_condition(child, dialect) for child in node.operands])
    if isinstance(node, Or):
        return dialect.filter(should=[_condition(child, dialect) for child in node.operands])
    if isinstance(node, Not):
        return dialect.filter(must_not=[_condition(node.operand, dialect)])
    return dialect.filter(must=[_condition(node, dialect)])


def _condition(node: Filter, dialect: QdrantDialect) -> Any:
    """A condition usable inside ``must``/``should``/``must_not`` (nested filters are conditions)."""
    if isinstance(node, Compare):
        if node.op == "=":
            return _equals(node.field, node.value, dialect)
        return dialect.range(node.field, **{_RANGE_KEYS[node.op]: float(node.value)})
    if isinstance(node, In):
        strings = [v for v in node.values if isinstance(v, str)]
        others = [_equals(node.field, v, dialect) for v in node.values if not isinstance(v, str)]
        conditions = ([dialect.match_any(node.field, strings)] if strings else []) + others
        return conditions[0] if len(conditions) == 1 else dialect.filter(should=conditions)
    if isinstance(node, Exists):
        return dialect.filter(must_not=[dialect.is_empty(node.field)])
    if isinstance(node, StartsWith):
        return dialect.match_prefix(node.field, node.prefix)
    if isinstance(node, GeoRadius):
        return dialect.geo_radius(node.field, node.lat, node.lon, node.meters)
    if isinstance(node, GeoBox):
        return _box(node, dialect)
    return compile_qdrant_like(node, dialect)


def _box(node: GeoBox, dialect: QdrantDialect) -> Any:
    """Both of the point's keys within the box's ranges (false for anything that is no point)."""
    lat, lon = f"{node.field}.lat", f"{node.field}.lon"
    lats = dialect.range(lat, gte=node.south, lte=node.north)
    if node.west <= node.east:
        lons = dialect.range(lon, gte=node.west, lte=node.east)
    else:  # across the 180th meridian
        lons = dialect.filter(should=[dialect.range(lon, gte=node.west), dialect.range(lon, lte=node.east)])
    return dialect.filter(must=[lats, lons])


def _equals(field: str, value: Scalar, dialect: QdrantDialect) -> Any:
    if isinstance(value, (str, bool)):
        return dialect.match_value(field, value)
    return dialect.range(field, gte=float(value), lte=float(value))


class _ClientDialect:
    """qdrant-client's pydantic models (server and local mode)."""

    def __init__(self) -> None:
        from qdrant_client import models

        self.models = models

    def match_value(self, field: str, value: str | int | bool) -> Any:
        return self.models.FieldCondition(key=field, match=self.models.MatchValue(value=value))

    def match_any(self, field: str, values: list[str]) -> Any:
        return self.models.FieldCondition(key=field, match=self.models.MatchAny(any=values))

    def match_prefix(self, field: str, prefix: str) -> Any:
        return self.models.FieldCondition(key=field, match=self.models.MatchPrefix(prefix=prefix))

    def range(self, field: str, **bounds: float) -> Any:
        return self.models.FieldCondition(key=field, range=self.models.Range(**bounds))

    def is_empty(self, field: str) -> Any:
        return self.models.IsEmptyCondition(is_empty=self.models.PayloadField(key=field))

    def geo_radius(self, field: str, lat: float, lon: float, meters: float) -> Any:
        center = self.models.GeoPoint(lat=lat, lon=lon)
        return self.models.FieldCondition(key=field, geo_radius=self.models.GeoRadius(center=center, radius=meters))

    def filter(self, *, must: Sequence[Any] = (), should: Sequence[Any] = (), must_not: Sequence[Any] = ()) -> Any:
        return self.models.Filter(must=list(must) or None, should=list(should) or None, must_not=list(must_not) or None)


def to_qdrant_filter(node: Filter) -> Any:
    """``node`` as a ``qdrant_client.models.Filter`` (for a Qdrant server or qdrant-client local mode)."""
    return compile_qdrant_like(node, _ClientDialect())


__all__ = ["QdrantDialect", "compile_qdrant_like", "to_qdrant_filter"]
