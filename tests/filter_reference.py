"""Test helpers for the filter language: a pure-Python reference evaluator, a planted payload set
and hypothesis strategies for random filters over it (used by test_filters / test_filter_fuzz).
"""

from __future__ import annotations

import math
import os
import uuid
from typing import Any, Mapping

from hypothesis import strategies as st

from conftest import embedded_options

from clip_ingest.connectors.backends import registry
from clip_ingest.connectors.filters import (
    And,
    Compare,
    Exists,
    Filter,
    GeoBox,
    GeoRadius,
    In,
    Instant,
    Not,
    Or,
    StartsWith,
)

#: examples per cross-backend property test (each one is a real query in every store)
FUZZ_EXAMPLES = int(os.environ.get("CLIP_INGEST_FUZZ_EXAMPLES", "200"))
#: examples per parser / compiler property test (no store: 10,000 cost about a minute in all)
PARSER_FUZZ_EXAMPLES = int(os.environ.get("CLIP_INGEST_PARSER_FUZZ_EXAMPLES", "10000"))

# ---------------------------------------------------------------- reference semantics (docs/filters.md)


def _values(payload: Mapping[str, Any], field: str) -> list[Any]:
    """The values a condition looks at: list elements, or the scalar; nothing when missing/null."""
    value = payload.get(field)
    if value is None:
        return []
    return [v for v in value if v is not None] if isinstance(value, list) else [value]


def _equal(value: Any, literal: Any) -> bool:
    if isinstance(literal, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(literal, bool) and value == literal
    if isinstance(literal, str) or isinstance(value, str):
        return isinstance(value, str) and isinstance(literal, str) and value == literal
    return isinstance(value, (int, float)) and value == literal


def _in_range(value: Any, op: str, bound: float) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return {"<": value < bound, "<=": value <= bound, ">": value > bound, ">=": value >= bound}[op]


#: mean Earth radius (metres) of the reference great-circle distance
EARTH_RADIUS_M = 6_371_008.8


def great_circle_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine distance in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def geo_point(value: Any) -> tuple[float, float] | None:
    """``(lat, lon)`` of a payload geo point ``{"lat": n, "lon": n}``; None for anything else."""
    if not isinstance(value, Mapping) or set(value) != {"lat", "lon"}:
        return None
    lat, lon = value["lat"], value["lon"]
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in (lat, lon)):
        return None
    return (lat, lon) if -90 <= lat <= 90 and -180 <= lon <= 180 else None


def in_box(point: tuple[float, float], box: GeoBox) -> bool:
    lat, lon = point
    lons = box.west <= lon <= box.east if box.west <= box.east else (lon >= box.west or lon <= box.east)
    return box.south <= lat <= box.north and lons


def evaluate(node: Filter, payload: Mapping[str, Any], *, null_exists: bool = False) -> bool:
    """Whether ``payload`` matches ``node`` under the documented semantics.

    Ranges and ``startswith`` are evaluated on scalar values only (the portable subset).
    ``null_exists``: ``exists f`` holds for an explicit ``null`` (Milvus 2.3 servers, see
    docs/filters.md).
    """
    if isinstance(node, And):
        return all(evaluate(child, payload, null_exists=null_exists) for child in node.operands)
    if isinstance(node, Or):
        return any(evaluate(child, payload, null_exists=null_exists) for child in node.operands)
    if isinstance(node, Not):
        return not evaluate(node.operand, payload, null_exists=null_exists)
    if isinstance(node, (GeoRadius, GeoBox)):
        point = geo_point(payload.get(node.field))
        if point is None:
            return False
        if isinstance(node, GeoBox):
            return in_box(point, node)
        return great_circle_m(node.lat, node.lon, *point) <= node.meters
    values = _values(payload, node.field)
    if isinstance(node, Exists):
        return bool(values) or (null_exists and node.field in payload and payload[node.field] is None)
    if isinstance(node, Compare):
        if node.op == "=":
            return any(_equal(v, node.value) for v in values)
        scalar = payload.get(node.field)
        return not isinstance(scalar, list) and _in_range(scalar, node.op, node.value)
    if isinstance(node, In):
        return any(_equal(v, literal) for v in values for literal in node.values)
    if isinstance(node, StartsWith):
        scalar = payload.get(node.field)
        return isinstance(scalar, str) and scalar.startswith(node.prefix)
    raise TypeError(node)


