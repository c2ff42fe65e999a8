"""Property tests of the user-metadata parser: within the limits a JSON object comes back exactly,
past any limit or malformed it is a MetadataError, and whatever the input, nothing else is raised
and nothing runs long (hostile nesting never reaches the recursive JSON parser).

The expected outcome of a generated record is computed by a reference measure written here
(recursive: generated values are small), independent of the parser's own iterative walk.
"""

from __future__ import annotations

import csv
import io
import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from clip_ingest.connectors.ingest.metadata import (
    DEPTH_CEILING,
    INT64_MAX,
    INT64_MIN,
    MetadataError,
    MetadataLimits,
    check_record,
    parse_json_object,
)

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
DEFAULT = MetadataLimits()
#: small enough that generated records cross every limit often
TIGHT = MetadataLimits(max_bytes=400, max_depth=3, max_keys=10, max_items=10, max_value_chars=12)
#: every limit but nesting out of the way, so that deep input meets max_depth, not max_bytes
DEPTH_ONLY = MetadataLimits(max_bytes=10**7, max_keys=10**7, max_items=10**7, max_value_chars=10**7)

# ---- strategies ---------------------------------------------------------------------------------

#: characters a payload store can keep: no lone surrogates (category Cs), no NUL
chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="\0")
strings = st.text(chars, max_size=16)
keys = st.text(chars, min_size=1, max_size=16)
scalars = (
    st.none() | st.booleans() | st.integers(INT64_MIN, INT64_MAX)
    | st.floats(allow_nan=False, allow_infinity=False) | strings
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(keys, inner, max_size=5), max_leaves=25)
objects = st.dictionaries(keys, values, max_size=6)


def measure(value: Any, depth: int = 1) -> dict[str, int]:
    """Depth, keys, array elements and the longest string (key or value) of a JSON value."""
    if isinstance(value, str):
        return {"max_depth": 0, "max_keys": 0, "max_items": 0, "max_value_chars": len(value)}
    if isinstance(value, dict):
        children = [measure(v, depth + 1) for v in value.values()]
        own = {"max_depth": depth, "max_keys": len(value), "max_items": 0,
               "max_value_chars": max(map(len, value), default=0)}
    elif isinstance(value, list):
        children = [measure(v, depth + 1) for v in value]
        own = {"max_depth": depth, "max_keys": 0, "max_items": len(value), "max_value_chars": 0}
    else:
        return {"max_depth": 0, "max_keys": 0, "max_items": 0, "max_value_chars": 0}
    for child in children:
        own["max_depth"] = max(own["max_depth"], child["max_depth"])
        own["max_keys"] += child["max_keys"]
        own["max_items"] += child["max_items"]
        own["max_value_chars"] = max(own["max_value_chars"], child["max_value_chars"])
    return own


def limits_passed(value: dict[str, Any], size: int, limits: MetadataLimits) -> set[str]:
    """The names of the limits ``value`` (``size`` bytes of JSON) is past."""
    sizes = {**measure(value), "max_bytes": size}
    return {name for name, amount in sizes.items() if amount > getattr(limits, name)}


def assert_plain(value: Any) -> None:
    """``value`` is built of plain JSON types only."""
    if isinstance(value, dict):
        assert all(type(k) is str for k in value)
        for v in value.values():
            assert_plain(v)
    elif isinstance(value, list):
        for v in value:
            assert_plain(v)
    else:
        assert value is None or type(value) in (bool, int, float, str)


def parse_or_error(data: bytes | str, limits: MetadataLimits = DEFAULT) -> dict[str, Any] | MetadataError:
    """The parsed object, or the MetadataError (any other exception fails the test)."""
    try:
        result = parse_json_object(data, "sidecar x.jpg.json", limits)
    except MetadataError as exc:
        assert exc.reason == "bad_metadata" and str(exc).startswith("sidecar x.jpg.json: ")
        return exc
    assert type(result) is dict
    assert_plain(result)
    return result


def outcome(result: dict[str, Any] | MetadataError) -> str:
    """A generated case's outcome, for hypothesis' statistics: which rule refused it, or "parsed"."""
    if isinstance(result, dict):
        return "parsed"
    return str(result).split(": ", 1)[1].split(" (")[0].split(" '")[0][:40]


