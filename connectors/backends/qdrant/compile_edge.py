"""Compile the filter AST to Qdrant Edge (``qdrant_edge``) filter objects.

Same mapping as :mod:`.compile` (shared walker); only the model classes differ:
qdrant-edge-py has flat ``IsEmptyCondition(key)`` and ``RangeFloat`` instead of ``Range``, and
its ``GeoPoint`` takes ``(lon, lat)``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy

from .compile import compile_qdrant_like
from ...filters import Filter


class _EdgeDialect:
    """qdrant-edge-py's native model classes."""

    def __init__(self) -> None:
        import qdrant_edge

        self.edge = qdrant_edge

    def match_value(self, field: str, value: str | int | bool) -> Any:
        if isinstance(value, bool):
            # qdrant-edge-py converts a Python bool to the integer 1/0 (bool subclasses int), which
            # then never matches a boolean payload; numpy.bool_ is not an int and stays a bool.
            value = numpy.bool_(value)
        return self.edge.FieldCondition(key=field, match=self.edge.MatchValue(value))

    def match_any(self, field: str, values: list[str]) -> Any:
        return self.edge.FieldCondition(key=field, match=self.edge.MatchAny(values))

    def match_prefix(self, field: str, prefix: str) -> Any:
        return self.edge.FieldCondition(key=field, match=self.edge.MatchPrefix(prefix))

    def range(self, field: str, **bounds: float) -> Any:
        return self.edge.FieldCondition(key=field, range=self.edge.RangeFloat(**bounds))

    def is_empty(self, field: str) -> Any:
        return self.edge.IsEmptyCondition(field)

    def geo_radius(self, field: str, lat: float, lon: float, meters: float) -> Any:
        return self.edge.FieldCondition(key=field, geo_radius=self.edge.GeoRadius(self.edge.GeoPoint(lon, lat), meters))

    def filter(self, *, must: Sequence[Any] = (), should: Sequence[Any] = (), must_not: Sequence[Any] = ()) -> Any:
        return self.edge.Filter(must=list(must) or None, should=list(should) or None, must_not=list(must_not) or None)


def to_edge_filter(node: Filter) -> Any:
    """``node`` as a ``qdrant_edge.Filter``."""
    return compile_qdrant_like(node, _EdgeDialect())


__all__ = ["to_edge_filter"]