# ---------------------------------------------------------------- planted data

#: strings chosen to break naive escaping (quotes, backslashes, LIKE wildcards, expression syntax)
NASTY = ["red", "re", "Red", 'x" or id != "', "a\\b", "50%", "a_b", "a%b", "é", "🙂 smile", "it's", "line\nbreak", ""]
NAMES = ["alpha", "alphabet", "al_pha", "al%pha", "beta", "be", 'q"uote', "tab\there", "ünï", "x' or '1'='1"]
NUMBERS = [-3, 0, 1, 2, 2.0, 2.5, 7, 1e6, -0.5, 9007199254740992]
#: Unix seconds of photos "taken": 2019-06-01T00:00Z exactly, a second and a millisecond either
#: side, a pre-1970 photo, 2024 with a fraction
TAKEN = [1559347200, 1559347199, 1559347201, 1559347200.001, -631152000, 1717243200.5, 946684800, 1262304000]
#: geo points (lat, lon): Paris, Versailles (17 km from Paris), Lyon, Zurich, Sydney, Suva (Fiji),
#: Taveuni (across the 180th meridian from Suva), Reykjavik, Quito, near the North Pole, McMurdo
PLACES = [(48.8566, 2.3522), (48.8049, 2.1204), (45.764, 4.8357), (47.3769, 8.5417), (-33.8688, 151.2093),
          (-18.1416, 178.4419), (-16.8, -179.97), (64.1466, -21.9426), (-0.1807, -78.4678), (89.9, 45.0),
          (-77.85, 166.67)]
#: geo field values that are not points (every backend must treat them as no position)
NOT_POINTS: list[Any] = ["48.85,2.35", {"lat": 48.8566}, 48.8566]


def planted_payloads() -> list[dict[str, Any]]:
    """36 payloads covering missing/null fields, int vs float, lists, booleans.

    No empty lists: ``exists`` on ``[]`` is the one documented difference between backends.
    """
    payloads: list[dict[str, Any]] = []
    for i in range(36):
        payload: dict[str, Any] = {"index": i}
        if i % 6 != 5:
            payload["colour"] = None if i % 11 == 7 else NASTY[i % len(NASTY)]
        if i % 4 != 3:
            payload["n"] = NUMBERS[i % len(NUMBERS)]
        if i % 3 == 0:
            payload["tags"] = [NASTY[(i + k) % len(NASTY)] for k in range(1 + i % 3)]
        elif i % 3 == 1:
            payload["tags"] = NASTY[(i * 5) % len(NASTY)]
        if i % 5 != 4:
            payload["flag"] = i % 2 == 0
        if i % 7 != 6:
            payload["name"] = NAMES[i % len(NAMES)]
        if i % 9 != 8:
            payload["taken_at"] = TAKEN[i % len(TAKEN)]
        if i % 12 < len(PLACES):
            lat, lon = PLACES[(i * 5) % len(PLACES)]
            payload["gps"] = {"lat": lat, "lon": lon}
        elif i % 12 == 11:
            payload["gps"] = NOT_POINTS[i % len(NOT_POINTS)]
        payloads.append(payload)
    return payloads