def nested(depth: int, kinds: list[str]) -> str:
    """JSON nested ``depth`` levels deep, the levels cycling through ``kinds`` ("[" or "{")."""
    opening = [kinds[i % len(kinds)] for i in range(depth)]
    return "".join('{"a":' if k == "{" else "[" for k in opening) + "1" + "".join("}" if k == "{" else "]" for k in reversed(opening))


# ---- properties ---------------------------------------------------------------------------------

@pytest.mark.parametrize("limits", [DEFAULT, TIGHT], ids=["default-limits", "tight-limits"])
@PROPERTY
@given(value=objects, indent=st.sampled_from([None, 1]), as_bytes=st.booleans())
def test_objects_within_the_limits_round_trip_and_past_them_are_refused(limits, value, indent, as_bytes):
    text = json.dumps(value, indent=indent, ensure_ascii=False)
    passed = limits_passed(value, len(text.encode("utf-8")), limits)
    result = parse_or_error(text.encode("utf-8") if as_bytes else text, limits)
    event(f"past {', '.join(sorted(passed))}" if passed else "within the limits")
    if passed:
        assert isinstance(result, MetadataError) and result.limit in passed, (passed, result)
        assert f"{result.limit}={getattr(limits, result.limit)}" in str(result)
    else:
        assert result == value and json.dumps(result) == json.dumps(value)  # same types too (1 vs 1.0)


@PROPERTY
@given(depth=st.integers(DEFAULT.max_depth + 1, 100_000), kinds=st.lists(st.sampled_from("[{"), min_size=1, max_size=6),
       wrapped=st.booleans())
def test_nesting_past_max_depth_is_refused_before_parsing(depth, kinds, wrapped):
    text = nested(depth, kinds)
    text = '{"k":' + text + "}" if wrapped else text
    error = parse_or_error(text, DEPTH_ONLY)
    assert isinstance(error, MetadataError) and error.limit == "max_depth"
    assert isinstance(parse_or_error(text), MetadataError)  # default limits: depth or size


@PROPERTY
@given(groups=st.lists(st.integers(0, 300), min_size=1, max_size=4), nested_in_arrays=st.booleans())
def test_more_keys_than_max_keys_are_refused(groups, nested_in_arrays):
    inner = [{f"k{i}": i for i in range(n)} for n in groups]
    value = {"list": inner} if nested_in_arrays else {f"g{j}": obj for j, obj in enumerate(inner)}
    total = (1 if nested_in_arrays else len(groups)) + sum(groups)
    result = parse_or_error(json.dumps(value))
    if total > DEFAULT.max_keys:
        assert isinstance(result, MetadataError) and result.limit == "max_keys"
    else:
        assert result == value


@PROPERTY
@given(groups=st.lists(st.integers(0, 1200), min_size=1, max_size=3))
def test_more_array_elements_than_max_items_are_refused(groups):
    value = {"a": [[0] * n for n in groups]}
    result = parse_or_error(json.dumps(value))
    if len(groups) + sum(groups) > DEFAULT.max_items:
        assert isinstance(result, MetadataError) and result.limit == "max_items"
    else:
        assert result == value


@PROPERTY
@given(length=st.integers(DEFAULT.max_value_chars + 1, 3 * DEFAULT.max_value_chars), char=chars,
       where=st.sampled_from(["value", "key", "in-array"]))
def test_strings_longer_than_max_value_chars_are_refused(length, char, where):
    long = char * length
    value = {"value": {"k": long}, "key": {long: 1}, "in-array": {"k": [1, [long]]}}[where]
    text = json.dumps(value, ensure_ascii=False)
    error = parse_or_error(text)
    assert isinstance(error, MetadataError)
    assert error.limit in ({"max_value_chars", "max_bytes"} if len(text.encode()) > DEFAULT.max_bytes else {"max_value_chars"})


