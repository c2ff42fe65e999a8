"""Property tests: every backend selects exactly what the reference evaluator selects, and hostile
text only ever raises FilterSyntaxError.

Parser and compiler properties run 10,000 examples each (CLIP_INGEST_PARSER_FUZZ_EXAMPLES); the
cross-backend ones, a real query per example in every store, 200 (CLIP_INGEST_FUZZ_EXAMPLES).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clip_ingest.connectors.backends import CollectionSpec, Point, open_store
from clip_ingest.connectors.backends.milvus_store import MilvusStore
from clip_ingest.connectors.search.compile_milvus import to_milvus_expr
from clip_ingest.connectors.search.filters import Compare, FilterSyntaxError, Or, parse_filter, to_dict, to_text
from filter_reference import FUZZ_EXAMPLES, PARSER_FUZZ_EXAMPLES, TARGETS, evaluate, filters, planted_id, planted_payloads, store_options

PAYLOADS = planted_payloads()
IDS = [planted_id(i) for i in range(len(PAYLOADS))]
DIM = 4
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
PARSER_FUZZ = settings(max_examples=PARSER_FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))


SERVER = "milvus-server"
#: every embedded backend, plus the real Milvus server that .ci/run starts
STORE_TARGETS = [*TARGETS, pytest.param(SERVER, marks=pytest.mark.milvus_server)]


def plant(store) -> None:
    """Fill ``store`` with the planted payloads (fresh collection)."""
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(PAYLOADS), DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store.ensure_collection(CollectionSpec(store.collection, DIM, "planted-model"), recreate=True)
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
        assert selected(store, filter) == expected(filter, target), to_text(filter)

    check()


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
     "exists", "startswith", "true", "é", "🙂", "\x00", "\ud800", "\n", "'"]
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
    from clip_ingest.connectors.search.compile_milvus import milvus_string

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
    from clip_ingest.connectors.search.compile_edge import to_edge_filter
    from clip_ingest.connectors.search.compile_qdrant import to_qdrant_filter

    assert to_qdrant_filter(filter) is not None and to_edge_filter(filter) is not None
    expr, params = to_milvus_expr(filter)
    # with template parameters no user value is ever part of the expression text
    assert '"' not in expr and "'" not in expr
    assert set(re.findall(r"\{(p\d+)\}", expr)) == set(params)