def planted_id(index: int) -> str:
    """Deterministic UUID point id for planted payload ``index``."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"planted/{index}"))


# ---------------------------------------------------------------- random filters over the planted fields

_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
_strings = st.sampled_from(NASTY + NAMES) | st.text(_chars, max_size=6)
_numbers = st.sampled_from(NUMBERS) | st.integers(-10, 10) | st.floats(-10, 10, allow_nan=False).map(lambda x: round(x, 2))
_instants = st.sampled_from(TAKEN).map(lambda t: Instant(t)) | st.integers(-2208988800000, 4102444800000).map(
    lambda ms: Instant(ms / 1000)
)
#: radius centres and lengths, boxes' edges: chosen so that no planted point is within 0.5 % of a
#: circle's edge or 1e-4 degrees of a box's (checked by test_filter_fuzz), where backends may round
GEO_CENTRES = [(48.8566, 2.3522), (45.0, 5.0), (-18.0, 179.0), (0.0, -78.0), (90.0, 0.0), (-60.0, 100.0)]
GEO_RADII_M = [1_000.0, 25_000.0, 150_000.0, 800_000.0, 2_500_000.0, 9_000_000.0, 20_000_000.0]
BOX_LATS = [-90.0, -80.0, -45.0, -25.0, -5.0, 10.0, 30.0, 46.5, 48.83, 50.0, 70.0, 90.0]
BOX_LONS = [-180.0, -170.0, -100.0, -30.0, 0.0, 2.2, 3.0, 6.0, 40.0, 120.0, 170.0, 179.0, 180.0]


def geo_atoms(field: str = "gps") -> st.SearchStrategy[Filter]:
    """Radius and box predicates over the planted places (a box's west may be east of its east)."""
    radius = st.builds(lambda c, r: GeoRadius(field, c[0], c[1], r), st.sampled_from(GEO_CENTRES), st.sampled_from(GEO_RADII_M))
    box = st.builds(
        lambda lats, w, e: GeoBox(field, min(lats), w, max(lats), e),
        st.lists(st.sampled_from(BOX_LATS), min_size=2, max_size=2), st.sampled_from(BOX_LONS), st.sampled_from(BOX_LONS),
    )
    return radius | box


_prefixes = st.sampled_from(["", "a", "al", "al_", "al%", "re", "x\"", "🙂", "ü", "be", "q\"", "tab\\", "x'"]) | st.text(
    alphabet="ab_%\"'\\ ", max_size=3
)


def _atoms() -> st.SearchStrategy[Filter]:
    text_fields = st.sampled_from(["colour", "name", "tags"])
    return st.one_of(
        st.builds(Compare, text_fields, st.just("="), _strings),
        st.builds(lambda f, vs: In(f, tuple(vs)), text_fields, st.lists(_strings, min_size=1, max_size=4)),
        st.builds(StartsWith, st.sampled_from(["colour", "name"]), _prefixes),
        st.builds(Compare, st.just("n"), st.sampled_from(["=", "<", "<=", ">", ">="]), _numbers),
        st.builds(lambda vs: In("n", tuple(vs)), st.lists(_numbers, min_size=1, max_size=4)),
        st.builds(Compare, st.just("flag"), st.just("="), st.booleans()),
        st.builds(lambda vs: In("flag", tuple(vs)), st.lists(st.booleans(), min_size=1, max_size=2)),
        st.builds(Exists, st.sampled_from(["colour", "n", "tags", "flag", "name", "nothing"])),
        # cross-type comparisons that every backend must treat as false
        st.builds(Compare, st.sampled_from(["colour", "tags"]), st.just("="), _numbers),
        st.builds(Compare, st.just("n"), st.just("="), _strings),
    )


def _photo_atoms() -> st.SearchStrategy[Filter]:
    return st.one_of(
        st.builds(Compare, st.just("taken_at"), st.sampled_from(["<", "<=", ">", ">="]), _instants),
        geo_atoms(),
        st.builds(Exists, st.sampled_from(["taken_at", "gps"])),
        # a box or a circle on a field that holds no point: false everywhere (a date against a
        # string field is the documented SQL-unknown difference of Milvus, like any number)
        geo_atoms("n"),
        geo_atoms("colour"),
    )


def filters(max_leaves: int = 8, *, geo_radius: bool = True) -> st.SearchStrategy[Filter]:
    """Random filters (and / or / not over the atoms) on the planted fields, dates and places
    included (``geo_radius=False``: no radius, which Milvus refuses)."""
    atoms = _atoms() | _photo_atoms()
    if not geo_radius:
        atoms = atoms.filter(lambda node: not isinstance(node, GeoRadius))
    return st.recursive(
        atoms,
        lambda children: st.one_of(
            st.builds(Not, children),
            st.builds(lambda xs: And(tuple(xs)), st.lists(children, min_size=2, max_size=3)),
            st.builds(lambda xs: Or(tuple(xs)), st.lists(children, min_size=2, max_size=3)),
        ),
        max_leaves=max_leaves,
    )


# ---------------------------------------------------------------- real stores for the cross-backend tests

#: the targets the cross-backend tests run on, and the options of an embedded store of one under a folder
TARGETS, store_options = registry.TARGETS, embedded_options
