"""The filter language: parser (text and dict forms), errors, printing and the three compilers' output."""

from __future__ import annotations

import math

import pytest
from qdrant_client import models

from clip_ingest.connectors.backends.qdrant.compile_edge import to_edge_filter
from clip_ingest.connectors.backends.milvus.compile import EARTH_RADIUS_M, milvus_string, prefix_range, radius_box, to_milvus_expr
from clip_ingest.connectors.backends.qdrant.compile import to_qdrant_filter
from clip_ingest.connectors.filters import (
    MAX_DEPTH,
    MAX_LENGTH,
    And,
    Compare,
    Exists,
    FilterSyntaxError,
    GeoBox,
    GeoRadius,
    In,
    Instant,
    Not,
    Or,
    StartsWith,
    UnsupportedFilterError,
    parse_filter,
    to_dict,
    to_text,
)
from filter_reference import in_box

RED = Compare("label", "=", "cat")


@pytest.mark.parametrize(
    "text, expected",
    [
        ('label = "cat"', RED),
        ('label == "cat"', RED),
        ('label != "cat"', Not(RED)),
        ("year >= 2020", Compare("year", ">=", 2020)),
        ("year < 2.5", Compare("year", "<", 2.5)),
        ("year > -1e3", Compare("year", ">", -1000.0)),
        ("flag = true", Compare("flag", "=", True)),
        ("flag = FALSE", Compare("flag", "=", False)),
        ('tags in ["a", 2, true]', In("tags", ("a", 2, True))),
        ('tags not in ["a",]', Not(In("tags", ("a",)))),
        ("exists width", Exists("width")),
        ("width exists", Exists("width")),
        ('name startswith "ab"', StartsWith("name", "ab")),
        ('name = "a\\"b\\\\c\\n\\u00e9"', Compare("name", "=", 'a"b\\c\né')),
        ('label = "cat" and year >= 2020 and not camera = "x"',
         And((RED, Compare("year", ">=", 2020), Not(Compare("camera", "=", "x"))))),
        ("taken_at >= 2019-06-01", Compare("taken_at", ">=", 1559347200)),
        ('taken_at >= "2019-06-01"', Compare("taken_at", ">=", 1559347200)),
        ("taken_at < 2019-06-01T14:30:00+02:00", Compare("taken_at", "<", 1559392200)),
        ("taken_at < 2019-06-01t12:30z", Compare("taken_at", "<", 1559392200)),
        ("mtime > 2019-06-01T00:00:00.250Z", Compare("mtime", ">", 1559347200.25)),
        ("gps within 5 km of (48.8566, 2.3522)", GeoRadius("gps", 48.8566, 2.3522, 5000.0)),
        ("gps WITHIN 250m OF (-33.9, 151)", GeoRadius("gps", -33.9, 151.0, 250.0)),
        ("gps within box (45.8, 5.9) to (47.8, 10.5)", GeoBox("gps", 45.8, 5.9, 47.8, 10.5)),
        ("gps within box (-20, 170) to (-10, -170)", GeoBox("gps", -20.0, 170.0, -10.0, -170.0)),
        ("within = 1 and box exists", And((Compare("within", "=", 1), Exists("box")))),
    ],
)
def test_parses_every_construct(text, expected):
    assert parse_filter(text) == expected


def test_precedence_not_binds_tighter_than_and_than_or():
    a, b, c = (Compare(f, "=", 1) for f in "abc")
    assert parse_filter("a = 1 or b = 1 and c = 1") == Or((a, And((b, c))))
    assert parse_filter("(a = 1 or b = 1) and c = 1") == And((Or((a, b)), c))
    assert parse_filter("not a = 1 and b = 1") == And((Not(a), b))
    assert parse_filter("not (a = 1 and b = 1)") == Not(And((a, b)))
    assert parse_filter("NOT not a = 1") == Not(Not(a))


def test_ast_is_immutable():
    with pytest.raises(AttributeError):
        RED.value = "dog"  # type: ignore[misc]