@PROPERTY
@given(value=objects, padding=st.integers(1, 3 * DEFAULT.max_bytes), as_bytes=st.booleans())
def test_input_over_max_bytes_is_refused_whatever_it_holds(value, padding, as_bytes):
    text = json.dumps(value) + " " * (DEFAULT.max_bytes + padding)
    error = parse_or_error(text.encode() if as_bytes else text)
    assert isinstance(error, MetadataError) and error.limit == "max_bytes"


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.binary(max_size=300))
def test_arbitrary_bytes_give_a_dict_or_a_metadata_error(data):
    event(outcome(parse_or_error(data)))


#: fragments of JSON and of what breaks it, so that generated text gets deep into the parser
JSONISH = st.sampled_from(['{', '}', '[', ']', '"', ',', ':', '\\', '\\u', 'd800', '0', '-', '1e999', '.5', 'true', 'null',
                           'NaN', '-Infinity', '"a"', '"a":', ' ', '\n', '\0', '\ufeff', '\ud800', '9' * 30, '9' * 4400, '\\"',
                           '[' * 1500, '{"a":' * 1500])


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=st.text(max_size=200) | st.lists(JSONISH, max_size=60).map("".join), as_bytes=st.booleans())
def test_arbitrary_text_gives_a_dict_or_a_metadata_error(text, as_bytes):
    event(outcome(parse_or_error(text.encode("utf-8", "surrogatepass") if as_bytes else text)))


@PROPERTY
@given(value=objects, cut=st.integers(0, 10_000), insert=JSONISH)
def test_damaged_json_gives_a_dict_or_a_metadata_error(value, cut, insert):
    text = json.dumps(value)
    cut %= len(text) + 1
    event(outcome(parse_or_error(text[:cut] + insert + text[cut:])))
    event(outcome(parse_or_error(text[:cut])))


