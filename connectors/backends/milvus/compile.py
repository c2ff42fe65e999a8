"""Compile the filter AST to a Milvus boolean expression over dynamic fields.

The Milvus store keeps payload keys as dynamic fields, so payload key ``colour`` is the
expression name ``colour``. Field names come only from the validated AST (they match
``[A-Za-z_][A-Za-z0-9_]{0,63}`` and are not keywords); values are never pasted: they become
template parameters (``{p0}`` + ``params``) or, with ``inline=True`` for servers without
expression templates (Milvus < 2.5, Milvus Lite), literals escaped here.

Milvus uses SQL-style NULL logic for a missing dynamic field (``not (f == 1)`` is *not* true
when ``f`` is missing), while the language says a comparison on a missing field is false and
its negation true. Every comparison is therefore guarded as ``((exists f) and ...)``, which is
a real false for a missing field. List payloads are matched element-wise for ``=`` / ``in``
with ``json_contains_any``; ranges and ``startswith`` see scalars only
(documented in docs/filters.md).

A store that knows more about its keys says so with a :class:`KeyLayout`, and the expression
gets cheaper without changing what it matches: ``json_contains_any`` (a per-row parse of the
JSON, about ten times the cost of a comparison on Milvus Lite) is left out for keys that never
held a list, and a key with a typed column (a scalar copy of the key, null where the key is
missing) is compared on that column, which Milvus evaluates without reading JSON, whenever the
literal has the column's type. Without a layout every key may hold a list and none has a column.

Dates are numbers (Unix seconds) and compile as any range. Milvus 2.3-2.5 has no geo type: a
box (``within box``) becomes numeric ranges on the point's JSON keys, ``f["lat"]`` and
``f["lon"]`` (as in Qdrant, exact); a radius (``within D of``)
would need a distance the expression language cannot compute, so it is refused with
:class:`UnsupportedFilterError`, whose message gives the box around the circle to use instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from ...filters import (
    And,
    Compare,
    Exists,
    Filter,
    GeoBox,
    GeoRadius,
    In,
    Not,
    Or,
    Scalar,
    StartsWith,
    UnsupportedFilterError,
    make_geo_box,
    to_text,
)

_OPS = {"=": "==", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
#: escapes for a Milvus double-quoted string literal (other characters are sent as they are)
_STRING_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def milvus_string(value: str) -> str:
    """``value`` as a Milvus double-quoted string literal that cannot end early."""
    return '"' + "".join(_STRING_ESCAPES.get(ch, ch) for ch in value) + '"'


def milvus_literal(value: Any) -> str:
    """A Milvus literal for a scalar or a list of scalars."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UnsupportedFilterError("Milvus expressions cannot hold NaN or infinity")
        return float.__repr__(value)  # a date literal (Instant) is written as its number
    if isinstance(value, str):
        return milvus_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(milvus_literal(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as a Milvus literal")


def prefix_range(prefix: str) -> tuple[str, str | None]:
    """``(low, high)``: the strings starting with ``prefix`` are exactly those with
    ``low <= s < high`` in code-point order (``high`` is ``None`` when there is no upper bound).

    ``startswith`` compiles to this range instead of ``LIKE``: Milvus 2.3 ignores escaped
    wildcards in ``LIKE`` (``"al\\_%"`` matches nothing) and Milvus Lite drops rows when a ``LIKE``
    meets an ``or`` in the same conjunction, while string ranges compare bytes, which for UTF-8
    is code-point order, on every version. Any prefix works, quotes, ``%``, ``_`` and
    backslashes included.
    """
    head = prefix
    while head:
        last = ord(head[-1]) + 1
        if last == 0xD800:  # skip the surrogates, which no UTF-8 string holds
            last = 0xE000
        if last <= 0x10FFFF:
            return prefix, head[:-1] + chr(last)
        head = head[:-1]
    return prefix, None


#: the largest integer a DOUBLE column holds exactly
EXACT_DOUBLE_INT = 2**53


@dataclass(frozen=True)
class KeyLayout:
    """What a store knows about its payload keys (see the module docstring)."""

    columns: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    """payload key -> (column name, :func:`scalar_kind` of every value it holds)."""
    lists: frozenset[str] | None = None
    """The keys that may hold a list; ``None`` when unknown (any key may)."""

    def may_hold_list(self, key: str) -> bool:
        return self.lists is None or key in self.lists


def scalar_kind(value: Any) -> str | None:
    """``"str"``, ``"number"`` or ``"bool"`` for a value a typed column holds exactly, else ``None``."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "number" if abs(value) <= EXACT_DOUBLE_INT else None
    if isinstance(value, float):
        return "number" if math.isfinite(value) else None
    if isinstance(value, str):
        return "str"
    return None


class _Compiler:
    def __init__(self, inline: bool, layout: KeyLayout) -> None:
        self.inline = inline
        self.layout = layout
        self.params: dict[str, Any] = {}

    def column(self, key: str, *values: Any) -> str | None:
        """The typed column to compare ``key`` with ``values`` on, or None for the JSON key."""
        entry = self.layout.columns.get(key)
        if entry is None or any(scalar_kind(value) != entry[1] for value in values):
            return None
        return entry[0]

    def value(self, value: Any) -> str:
        if self.inline:
            return milvus_literal(value)
        name = f"p{len(self.params)}"
        self.params[name] = list(value) if isinstance(value, tuple) else float(value) if isinstance(value, float) else value
        return "{" + name + "}"

    def expr(self, node: Filter) -> str:
        if isinstance(node, And):
            return "(" + " and ".join(self.expr(child) for child in node.operands) + ")"
        if isinstance(node, Or):
            return "(" + " or ".join(self.expr(child) for child in node.operands) + ")"
        if isinstance(node, Not):
            return f"(not {self.expr(node.operand)})"
        if isinstance(node, Exists):
            column = self.layout.columns.get(node.field)
            return f"({column[0]} is not null)" if column else _exists(node.field)
        if isinstance(node, Compare):
            column = self.column(node.field, node.value)
            if column:
                return _guard_column(column, f"{column} {_OPS[node.op]} {self.value(node.value)}")
            if node.op == "=":
                return _guard(node.field, self.one_of(node.field, [node.value]))
            return _guard(node.field, f"{node.field} {_OPS[node.op]} {self.value(node.value)}")
        if isinstance(node, In):
            groups = _type_groups(node.values)
            columns = [self.column(node.field, *group) for group in groups]
            if not any(columns):
                return _guard(node.field, " or ".join(self.one_of(node.field, group) for group in groups))
            return "(" + " or ".join(_guard_column(column, f"{column} in {self.value(group)}") if column
                                     else _guard(node.field, self.one_of(node.field, group))
                                     for column, group in zip(columns, groups)) + ")"
        if isinstance(node, StartsWith):
            low, high = prefix_range(node.prefix)
            column = self.column(node.field, node.prefix)
            name = column or node.field
            bound = f"{name} >= {self.value(low)}"
            if high is not None:
                bound += f" and {name} < {self.value(high)}"
            return _guard_column(column, bound) if column else _guard(node.field, bound)
        if isinstance(node, GeoBox):
            return self.geo_box(node)
        if isinstance(node, GeoRadius):
            raise UnsupportedFilterError(
                f"Milvus cannot filter by distance ({to_text(node)}): it has no geo type. "
                f"Use the box around the circle instead: {to_text(radius_box(node))}"
            )
        raise TypeError(f"not a filter node: {node!r}")

    def geo_box(self, node: GeoBox) -> str:
        """Ranges on the point's ``lat`` / ``lon`` keys, false unless both are there."""
        lat, lon = f'{node.field}["lat"]', f'{node.field}["lon"]'
        lats = f"{lat} >= {self.value(node.south)} and {lat} <= {self.value(node.north)}"
        joiner = "and" if node.west <= node.east else "or"  # west > east: across the 180th meridian
        lons = f"{lon} >= {self.value(node.west)} {joiner} {lon} <= {self.value(node.east)}"
        return f"((exists {lat}) and (exists {lon}) and ({lats}) and ({lons}))"

    def one_of(self, field: str, values: list[Scalar]) -> str:
        """The field (or an element of it) equals one of ``values`` (all of one type).

        Milvus refuses mixed-type lists, so callers group by type; scalars are compared one by
        one because Milvus Lite's ``in`` fails on list payloads, and elements are tested with
        ``json_contains_any`` (only for a key that may hold a list) because
        ``json_contains(f, -1)`` does not parse.
        """
        scalars = " or ".join(f"{field} == {self.value(value)}" for value in values)
        if not self.layout.may_hold_list(field):
            return scalars
        return f"{scalars} or json_contains_any({field}, {self.value(values)})"


def _type_groups(values: tuple[Scalar, ...]) -> list[list[Scalar]]:
    groups: dict[str, list[Scalar]] = {}
    for value in values:
        kind = "bool" if isinstance(value, bool) else "str" if isinstance(value, str) else "number"
        groups.setdefault(kind, []).append(value)
    return list(groups.values())


def _guard(field: str, condition: str) -> str:
    """``condition`` made two-valued: false (not NULL) when ``field`` is missing."""
    # "(exists f) and" rather than "exists f and": Milvus 2.3 parses the latter as exists(f and ...)
    return f"({_exists(field)} and ({condition}))"


def _guard_column(column: str, condition: str) -> str:
    """``condition`` on a typed column made two-valued: false (not NULL) where the column is null."""
    return f"({column} is not null and ({condition}))"


def _exists(field: str) -> str:
    # Milvus' ``exists`` is two-valued and false for a missing or null field; unlike Qdrant's it
    # is true for an empty list (no two-valued test for that exists; see docs/filters.md)
    return f"(exists {field})"


#: mean Earth radius (metres), as in the great-circle distance of docs/filters.md
EARTH_RADIUS_M = 6_371_008.8


def radius_box(node: GeoRadius) -> GeoBox:
    """The smallest latitude/longitude box holding every point within ``node``'s radius."""
    reach = math.degrees(node.meters / EARTH_RADIUS_M)
    south, north = max(-90.0, node.lat - reach), min(90.0, node.lat + reach)
    if south == -90.0 or north == 90.0:  # a pole inside: every longitude
        return make_geo_box(node.field, math.floor(south * 1e6) / 1e6, -180.0, math.ceil(north * 1e6) / 1e6, 180.0, ValueError)
    spread = math.degrees(math.asin(min(1.0, math.sin(node.meters / EARTH_RADIUS_M) / math.cos(math.radians(node.lat)))))
    west, east = node.lon - spread, node.lon + spread
    if spread >= 180.0 or east - west >= 360.0:
        west, east = -180.0, 180.0
    west = west + 360.0 if west < -180.0 else west
    east = east - 360.0 if east > 180.0 else east
    # rounded outwards to 6 decimals (~0.1 m), so the box still holds the whole circle
    return make_geo_box(node.field, math.floor(south * 1e6) / 1e6, math.floor(west * 1e6) / 1e6,
                        math.ceil(north * 1e6) / 1e6, math.ceil(east * 1e6) / 1e6, ValueError)


def to_milvus_expr(node: Filter, *, inline: bool = False, layout: KeyLayout | None = None) -> tuple[str, dict[str, Any]]:
    """``(expression, params)`` for Milvus ``filter=`` / ``filter_params=``.

    With ``inline=False`` every value is a ``{pN}`` template parameter (Milvus >= 2.5); with
    ``inline=True`` values are escaped literals and ``params`` is empty. ``layout``: what the
    store knows about its keys (the default assumes nothing).
    """
    compiler = _Compiler(inline, layout or KeyLayout())
    return compiler.expr(node), compiler.params


__all__ = ["KeyLayout", "milvus_literal", "scalar_kind", "milvus_string", "prefix_range", "radius_box", "to_milvus_expr"]