@pytest.mark.parametrize(
    "text, position, fragment",
    [
        ('label = ', 8, "expected a value"),
        ('label "cat"', 6, "expected an operator"),
        ('label = "cat', 8, "unterminated string"),
        ('label = "cat" and', 17, "expected a field name"),
        ('(label = "cat"', 14, "expected ')'"),
        ('label = "cat")', 13, "expected 'and', 'or'"),
        ("year >= \"x\"", 8, "compares numbers"),
        ("tags in []", 5, "at least one value"),
        ("1abc = 2", 0, "unexpected character"),
        ("id = 3", 0, "reserved"),
        ("vector exists", 0, "reserved"),
        ("a = 9007199254740993", 4, "2**53"),
        ('a = "\\ud800"', 4, "surrogate"),
        ("a = 1 ; drop", 6, "unexpected character"),
        ("", 0, "empty filter"),
        ("x" * 65 + " = 1", 0, "invalid field name"),
        ("taken_at = 2019-06-01", 11, "write taken_at >= 2019-06-01 and taken_at < 2019-06-02"),
        ("taken_at in [2019-06-01]", 9, "compares with < <= > >= only"),
        ("taken_at >= 2019-02-30", 12, "invalid date"),
        ("taken_at >= 0000-01-01", 12, "invalid date"),
        ('taken_at >= "yesterday"', 12, "numbers or dates"),
        ("gps within 5 of (1, 2)", 13, "expected a distance"),
        ("gps within 5 km (1, 2)", 16, "expected 'of'"),
        ("gps within 5 km of (1 2)", 22, "expected ','"),
        ("gps within 5 km of (91, 2)", 11, "latitude 91 is outside"),
        ("gps within 0 m of (1, 2)", 11, "a radius must be"),
        ("gps within box (10, 0) to (5, 1)", 11, "south-west corner"),
        ("gps within box (1, 0) to (5, 181)", 11, "longitude 181 is outside"),
    ],
)
def test_errors_carry_position_and_caret(text, position, fragment):
    with pytest.raises(FilterSyntaxError) as info:
        parse_filter(text)
    assert info.value.position == position
    message = str(info.value)
    assert fragment in message
    # the caret line points under the offending character of the quoted text
    lines = message.splitlines()
    assert lines[-1].index("^") - 2 == position - max(0, position - 40) + (3 if position > 40 else 0)


def test_depth_and_length_limits_are_clear_errors():
    with pytest.raises(FilterSyntaxError, match="nested deeper"):
        parse_filter("(" * (MAX_DEPTH + 1) + "a = 1" + ")" * (MAX_DEPTH + 1))
    with pytest.raises(FilterSyntaxError, match="nested deeper"):
        parse_filter("not " * 1000 + "a = 1")
    with pytest.raises(FilterSyntaxError, match="longer than"):
        parse_filter("a = 1 or " * MAX_LENGTH)
    nested: dict = {"field": "a", "op": "=", "value": 1}
    for _ in range(5000):
        nested = {"not": nested}
    with pytest.raises(FilterSyntaxError, match="nested deeper"):
        parse_filter(nested)
    assert parse_filter("(" * MAX_DEPTH + "a = 1" + ")" * MAX_DEPTH) == Compare("a", "=", 1)


def test_dict_form_parses_to_the_same_ast():
    text = 'label = "cat" and (year >= 2020 or tags not in ["a", "b"]) and not exists camera and name startswith "x"'
    as_dict = {
        "and": [
            {"field": "label", "op": "=", "value": "cat"},
            {"or": [{"field": "year", "op": ">=", "value": 2020}, {"field": "tags", "op": "not in", "value": ["a", "b"]}]},
            {"not": {"field": "camera", "op": "exists"}},
            {"field": "name", "op": "startswith", "value": "x"},
        ]
    }
    assert parse_filter(as_dict) == parse_filter(text)
    assert parse_filter(to_dict(parse_filter(text))) == parse_filter(text)
    assert parse_filter(to_text(parse_filter(text))) == parse_filter(text)


def test_dates_print_as_iso_and_geo_predicates_as_text_and_dicts():
    assert str(Instant.parse("2019-06-01T02:00:00+02:00")) == "2019-06-01"
    assert str(Instant.parse("2019-06-01T14:30:00.5-01:00")) == "2019-06-01T15:30:00.500Z"
    assert to_text(parse_filter("taken_at >= 2019-06-01T14:30:00+02:00")) == "taken_at >= 2019-06-01T12:30:00Z"
    assert to_dict(parse_filter("taken_at >= 2019-06-01")) == {"field": "taken_at", "op": ">=", "value": "2019-06-01"}
    assert to_text(GeoRadius("gps", 1.5, -2.0, 5000.0)) == "gps within 5.0 km of (1.5, -2.0)"
    assert to_text(GeoRadius("gps", 1.5, -2.0, 250.5)) == "gps within 250.5 m of (1.5, -2.0)"
    assert parse_filter({"field": "gps", "op": "geo_box", "value": {"south": 1, "west": 2, "north": 3, "east": 4}}) == GeoBox(
        "gps", 1.0, 2.0, 3.0, 4.0)
    assert parse_filter({"field": "gps", "op": "geo_radius", "value": {"lat": 1, "lon": 2, "meters": 3}}) == GeoRadius(
        "gps", 1.0, 2.0, 3.0)