@PROPERTY
@given(value=objects)
def test_a_record_from_elsewhere_is_judged_like_its_compact_json_text(value):
    """``check_record`` and ``parse_json_object`` apply the same rules: ``max_bytes`` of a record is
    the size of its compact JSON."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    parsed = parse_or_error(text, TIGHT)
    try:
        checked = check_record(value, "s", TIGHT)
    except MetadataError as exc:
        event(f"both refuse: {exc.limit or 'malformed'}")
        assert isinstance(parsed, MetadataError)
    else:
        event("both accept")
        assert checked == parsed == value


#: CSV cells: anything a CSV file can hold (quotes, separators, line breaks), no NUL
cells = st.text(chars, max_size=16)
#: limits a generated CSV row crosses often, each of them
CSV_LIMITS = MetadataLimits(max_bytes=120, max_keys=10, max_value_chars=12)


@st.composite
def csv_tables(draw) -> tuple[list[str], list[list[str]]]:
    """A header (up to 12 distinct names, one of them maybe empty) and rows of up to one cell more than it."""
    header = draw(st.lists(st.text(chars, max_size=8),
                           min_size=1, max_size=12, unique=True))
    rows = draw(st.lists(st.integers(0, len(header) + 1).flatmap(lambda n: st.lists(cells, min_size=n, max_size=n)), min_size=1, max_size=4))
    return header, rows


@PROPERTY
@given(table=csv_tables())
def test_csv_rows_are_accepted_within_the_limits_and_refused_past_them(table):
    header, rows = table
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    for row in csv.DictReader(io.StringIO(buffer.getvalue(), newline="")):
        try:
            result = check_record(row, "photos.csv:2", CSV_LIMITS)
        except MetadataError as exc:
            event(f"refused: {exc.limit or 'malformed'}")
            malformed = None in row or "" in row
            assert malformed or exc.limit in limits_passed(row, len(compact_json(row)), CSV_LIMITS), (row, exc)
        else:
            event("accepted")
            assert result == row and type(result) is dict
            assert None not in row and "" not in row
            assert not limits_passed(row, len(compact_json(row)), CSV_LIMITS)


def compact_json(record: dict[str, Any]) -> bytes:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# ---- explicit cases -----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["[", "{"])
def test_100k_deep_nesting_is_refused_fast(kind):
    text = nested(100_000, [kind])
    for limits, limit in ((DEFAULT, "max_bytes"), (DEPTH_ONLY, "max_depth")):
        start = time.perf_counter()
        with pytest.raises(MetadataError) as error:
            parse_json_object(text.encode(), "sidecar deep.json", limits)
        assert time.perf_counter() - start < 1.0
        assert error.value.limit == limit and f"{limit}={getattr(limits, limit)}" in str(error.value)
    fits = nested(DEFAULT.max_bytes // 12, [kind])  # deep, yet under max_bytes
    assert len(fits) <= DEFAULT.max_bytes
    with pytest.raises(MetadataError, match=r"^sidecar deep.json: nested more than 8 levels deep, past the limit max_depth=8$"):
        parse_json_object(fits, "sidecar deep.json")


def test_the_depth_limit_counts_a_flat_object_as_one_level():
    assert parse_json_object(nested(8, ["{", "["]), "s") == json.loads(nested(8, ["{", "["]))
    with pytest.raises(MetadataError):
        parse_json_object(nested(9, ["{", "["]), "s")
    assert parse_json_object('{"a": 1}', "s", MetadataLimits(max_depth=1)) == {"a": 1}
    assert parse_json_object('{"a": "[[[[[[[[[[{{{{{{{{{\\""}', "s") == {"a": '[[[[[[[[[[{{{{{{{{{"'}  # brackets in strings do not count


def test_the_nesting_scan_is_linear_in_hostile_input():
    """2 MB of escaped quotes inside a string (what makes a naive regular-expression scan
    quadratic) and 2 MB of brackets within the depth limit are scanned in well under a second each."""
    limits = MetadataLimits(max_bytes=10**7, max_value_chars=10**7, max_items=10**7)
    for text in ('"' + '\\"' * 1_000_000, '{"a":"' + '\\"' * 1_000_000 + '"}', '{"a":' + "[[[[[[[]]]]]]]," * 140_000 + "1}"):
        start = time.perf_counter()
        parse_or_error(text, limits)
        assert time.perf_counter() - start < 5.0


@pytest.mark.parametrize("as_bytes", [True, False])
def test_a_5mb_sidecar_is_refused_on_its_size(as_bytes):
    data = json.dumps({"k": "x" * 5_000_000})
    data = data.encode() if as_bytes else data
    start = time.perf_counter()
    unit = "bytes" if as_bytes else r"characters \(at least as many bytes\)"
    with pytest.raises(MetadataError, match=rf"^sidecar big.json: {len(data)} {unit}, past the limit max_bytes=65536$"):
        parse_json_object(data, "sidecar big.json")
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "[NaN]"])
def test_non_finite_numbers_are_refused(literal):
    with pytest.raises(MetadataError, match="not a number|too large"):
        parse_json_object('{"a": %s}' % literal, "s")


@pytest.mark.parametrize(("literal", "value"), [
    ("9" * 5000, 10**5000 - 1), ("-" + "9" * 5000, 1 - 10**5000), (str(INT64_MAX + 1), INT64_MAX + 1),
    (str(INT64_MIN - 1), INT64_MIN - 1), ("1" + "0" * 19, 10**19),
], ids=["5000-digits", "minus-5000-digits", "int64-max+1", "int64-min-1", "10^19"])
def test_integers_outside_signed_64_bits_are_refused(literal, value):
    """Python itself raises a plain ValueError converting more than 4300 digits."""
    with pytest.raises(MetadataError, match="outside signed 64 bits"):
        parse_json_object('{"a": %s}' % literal, "s")
    with pytest.raises(MetadataError, match="outside signed 64 bits"):
        check_record({"a": value}, "s")


def test_integers_at_the_64_bit_bounds_and_floats_are_kept():
    text = '{"max": %d, "min": %d, "f": 1.5e300, "neg": -0.0, "e": 1E2}' % (INT64_MAX, INT64_MIN)
    assert parse_json_object(text, "s") == {"max": INT64_MAX, "min": INT64_MIN, "f": 1.5e300, "neg": -0.0, "e": 100.0}


def test_a_utf8_bom_is_accepted_other_encodings_are_not():
    assert parse_json_object(b'\xef\xbb\xbf{"a": "\xc3\xa9"}', "s") == {"a": "é"}
    assert parse_json_object('\ufeff{"a": 1}', "s") == {"a": 1}
    for data in (b'{"a": "\xe9"}', '{"a": 1}'.encode("utf-16"), b"\xff\xfe"):
        with pytest.raises(MetadataError, match="not valid UTF-8"):
            parse_json_object(data, "s")


def test_lone_surrogates_and_nul_are_refused_in_values_and_keys():
    for text in ('{"a": "\\ud800"}', '{"\\udfff": 1}', '{"a": ["x\\udc80"]}', '{"a": "\ud800"}'):
        with pytest.raises(MetadataError, match="lone surrogate"):
            parse_json_object(text, "s")
    for text in ('{"a": "x\\u0000"}', '{"\\u0000": 1}'):
        with pytest.raises(MetadataError, match="NUL"):
            parse_json_object(text, "s")
    assert parse_json_object('{"a": "\\ud83d\\ude00"}', "s") == {"a": "\U0001F600"}  # a surrogate pair is one character
    for record in ({"a": "\udc80"}, {"a\0": "x"}):
        with pytest.raises(MetadataError):
            check_record(record, "s")


def test_duplicate_keys_are_refused_at_any_level():
    for text in ('{"a": 1, "a": 2}', '{"o": [{"b": 1, "c": 2, "b": 1}]}'):
        with pytest.raises(MetadataError, match="appears twice"):
            parse_json_object(text, "s")


@pytest.mark.parametrize("text", ["[]", '"a"', "1", "null", "true", "", " ", "{", '{"a": 1} {}', "{'a': 1}"])
def test_anything_but_one_json_object_is_refused(text):
    with pytest.raises(MetadataError, match="must be a JSON object|invalid JSON"):
        parse_json_object(text, "s")


def test_empty_keys_are_refused():
    with pytest.raises(MetadataError, match="empty key"):
        parse_json_object('{"a": {"": 1}}', "s")
    with pytest.raises(MetadataError, match="empty key"):
        check_record({"": "x"}, "s")


def test_a_csv_row_with_more_fields_than_its_header_is_refused():
    rows = list(csv.DictReader(io.StringIO("path,label\na.jpg,cat,extra\nb.jpg\n", newline="")))
    with pytest.raises(MetadataError, match=r"^photos.csv:2: more fields than the header has columns$"):
        check_record(rows[0], "photos.csv:2")
    assert check_record(rows[1], "photos.csv:3") == {"path": "b.jpg", "label": None}  # a missing field is None


@pytest.mark.parametrize("record", [{1: "x"}, {"a": b"x"}, {"a": (1, 2)}, {"a": {1, 2}}, {"a": float("nan")}, {"a": object()}])
def test_records_from_elsewhere_hold_only_plain_json_values(record):
    with pytest.raises(MetadataError):
        check_record(record, "s")


def test_records_from_elsewhere_obey_every_limit():
    within = {"k": "x" * 12, "l": [1, 2], "o": {"p": None, "q": True, "r": 1.5}}
    assert check_record(within, "s", TIGHT) == within
    past = {
        "max_keys": {f"k{i}": "" for i in range(11)},
        "max_items": {"l": list(range(11))},
        "max_value_chars": {"k": "x" * 13},
        "max_depth": {"k": [[[1]]]},
        "max_bytes": {f"k{i}": "\U0001F600" * 12 for i in range(10)},
    }
    for limit, record in past.items():
        with pytest.raises(MetadataError) as error:
            check_record(record, "s", TIGHT)
        assert error.value.limit == limit


def test_limits_come_from_settings_and_are_validated():
    assert MetadataLimits.from_settings({}) == DEFAULT
    assert MetadataLimits.from_settings({"max_bytes": "131072", "max_depth": 4}) == MetadataLimits(max_bytes=131_072, max_depth=4)
    for settings_ in ({"max_size": 1}, {"max_bytes": "lots"}, {"max_keys": 0}, {"max_depth": DEPTH_CEILING + 1}, {"max_items": None}):
        with pytest.raises(ValueError):
            MetadataLimits.from_settings(settings_)
    with pytest.raises(ValueError):
        MetadataLimits(max_bytes=True)
