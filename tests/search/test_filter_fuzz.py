"""Property tests: every backend selects exactly what the reference evaluator selects, and hostile
text only ever raises FilterSyntaxError.

Parser and compiler properties run 10,000 examples each (CLIP_INGEST_PARSER_FUZZ_EXAMPLES), the
date and place round trips a tenth of that; the cross-backend ones, a real query per example in
every store, 200 (CLIP_INGEST_FUZZ_EXAMPLES). The random filters include dates and places, on
every backend (a radius must be refused by Milvus); qdrant-client's local mode runs the date and
place filters alone.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clip_ingest.connectors.backends import CollectionSpec, Point, open_store
from clip_ingest.connectors.backends.milvus.store import MilvusStore
from clip_ingest.connectors.backends.qdrant.client_store import QdrantClientStore
from clip_ingest.connectors.backends.qdrant.compile_edge import to_edge_filter
from clip_ingest.connectors.backends.milvus.compile import milvus_string, radius_box, to_milvus_expr
from clip_ingest.connectors.backends.qdrant.compile import to_qdrant_filter
from clip_ingest.connectors.backends.registry import BACKENDS
from clip_ingest.connectors.filters import (
    And,
    Compare,
    FilterSyntaxError,
    GeoBox,
    GeoRadius,
    Not,
    Or,
    UnsupportedFilterError,
    filter_fields,
    make_geo_box,
    make_geo_radius,
    parse_filter,
    to_dict,
    to_text,
)
from filter_reference import (
    BOX_LATS,
    BOX_LONS,
    FUZZ_EXAMPLES,
    GEO_CENTRES,
    GEO_RADII_M,
    PARSER_FUZZ_EXAMPLES,
    PLACES,
    TARGETS,
    evaluate,
    filters,
    great_circle_m,
    planted_id,
    planted_payloads,
    store_options,
)

PAYLOADS = planted_payloads()
IDS = [planted_id(i) for i in range(len(PAYLOADS))]
DIM = 4
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
PARSER_FUZZ = settings(max_examples=PARSER_FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
#: the date and place round trips: a tenth of the parser examples (their cases are few and regular)
PHOTO_PARSER_FUZZ = settings(max_examples=max(PARSER_FUZZ_EXAMPLES // 10, 50), deadline=None,
                             suppress_health_check=list(HealthCheck))


SERVER = "milvus-server"
#: qdrant-client's local mode (its own Python implementation of Qdrant's filters)
LOCAL = "qdrant-local"
#: Qdrant Edge with payload indexes on the photo fields
INDEXED = "qdrant-edge-indexed"
#: every embedded backend, plus the real Milvus server that .ci/run starts
STORE_TARGETS = [*TARGETS, pytest.param(SERVER, marks=pytest.mark.milvus_server)]


def plant(store, indexes: dict[str, str] | None = None) -> None:
    """Fill ``store`` with the planted payloads (fresh collection, with these payload indexes)."""
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(PAYLOADS), DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store.ensure_collection(CollectionSpec(store.collection, DIM, "planted-model", indexed_fields=indexes or {}), recreate=True)
    store.upsert([Point(IDS[i], vectors[i], dict(p)) for i, p in enumerate(PAYLOADS)])
    store.flush()


@pytest.fixture(scope="module")
def planted_stores(tmp_path_factory):
    """The planted payloads in one real embedded store per backend (the server's is added on first use)."""
    root = tmp_path_factory.mktemp("planted")
    stores = {}
    for target in TARGETS:
        stores[target] = open_store(target, "planted", **store_options(target, root))
        plant(stores[target])
    yield stores
    for store in stores.values():
        store.close()


@pytest.fixture
def planted(request, planted_stores, target):
    """The planted store of ``target``."""
    if target == SERVER and SERVER not in planted_stores:
        server = request.getfixturevalue("milvus_server")
        planted_stores[SERVER] = MilvusStore("planted_fuzz", uri=server.uri, timeout=30)
        plant(planted_stores[SERVER])
    return planted_stores[target]


def has_radius(node) -> bool:
    """Whether a filter holds a ``within D of`` predicate (which Milvus refuses)."""
    if isinstance(node, Not):
        return has_radius(node.operand)
    if isinstance(node, (And, Or)):
        return any(has_radius(child) for child in node.operands)
    return isinstance(node, GeoRadius)


def is_milvus(target: str) -> bool:
    return target in ("milvus", SERVER)


def selected(store, filter) -> set[str]:
    """Ids the store returns for ``filter`` (k covers the whole planted set)."""
    query = np.ones(DIM, dtype=np.float32) / 2
    return {hit.id for hit in store.search(query, k=len(PAYLOADS), filter=filter)}


def expected(filter, target: str = "") -> set[str]:
    null_exists = target == SERVER  # a documented Milvus 2.3 difference (docs/filters.md)
    return {IDS[i] for i, payload in enumerate(PAYLOADS) if evaluate(filter, payload, null_exists=null_exists)}


@pytest.mark.parametrize("target", STORE_TARGETS)
def test_planted_examples_select_the_documented_points(planted, target):
    """A few fixed filters whose answers were checked by hand against docs/filters.md."""
    store = planted
    cases = {
        'n = 2': {i for i, p in enumerate(PAYLOADS) if p.get("n") in (2, 2.0) and not isinstance(p.get("n"), bool)},
        'not exists n': {i for i, p in enumerate(PAYLOADS) if "n" not in p},
        'tags = "red"': {i for i, p in enumerate(PAYLOADS) if p.get("tags") == "red" or "red" in (p.get("tags") or [])},
        'not colour = "red"': {i for i, p in enumerate(PAYLOADS) if p.get("colour") != "red"},
    }
    for text, indexes in cases.items():
        assert indexes, text  # the planted set exercises every case
        assert selected(store, parse_filter(text)) == {IDS[i] for i in indexes}, text
        assert store.count(parse_filter(text)) == len(indexes), text


@pytest.mark.parametrize("target", STORE_TARGETS)
def test_random_filters_match_the_reference_evaluator(planted, target):
    store = planted

    @FUZZ
    @given(filters())
    def check(filter):
        assert parse_filter(to_text(filter)) == filter
        if is_milvus(target) and has_radius(filter):
            with pytest.raises(UnsupportedFilterError, match="within box"):
                selected(store, filter)
            return
        assert selected(store, filter) == expected(filter, target), to_text(filter)

    check()


#: the indexes of the indexed store: a geo index on gps is the one Qdrant answers boxes wrongly with
PHOTO_INDEXES = {"taken_at": "float", "gps": "geo", "n": "float", "colour": "keyword"}


@pytest.fixture(scope="module", params=[LOCAL, INDEXED])
def photo_store(request, tmp_path_factory):
    """The planted payloads in qdrant-client's local mode, or in Qdrant Edge with payload indexes on
    the date and place fields (the other stores have none)."""
    root = tmp_path_factory.mktemp("photo")
    if request.param == LOCAL:
        store = QdrantClientStore("planted", path=str(root / "qdrant"))
        plant(store)
    else:
        store = open_store("qdrant-edge", "planted", path=str(root / "edge"))
        plant(store, PHOTO_INDEXES)
    yield store
    store.close()


def test_dates_and_places_match_the_reference_evaluator_in_local_mode_and_with_indexes(photo_store):
    """The photo predicates alone (a quarter of the examples) in qdrant-client's local mode and in
    an indexed Qdrant Edge (its geo index answered big boxes wrongly: boxes compile to ranges)."""
    photo = filters(4).filter(lambda f: bool({"taken_at", "gps"} & filter_fields(f)))

    @settings(max_examples=max(FUZZ_EXAMPLES // 4, 10), deadline=None, suppress_health_check=list(HealthCheck))
    @given(photo)
    def check(filter):
        assert selected(photo_store, filter) == expected(filter), to_text(filter)

    check()
    southern = parse_filter("gps within box (-90, -180) to (0, 180)")  # none with Qdrant's geo_bounding_box + index
    assert selected(photo_store, southern) == expected(southern) != set()


#: typed columns on every planted key (Milvus Lite): tags holds lists and n ints beside floats
TYPED_INDEXES = {"index": "integer", "colour": "keyword", "n": "float", "tags": "keyword", "flag": "bool",
                 "name": "keyword", "taken_at": "datetime", "gps": "geo"}


@pytest.fixture(scope="module")
def typed_store(tmp_path_factory):
    """The planted payloads in Milvus Lite with every key indexed, so typed columns answer the filters."""
    store = open_store("milvus", "planted", uri=str(tmp_path_factory.mktemp("typed") / "milvus.db"))
    plant(store, TYPED_INDEXES)
    yield store
    store.close()


def test_random_filters_match_the_reference_evaluator_on_typed_columns(typed_store):
    """Milvus Lite compares indexed keys on typed columns (null where a key is missing or misfits):
    the pages still equal the reference evaluator's, negations and lists included."""
    layout = typed_store._key_layout()
    assert set(layout.columns) == {"index", "colour", "n", "flag", "name", "taken_at"}  # tags held lists
    assert layout.lists == {"tags"}

    @FUZZ
    @given(filters().filter(lambda f: not has_radius(f)))
    def check(filter):
        assert selected(typed_store, filter) == expected(filter), to_text(filter)

    check()


def test_planted_places_are_clear_of_every_fuzzed_edge():
    """No planted point lies within 0.5 % of a fuzzed circle's edge or 1e-4 degrees of a box's edge,
    where the backends' own rounding (Earth radius, float32 geo indexes) could decide differently."""
    for lat, lon in PLACES:
        for c_lat, c_lon in GEO_CENTRES:
            distance = great_circle_m(c_lat, c_lon, lat, lon)
            assert all(abs(distance - r) > 0.005 * r for r in GEO_RADII_M), (lat, lon, c_lat, c_lon)
        assert all(abs(lat - edge) > 1e-4 for edge in BOX_LATS)
        assert all(abs(lon - edge) > 1e-4 for edge in BOX_LONS)


@pytest.mark.parametrize("target", STORE_TARGETS)
def test_planted_dates_and_places_select_the_documented_points(planted, target):
    """Fixed photo filters answered by hand: dates at the millisecond, the 180th meridian, radii."""
    cases = {
        "taken_at >= 2019-06-01": {1559347200, 1559347201, 1559347200.001, 1717243200.5},
        "taken_at > 2019-06-01T02:00:00+02:00": {1559347201, 1559347200.001, 1717243200.5},
        "taken_at < 1970-01-01": {-631152000},
        "gps within box (-20, 170) to (-10, -170)": {(-18.1416, 178.4419), (-16.8, -179.97)},
        "gps within box (48.8, 2.0) to (48.9, 2.5)": {(48.8566, 2.3522), (48.8049, 2.1204)},
    }
    if not is_milvus(target):
        cases["gps within 20 km of (48.8566, 2.3522)"] = {(48.8566, 2.3522), (48.8049, 2.1204)}
        cases["gps within 15 km of (48.8566, 2.3522)"] = {(48.8566, 2.3522)}
        cases["gps within 300 km of (-18, 179)"] = {(-18.1416, 178.4419), (-16.8, -179.97)}
    for text, wanted in cases.items():
        indexes = {i for i, p in enumerate(PAYLOADS)
                   if p.get("taken_at") in wanted or (isinstance(p.get("gps"), dict) and len(p["gps"]) == 2
                                                      and (p["gps"]["lat"], p["gps"]["lon"]) in wanted)}
        assert indexes == {i for i, p in enumerate(PAYLOADS) if evaluate(parse_filter(text), p)}, text
        assert indexes, text
        assert selected(planted, parse_filter(text)) == {IDS[i] for i in indexes}, text
        negated = Not(parse_filter(text))
        assert selected(planted, negated) == set(IDS) - {IDS[i] for i in indexes}, text


@pytest.mark.parametrize("target", ["milvus", pytest.param(SERVER, marks=pytest.mark.milvus_server)])
def test_milvus_refuses_a_radius_and_its_suggested_box_holds_the_circle(planted, target):
    radius = parse_filter("gps within 300 km of (-18, 179)")
    with pytest.raises(UnsupportedFilterError, match=r"within box \(") as info:
        selected(planted, radius)
    box = parse_filter(str(info.value).rsplit("instead: ", 1)[1])
    assert box == radius_box(radius)
    assert selected(planted, box) >= expected(radius, target)


@pytest.mark.parametrize("target", STORE_TARGETS)
def test_string_literals_with_expression_syntax_select_nothing_extra(planted, target):
    """Values that look like filter / SQL / Milvus syntax are compared as plain strings."""
    store = planted

    @FUZZ
    @given(st.sampled_from(['x" or id != "', '" or 1 == 1 or "', "a\\\" or true or \\\"", "') or ('1'='1", "\\", '"']))
    def check(value):
        for filter in (Compare("colour", "=", value), Or((Compare("colour", "=", value), Compare("name", "=", value)))):
            assert selected(store, filter) == expected(filter)

    check()


@PARSER_FUZZ
@given(st.text())
def test_hostile_text_only_raises_filter_syntax_error(text):
    try:
        parse_filter(text)
    except FilterSyntaxError as exc:
        assert exc.position is not None and 0 <= exc.position <= max(len(text), 1)


_pieces = st.sampled_from(
    ['(', ')', 'not', 'and', 'or', 'a', '=', '!=', '<', 'in', '[', ']', ',', '"x"', '"', '\\', "1", "-", "1e999",
     "exists", "startswith", "true", "é", "🙂", "\x00", "\ud800", "\n", "'",
     "within", "box", "of", "to", "km", "m", "5km", "0m", "(1, 2)", "(91, 0)", "2019-06-01", "2019-06-01T14:30:00+02:00",
     "2019-13-45", "0000-01-01", "9999-12-31T23:59:59-14:00", "1e400", "-180", "gps", ">="]
)


@PARSER_FUZZ
@given(st.lists(_pieces, max_size=40).map(" ".join) | st.text(alphabet='()"\\ anot=[],1', max_size=400))
def test_near_miss_syntax_only_raises_filter_syntax_error(text):
    try:
        result = parse_filter(text)
    except FilterSyntaxError:
        return
    assert parse_filter(to_text(result)) == result
    assert parse_filter(to_dict(result)) == result


@PARSER_FUZZ
@given(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")))
def test_any_string_round_trips_as_one_literal(value):
    filter = Compare("colour", "=", value)
    assert parse_filter(to_text(filter)) == filter
    expr, params = to_milvus_expr(filter, inline=True)
    # the literal is the only quoted token: removing it leaves exactly the expression skeleton
    skeleton, _ = to_milvus_expr(Compare("colour", "=", "v"), inline=True)
    assert expr.replace(milvus_string(value), '"v"') == skeleton
    assert params == {}


@PARSER_FUZZ
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                    max_leaves=20))
def test_hostile_dicts_only_raise_filter_syntax_error(value):
    try:
        parse_filter(value if isinstance(value, dict) else {"and": value})
    except FilterSyntaxError:
        pass


@PARSER_FUZZ
@given(filters())
def test_every_filter_compiles_for_every_backend_and_binds_all_user_values(filter):
    # every compiler in the registry (a new backend's too): a native filter or a refusal by name
    assert BACKENDS and all(entry.filter_compilers for entry in BACKENDS)
    for dialect, compile_filter in ((d, c) for entry in BACKENDS for d, c in entry.filter_compilers.items()):
        try:
            assert compile_filter(filter) is not None, dialect
        except UnsupportedFilterError:
            pass
    assert to_qdrant_filter(filter) is not None and to_edge_filter(filter) is not None
    if has_radius(filter):
        with pytest.raises(UnsupportedFilterError):
            to_milvus_expr(filter)
        return
    expr, params = to_milvus_expr(filter)
    # with template parameters no user value is ever part of the expression text (a geo point's
    # keys, ["lat"] and ["lon"], are the compiler's own)
    expr = expr.replace('["lat"]', "").replace('["lon"]', "")
    assert '"' not in expr and "'" not in expr
    assert set(re.findall(r"\{(p\d+)\}", expr)) == set(params)


_degrees = st.floats(-90, 90, allow_nan=False)
_longitudes = st.floats(-180, 180, allow_nan=False)


@PHOTO_PARSER_FUZZ
@given(st.one_of(
    st.builds(lambda f, lat, lon, m: make_geo_radius(f, lat, lon, m, ValueError), st.sampled_from(["gps", "where"]),
              _degrees, _longitudes, st.floats(1e-3, 20_037_509, allow_nan=False)),
    st.builds(lambda lats, w, e: make_geo_box("gps", min(lats), w, max(lats), e, ValueError),
              st.lists(_degrees, min_size=2, max_size=2), _longitudes, _longitudes),
))
def test_geo_predicates_round_trip_and_compile(node):
    assert parse_filter(to_text(node)) == node
    assert parse_filter(to_dict(node)) == node
    assert to_qdrant_filter(node) is not None and to_edge_filter(node) is not None
    if isinstance(node, GeoBox):
        expr, params = to_milvus_expr(node)
        assert '"' not in expr.replace('["lat"]', "").replace('["lon"]', "") and len(params) == 4
        assert to_milvus_expr(node, inline=True)[0].count("gps[") == 6
    else:
        box = radius_box(node)
        # the suggested box holds the circle's northmost, southmost and (away from the poles) widest points
        assert box.south <= node.lat <= box.north


@PHOTO_PARSER_FUZZ
@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
       st.integers(-14 * 60, 14 * 60), st.booleans())
def test_date_literals_are_the_instant_they_name(moment, offset_minutes, quoted):
    moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000,
                            tzinfo=timezone(timedelta(minutes=offset_minutes)))
    text = moment.isoformat(timespec="milliseconds")
    literal = f'"{text}"' if quoted else text
    node = parse_filter(f"taken_at >= {literal}")
    assert node == Compare("taken_at", ">=", (moment - datetime(1970, 1, 1, tzinfo=timezone.utc)).total_seconds())
    assert parse_filter(to_text(node)) == node and parse_filter(to_dict(node)) == node