@pytest.mark.parametrize(
    "bad, path",
    [
        ({"field": "gps", "op": "geo_radius", "value": {"lat": 1, "lon": 2}}, "$.value"),
        ({"field": "gps", "op": "geo_radius", "value": {"lat": True, "lon": 2, "meters": 1}}, "$.value"),
        ({"field": "gps", "op": "geo_box", "value": [1, 2, 3, 4]}, "$.value"),
        ({"field": "t", "op": "=", "value": "2019-06-01"} | {"op": "<", "value": "2019-06-01X"}, "$.value"),
        ({"and": []}, "$"),
        ({"field": "a", "op": "~", "value": 1}, "$"),
        ({"field": "a b", "op": "=", "value": 1}, "$.field"),
        ({"field": "a", "op": "=", "value": [1]}, "$.value"),
        ({"field": "a", "op": "=", "value": float("nan")}, "$.value"),
        ({"field": "a", "op": "exists", "value": 1}, "$"),
        ({"or": [{"field": "a", "op": "=", "value": 1}, {"field": "a", "op": "<", "value": True}]}, "$.or[1].value"),
        ({"and": [{"field": "a", "op": "in", "value": "x"}]}, "$.and[0].value"),
        (["a"], None),
    ],
)
def test_dict_form_errors_name_the_path(bad, path):
    with pytest.raises(FilterSyntaxError) as info:
        parse_filter(bad)
    assert info.value.path == path
    if path:
        assert path in str(info.value)


# ---------------------------------------------------------------- compilers

def test_dates_compile_as_numbers_and_places_as_geo_conditions():
    f = to_qdrant_filter(parse_filter("taken_at >= 2019-06-01 and gps within 5 km of (48.85, 2.35)"))
    taken, near = f.must
    assert taken == models.FieldCondition(key="taken_at", range=models.Range(gte=1559347200.0))
    assert near == models.FieldCondition(
        key="gps", geo_radius=models.GeoRadius(center=models.GeoPoint(lat=48.85, lon=2.35), radius=5000.0))
    # a box is ranges on the point's keys (not geo_bounding_box, which a geo index answers wrongly)
    box = to_qdrant_filter(parse_filter("gps within box (-20, 170) to (-10, -170)")).must[0]
    assert box == models.Filter(must=[
        models.FieldCondition(key="gps.lat", range=models.Range(gte=-20, lte=-10)),
        models.Filter(should=[models.FieldCondition(key="gps.lon", range=models.Range(gte=170)),
                              models.FieldCondition(key="gps.lon", range=models.Range(lte=-170))]),
    ])
    edge_lat, edge_lon = to_edge_filter(parse_filter("gps within box (40, 1) to (50, 3)")).must[0].must
    assert (edge_lat.key, edge_lat.range.gte, edge_lat.range.lte) == ("gps.lat", 40, 50)
    assert (edge_lon.key, edge_lon.range.gte, edge_lon.range.lte) == ("gps.lon", 1, 3)


def test_milvus_compiles_a_box_to_ranges_on_the_points_keys_and_refuses_a_radius():
    expr, params = to_milvus_expr(parse_filter("taken_at >= 2019-06-01"), inline=True)
    assert expr == "((exists taken_at) and (taken_at >= 1559347200.0))" and params == {}
    params = to_milvus_expr(parse_filter("taken_at >= 2019-06-01"))[1]
    assert params == {"p0": 1559347200.0} and type(params["p0"]) is float  # a plain float for pymilvus
    expr, _ = to_milvus_expr(parse_filter("gps within box (-20, 170) to (-10, -170)"), inline=True)
    assert expr == ('((exists gps["lat"]) and (exists gps["lon"]) and (gps["lat"] >= -20.0 and gps["lat"] <= -10.0)'
                    ' and (gps["lon"] >= 170.0 or gps["lon"] <= -170.0))')
    with pytest.raises(UnsupportedFilterError, match=r"no geo type.*instead: gps within box \(48\.805\d+, 2\.281\d+\) to"):
        to_milvus_expr(parse_filter("not gps within 5 km of (48.85, 2.35)"))


@pytest.mark.parametrize("lat, lon, meters", [(48.85, 2.35, 5000), (-18, 179.9, 300_000), (89, 0, 500_000), (0, 0, 20_000_000)])
def test_milvus_radius_box_holds_the_whole_circle(lat, lon, meters):
    box = radius_box(GeoRadius("gps", lat, lon, meters))
    for bearing in range(0, 360, 5):  # points on the circle, by the direct geodesic problem on a sphere
        d, b, p1, l1 = meters / EARTH_RADIUS_M, math.radians(bearing), math.radians(lat), math.radians(lon)
        p2 = math.asin(math.sin(p1) * math.cos(d) + math.cos(p1) * math.sin(d) * math.cos(b))
        l2 = l1 + math.atan2(math.sin(b) * math.sin(d) * math.cos(p1), math.cos(d) - math.sin(p1) * math.sin(p2))
        point = (math.degrees(p2), (math.degrees(l2) + 540) % 360 - 180)
        assert in_box(point, box), (bearing, point, box)

def test_qdrant_compiler_structure():
    f = to_qdrant_filter(parse_filter('label = "cat" and year >= 2020 and not camera = "x" and tags in ["a", "b"]'))
    assert isinstance(f, models.Filter)
    label, year, camera, tags = f.must
    assert label == models.FieldCondition(key="label", match=models.MatchValue(value="cat"))
    assert year == models.FieldCondition(key="year", range=models.Range(gte=2020))
    assert camera == models.Filter(must_not=[models.FieldCondition(key="camera", match=models.MatchValue(value="x"))])
    assert tags == models.FieldCondition(key="tags", match=models.MatchAny(any=["a", "b"]))


def test_qdrant_numbers_compare_by_value_and_exists_is_not_empty():
    eq = to_qdrant_filter(parse_filter("n = 2"))
    assert eq.must == [models.FieldCondition(key="n", range=models.Range(gte=2.0, lte=2.0))]
    ex = to_qdrant_filter(parse_filter("exists n or name startswith \"a\""))
    assert ex.should == [
        models.Filter(must_not=[models.IsEmptyCondition(is_empty=models.PayloadField(key="n"))]),
        models.FieldCondition(key="name", match=models.MatchPrefix(prefix="a")),
    ]
    mixed = to_qdrant_filter(parse_filter('n in ["a", 1, true]'))
    assert mixed.must[0].should[0] == models.FieldCondition(key="n", match=models.MatchAny(any=["a"]))
    assert len(mixed.must[0].should) == 3


def test_edge_compiler_structure():
    import qdrant_edge

    f = to_edge_filter(parse_filter('label = "cat" or not (flag = true and n < 3)'))
    assert isinstance(f, qdrant_edge.Filter)
    label, negated = f.should
    assert label.key == "label" and label.match.value == "cat"
    inner = negated.must_not[0]
    flag, n = inner.must
    assert flag.match.value is True  # a real bool, not the integer 1 (see compile_edge)
    assert n.key == "n" and n.range.lt == 3.0


def test_milvus_compiler_uses_template_parameters():
    expr, params = to_milvus_expr(parse_filter('label = "cat" and year >= 2020 and not camera = "x"'))
    assert expr == (
        "(((exists label) and (label == {p0} or json_contains_any(label, {p1}))) and ((exists year) and (year >= {p2}))"
        " and (not ((exists camera) and (camera == {p3} or json_contains_any(camera, {p4})))))"
    )
    assert params == {"p0": "cat", "p1": ["cat"], "p2": 2020, "p3": "x", "p4": ["x"]}


def test_milvus_inline_escapes_literals():
    expr, params = to_milvus_expr(parse_filter('label = "x\\" or id != \\"" and name startswith "50%_"'), inline=True)
    assert params == {}
    assert '"x\\" or id != \\""' in expr
    assert '(name >= "50%_" and name < "50%`")' in expr
    assert milvus_string('a\\b"\n') == '"a\\\\b\\"\\n"'


def test_milvus_groups_in_values_by_type():
    expr, _ = to_milvus_expr(parse_filter('tags in ["a", 1, true, "b"]'), inline=True)
    assert 'json_contains_any(tags, ["a", "b"])' in expr and "json_contains_any(tags, [1])" in expr


@pytest.mark.parametrize(
    "prefix, high",
    [("al_", "al`"), ("a\\", "a]"), ("", None), ("z\U0010ffff", "{"), ("\U0010ffff", None), ("a\ud7ff", "a\ue000"), ("ü", "ý")],
)
def test_milvus_prefix_range_holds_exactly_the_strings_with_the_prefix(prefix, high):
    assert prefix_range(prefix) == (prefix, high)
    for s in (prefix, prefix + "x", prefix + "\U0010ffff", prefix[:-1], prefix + "\x00"):
        inside = s >= prefix and (high is None or s < high)
        assert inside == s.startswith(prefix), s


@pytest.mark.parametrize("text", ["label = airplanes", "label = 'airplanes'"])
def test_unquoted_or_single_quoted_strings_say_strings_take_double_quotes(text):
    with pytest.raises(FilterSyntaxError, match="strings take double quotes"):
        parse_filter(text)
