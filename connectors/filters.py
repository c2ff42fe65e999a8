"""The payload filter language: one syntax for every backend, parsed into a typed, immutable AST.

It depends on nothing of the project, so the backends compile it and search and serve parse it,
all importing down.

Text form (see ``docs/filters.md`` for the full reference and the exact semantics)::

    colour = "red" and year >= 2020 and tags in ["a", "b"] and not camera = "x"
    (shape = "circle" or shape startswith "sq") and exists width
    taken_at >= 2019-06-01 and taken_at < 2019-06-01T18:00:00+02:00
    gps within 5 km of (48.8566, 2.3522) or gps within box (45.8, 5.9) to (47.8, 10.5)

The same filter as a dict, for programs::

    {"and": [{"field": "colour", "op": "=", "value": "red"},
             {"field": "year", "op": ">=", "value": 2020},
             {"not": {"field": "camera", "op": "=", "value": "x"}}]}

:func:`parse_filter` accepts either form (or an already parsed :data:`Filter`) and returns the
AST; each backend compiles it to its own filter form (``Backend.filter_compilers``). ``!=``
and ``not in`` are sugar for ``not (... = ...)`` / ``not (... in ...)`` so that every backend
gets one meaning for negation. The parser is a hand-written tokenizer plus recursive descent
with bounded length, nesting depth and list sizes: hostile input only ever raises
:class:`FilterSyntaxError`, never ``RecursionError``.

Dates are instants: a date literal is an :class:`Instant`, a float of Unix seconds (UTC), so a
range on it is an ordinary numeric range on a field holding Unix seconds (``taken_at``,
``mtime``) in every backend. The geographic predicates (:class:`GeoRadius`, :class:`GeoBox`)
test a field holding ``{"lat": degrees, "lon": degrees}`` (``gps``). Their words (``within``,
``of``, ``box``, ``to``, ``m``, ``km``) are recognised only where a predicate is expected, so
they stay usable as field names.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping, Union

#: longest filter text accepted (characters)
MAX_LENGTH = 10_000
#: deepest nesting of parentheses / ``not`` / dict levels
MAX_DEPTH = 32
#: most values in one ``in [...]`` list
MAX_LIST = 1024
#: integers must stay within +-2**53 so that every backend (some compare as float64) is exact
MAX_INT = 2**53

FIELD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
KEYWORDS = frozenset({"and", "or", "not", "in", "exists", "startswith", "true", "false"})
#: field names that are not payload fields in any backend (plus the language's keywords)
RESERVED_FIELDS = frozenset({"id", "vector"}) | KEYWORDS

#: largest geo radius accepted: half the Earth's circumference (every point is nearer than that)
MAX_RADIUS_M = 20_037_509.0
#: metres per distance unit of the text form
DISTANCE_UNITS = {"m": 1.0, "km": 1000.0}

COMPARE_OPS = ("=", "<", "<=", ">", ">=")
RANGE_OPS = ("<", "<=", ">", ">=")

Scalar = Union[str, int, float, bool]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_FIRST_MS = round((datetime(1, 1, 1, tzinfo=timezone.utc) - _EPOCH) / timedelta(milliseconds=1))
_LAST_MS = round((datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=timezone.utc) - _EPOCH) / timedelta(milliseconds=1))


class Instant(float):
    """A date/time literal: its Unix time in seconds (UTC), to the millisecond.

    A float, so that a range on it compiles like any numeric range, against payload fields that
    hold Unix seconds. A literal without an offset is UTC. ``str()`` is the ISO-8601 form the
    text form prints (``2019-06-01`` at UTC midnight, else ``2019-06-01T12:30:00Z``).
    """

    __slots__ = ()

    @classmethod
    def parse(cls, text: str) -> "Instant":
        """``2019-06-01``, ``2019-06-01T14:30``, ``...:05``, ``...:05.250``, with ``Z`` or ``+02:00``.

        Raises ``ValueError`` for anything else (a bad month, a year outside 1-9999...).
        """
        if not _DATE_RE.fullmatch(text):
            raise ValueError(f"{text!r} is not an ISO-8601 date (2019-06-01, 2019-06-01T14:30:00+02:00)")
        moment = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        millis = round((moment - _EPOCH) / timedelta(milliseconds=1))
        if not _FIRST_MS <= millis <= _LAST_MS:
            raise ValueError(f"{text!r} is outside the years 1 to 9999 (UTC)")
        return cls(millis / 1000)

    def isoformat(self) -> str:
        """The instant as ISO-8601 UTC (parses back to the same instant)."""
        moment = _EPOCH + timedelta(milliseconds=round(float(self) * 1000))
        if moment.time() == datetime.min.time():
            return moment.date().isoformat()
        text = moment.replace(tzinfo=None).isoformat(timespec="milliseconds" if moment.microsecond else "seconds")
        return text + "Z"

    def __str__(self) -> str:
        return self.isoformat()

    def __repr__(self) -> str:
        return f"Instant({self.isoformat()!r})"


_DATE_RE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?:[Tt][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,6})?)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})?)?"
)


class FilterError(ValueError):
    """Base class of filter errors."""


class FilterSyntaxError(FilterError):
    """Malformed filter text or dict.

    ``position`` is the 0-based character offset in the text (None for the dict form, where
    ``path`` says where, e.g. ``$.and[1].op``). ``str(error)`` shows the text with a caret
    under the position.
    """

    def __init__(self, message: str, text: str | None = None, position: int | None = None, path: str | None = None):
        self.reason = message
        self.text = text
        self.position = position
        self.path = path
        super().__init__(self._render())

    def _render(self) -> str:
        if self.path is not None:
            return f"{self.reason} (at {self.path})"
        if self.text is None or self.position is None:
            return self.reason
        start = max(0, self.position - 40)
        snippet = self.text[start : self.position + 40]
        # keep one line: control characters would break the caret alignment
        snippet = "".join(ch if ch.isprintable() else " " for ch in snippet)
        prefix = "..." if start else ""
        caret = " " * (len(prefix) + self.position - start) + "^"
        return f"{self.reason} at position {self.position}\n  {prefix}{snippet}\n  {caret}"


class UnsupportedFilterError(FilterError):
    """A valid filter that a backend cannot express (raised by its compiler)."""


# --------------------------------------------------------------------------- AST


@dataclass(frozen=True)
class Compare:
    """``field op value`` with op one of ``= < <= > >=`` (ranges take numbers only)."""

    field: str
    op: str
    value: Scalar


@dataclass(frozen=True)
class In:
    """``field in [values]``: the field equals one of the values."""

    field: str
    values: tuple[Scalar, ...]


@dataclass(frozen=True)
class Exists:
    """The field is present, not null and not an empty list."""

    field: str


@dataclass(frozen=True)
class StartsWith:
    """The field is a string beginning with ``prefix`` (case-sensitive)."""

    field: str
    prefix: str


@dataclass(frozen=True)
class Not:
    """Negation: true exactly when ``operand`` is false (so also when the field is missing)."""

    operand: "Filter"


@dataclass(frozen=True)
class And:
    """All operands hold (two or more)."""

    operands: tuple["Filter", ...]


@dataclass(frozen=True)
class Or:
    """At least one operand holds (two or more)."""

    operands: tuple["Filter", ...]


@dataclass(frozen=True)
class GeoRadius:
    """The field is a geo point ``{"lat": .., "lon": ..}`` at most ``meters`` from (``lat``, ``lon``)
    along the Earth's surface (great-circle distance, degrees WGS 84)."""

    field: str
    lat: float
    lon: float
    meters: float


@dataclass(frozen=True)
class GeoBox:
    """The field is a geo point inside the box from its south-west corner (``south``, ``west``) to
    its north-east corner (``north``, ``east``), edges included. ``west > east`` is a box that
    crosses the 180th meridian (e.g. Fiji: west 177, east -178)."""

    field: str
    south: float
    west: float
    north: float
    east: float


Filter = Union[Compare, In, Exists, StartsWith, GeoRadius, GeoBox, Not, And, Or]
FILTER_TYPES = (Compare, In, Exists, StartsWith, GeoRadius, GeoBox, Not, And, Or)
FilterInput = Union[str, Mapping[str, Any], Compare, In, Exists, StartsWith, GeoRadius, GeoBox, Not, And, Or]


def filter_fields(node: Filter) -> set[str]:
    """Every payload field a filter names (e.g. to warn about a misspelt one)."""
    if isinstance(node, Not):
        return filter_fields(node.operand)
    if isinstance(node, (And, Or)):
        return set().union(*(filter_fields(op) for op in node.operands))
    return {node.field}


def parse_filter(source: FilterInput) -> Filter:
    """Parse filter text or its dict form into the AST (an AST is returned unchanged).

    Raises :class:`FilterSyntaxError` for anything malformed.
    """
    if isinstance(source, FILTER_TYPES):
        return source
    if isinstance(source, str):
        return _Parser(source).parse()
    if isinstance(source, Mapping):
        return _from_dict(source, "$", 0)
    raise FilterSyntaxError(f"a filter must be text or a dict, not {type(source).__name__}")


# --------------------------------------------------------------------------- shared validation


def _check_field(name: Any, fail) -> str:
    if not isinstance(name, str) or not FIELD_RE.fullmatch(name):
        raise fail(f"invalid field name {name!r}: use letters, digits and _ (not first), at most 64")
    if name.lower() in RESERVED_FIELDS:
        raise fail(f"{name!r} is reserved and cannot be used as a payload field name")
    return name


def _check_literal(value: Any, fail) -> Scalar:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if abs(value) > MAX_INT:
            raise fail(f"integer {value} is outside +-2**53")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise fail("numbers must be finite")
        return value
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise fail("string contains a lone surrogate (not valid Unicode)") from None
        if "\x00" in value:
            raise fail("string contains a NUL character")
        return value
    raise fail(f"a value must be a string, number or boolean, not {type(value).__name__}")


def _make_compare(field: str, op: str, value: Scalar, fail) -> Filter:
    if op in RANGE_OPS and isinstance(value, str):
        try:
            value = Instant.parse(value)
        except ValueError:
            raise fail(f"{op!r} compares numbers or dates; {value!r} is neither (a date: 2019-06-01)") from None
    if op in RANGE_OPS and isinstance(value, bool):
        raise fail(f"{op!r} compares numbers or dates; {value!r} is not a number")
    if op not in RANGE_OPS and isinstance(value, Instant):
        raise _date_equality_error(field, value, fail)
    if op == "!=":
        return Not(Compare(field, "=", value))
    return Compare(field, op, value)


_DATE_EQUALITY_HINT = (
    "a date compares with < <= > >= only (an instant to the millisecond is never what a photo has); "
    "for the day from it write {field} >= {day} and {field} < {next_day}"
)


def _date_equality_error(field: str, day: Instant, fail) -> FilterError:
    return fail(_DATE_EQUALITY_HINT.format(field=field, day=day, next_day=Instant(day + 86_400)))


def _make_in(field: str, values: list[Scalar], negated: bool, fail) -> Filter:
    if any(isinstance(value, Instant) for value in values):
        raise _date_equality_error(field, next(v for v in values if isinstance(v, Instant)), fail)
    if not values:
        raise fail("'in' needs at least one value")
    if len(values) > MAX_LIST:
        raise fail(f"'in' accepts at most {MAX_LIST} values")
    node = In(field, tuple(values))
    return Not(node) if negated else node


def _coordinate(value: Any, what: str, limit: float, fail) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise fail(f"{what} must be a number, not {value!r}")
    if not -limit <= value <= limit:
        raise fail(f"{what} {value!r} is outside -{limit:g}..{limit:g} degrees")
    return float(value)


def make_geo_radius(field: str, lat: Any, lon: Any, meters: Any, fail) -> GeoRadius:
    """A validated :class:`GeoRadius` (``fail(message)`` builds the error to raise)."""
    lat = _coordinate(lat, "latitude", 90, fail)
    lon = _coordinate(lon, "longitude", 180, fail)
    if isinstance(meters, bool) or not isinstance(meters, (int, float)) or not 0 < meters <= MAX_RADIUS_M:
        raise fail(f"a radius must be a number of metres above 0 and at most {MAX_RADIUS_M:g}, not {meters!r}")
    return GeoRadius(field, lat, lon, float(meters))


def make_geo_box(field: str, south: Any, west: Any, north: Any, east: Any, fail) -> GeoBox:
    """A validated :class:`GeoBox` (``fail(message)`` builds the error to raise)."""
    south = _coordinate(south, "latitude", 90, fail)
    north = _coordinate(north, "latitude", 90, fail)
    west = _coordinate(west, "longitude", 180, fail)
    east = _coordinate(east, "longitude", 180, fail)
    if south > north:
        raise fail(f"a box goes from its south-west corner to its north-east corner: latitude {south:g} is north of {north:g}")
    return GeoBox(field, south, west, north, east)


# --------------------------------------------------------------------------- text form

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2}(?:[Tt][0-9:.]*(?:[Zz]|[+-][0-9:]*)?)?(?![A-Za-z0-9_.:]))
  | (?P<distance>(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:km|m)(?![A-Za-z0-9_.]))
  | (?P<number>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?(?![A-Za-z0-9_.]))
  | (?P<string>")
  | (?P<op>==|!=|<=|>=|=|<|>)
  | (?P<punct>[()\[\],])
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class _Token:
    kind: str  # number, string, op, punct, word, end
    value: Any
    position: int


class _Parser:
    """Tokenizer + recursive-descent parser over one filter text.

    Grammar (keywords case-insensitive)::

        filter    := or_expr
        or_expr   := and_expr ("or" and_expr)*
        and_expr  := unary ("and" unary)*
        unary     := "not" unary | primary
        primary   := "(" or_expr ")" | "exists" FIELD | FIELD predicate
        predicate := ("=" | "==" | "!=") literal | ("<" | "<=" | ">" | ">=") (literal | DATE)
                   | ["not"] "in" "[" literal ("," literal)* [","] "]"
                   | "exists" | "startswith" STRING
                   | "within" distance "of" point | "within" "box" point "to" point
        literal   := STRING | NUMBER | "true" | "false"
        distance  := NUMBER ("m" | "km") | NUMBERm | NUMBERkm
        point     := "(" NUMBER "," NUMBER ")"      (latitude, longitude in degrees)

    DATE is ISO-8601 unquoted (``2019-06-01``, ``2019-06-01T14:30:00+02:00``); ``within``,
    ``of``, ``box``, ``to``, ``m``, ``km`` are words only in that place, not reserved.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        if len(text) > MAX_LENGTH:
            raise self.error(f"filter is longer than {MAX_LENGTH} characters", MAX_LENGTH)
        self.tokens = self._tokenize()
        self.index = 0
        self.depth = 0

    def error(self, message: str, position: int) -> FilterSyntaxError:
        return FilterSyntaxError(message, self.text, position)

    # -- tokenizer
    def _tokenize(self) -> list[_Token]:
        tokens: list[_Token] = []
        pos = 0
        while pos < len(self.text):
            match = _TOKEN_RE.match(self.text, pos)
            if match is None:
                hint = " (strings take double quotes: \"text\")" if self.text[pos] == "'" else ""
                raise self.error(f"unexpected character {self.text[pos]!r}{hint}", pos)
            kind = match.lastgroup
            if kind == "string":
                value, end = self._read_string(pos)
                tokens.append(_Token("string", value, pos))
                pos = end
                continue
            raw = match.group()
            if kind == "number":
                tokens.append(_Token("number", self._number(raw, pos), pos))
            elif kind == "date":
                try:
                    tokens.append(_Token("date", Instant.parse(raw), pos))
                except ValueError as exc:
                    raise self.error(f"invalid date: {exc}", pos) from None
            elif kind == "distance":
                unit = "km" if raw.endswith("km") else "m"
                tokens.append(_Token("distance", float(raw[: -len(unit)]) * DISTANCE_UNITS[unit], pos))
            elif kind == "word":
                lowered = raw.lower()
                tokens.append(_Token("keyword" if lowered in KEYWORDS else "word", lowered if lowered in KEYWORDS else raw, pos))
            elif kind in ("op", "punct"):
                tokens.append(_Token(kind, "=" if raw == "==" else raw, pos))
            pos = match.end()
        tokens.append(_Token("end", None, len(self.text)))
        return tokens

    def _number(self, raw: str, pos: int) -> int | float:
        if re.fullmatch(r"-?[0-9]+", raw):
            value = int(raw)
            if abs(value) > MAX_INT:
                raise self.error(f"integer {raw} is outside +-2**53", pos)
            return value
        number = float(raw)
        if not math.isfinite(number):
            raise self.error(f"number {raw} is out of range", pos)
        return number

    def _read_string(self, start: int) -> tuple[str, int]:
        """A JSON-style double-quoted string starting at ``start``: (value, end offset)."""
        text = self.text
        pos = start + 1
        while True:
            end = text.find('"', pos)
            if end == -1:
                raise self.error("unterminated string", start)
            backslashes = len(text[pos:end]) - len(text[pos:end].rstrip("\\"))
            if backslashes % 2 == 0:
                break
            pos = end + 1
        raw = text[start : end + 1]
        if any(ord(ch) < 0x20 for ch in raw):
            bad = next(i for i, ch in enumerate(raw) if ord(ch) < 0x20)
            raise self.error("control character in string (write it as an escape, e.g. \\n)", start + bad)
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise self.error(f"invalid string literal ({getattr(exc, 'msg', exc)})", start) from None
        value = _check_literal(value, lambda message: self.error(message, start))
        return value, end + 1

    # -- parser
    def peek(self) -> _Token:
        return self.tokens[self.index]

    def advance(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def accept(self, kind: str, value: Any = None) -> _Token | None:
        token = self.peek()
        if token.kind == kind and (value is None or token.value == value):
            return self.advance()
        return None

    def expect(self, kind: str, value: Any, what: str) -> _Token:
        token = self.accept(kind, value)
        if token is None:
            raise self.error(f"expected {what}, found {self.describe(self.peek())}", self.peek().position)
        return token

    @staticmethod
    def describe(token: _Token) -> str:
        if token.kind == "end":
            return "end of filter"
        if token.kind == "string":
            return "a string"
        if token.kind in ("date", "distance"):
            return f"{token.kind} {token.value}"
        return repr(token.value) if token.kind != "number" else f"number {token.value}"

    def parse(self) -> Filter:
        if self.peek().kind == "end":
            raise self.error("empty filter", 0)
        node = self.or_expr()
        token = self.peek()
        if token.kind != "end":
            raise self.error(f"expected 'and', 'or' or end of filter, found {self.describe(token)}", token.position)
        return node

    def nest(self, position: int) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"filter is nested deeper than {MAX_DEPTH} levels", position)

    def or_expr(self) -> Filter:
        operands = [self.and_expr()]
        while self.accept("keyword", "or"):
            operands.append(self.and_expr())
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def and_expr(self) -> Filter:
        operands = [self.unary()]
        while self.accept("keyword", "and"):
            operands.append(self.unary())
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def unary(self) -> Filter:
        token = self.accept("keyword", "not")
        if token is None:
            return self.primary()
        self.nest(token.position)
        node = Not(self.unary())
        self.depth -= 1
        return node

    def primary(self) -> Filter:
        token = self.peek()
        if self.accept("punct", "("):
            self.nest(token.position)
            node = self.or_expr()
            self.expect("punct", ")", "')'")
            self.depth -= 1
            return node
        if self.accept("keyword", "exists"):
            return Exists(self.field())
        field = self.field()
        return self.predicate(field)

    def field(self) -> str:
        token = self.peek()
        if token.kind not in ("word", "keyword"):
            raise self.error(f"expected a field name, found {self.describe(token)}", token.position)
        self.advance()
        return _check_field(token.value, lambda message: self.error(message, token.position))

    def predicate(self, field: str) -> Filter:
        token = self.advance()
        fail = lambda message: self.error(message, token.position)  # noqa: E731
        if token.kind == "op":
            value_token = self.peek()
            value = self.literal()
            return _make_compare(field, token.value, value, lambda m: self.error(m, value_token.position))
        if token.kind == "keyword":
            if token.value == "exists":
                return Exists(field)
            if token.value == "startswith":
                prefix = self.peek()
                if prefix.kind != "string":
                    raise self.error(f"'startswith' needs a string, found {self.describe(prefix)}", prefix.position)
                self.advance()
                return StartsWith(field, prefix.value)
            if token.value == "in":
                return _make_in(field, self.literal_list(), False, fail)
            if token.value == "not":
                self.expect("keyword", "in", "'in' after 'not'")
                return _make_in(field, self.literal_list(), True, fail)
        if token.kind == "word" and token.value.lower() == "within":
            return self.geo(field)
        raise self.error(
            f"expected an operator (= != < <= > >= in, not in, exists, startswith, within) after field {field!r}, "
            f"found {self.describe(token)}",
            token.position,
        )

    def geo(self, field: str) -> Filter:
        """After ``FIELD within``: ``DISTANCE of (LAT, LON)`` or ``box (S, W) to (N, E)``."""
        start = self.peek()
        if self.accept_word("box"):
            south, west = self.point()
            self.expect_word("to")
            north, east = self.point()
            return make_geo_box(field, south, west, north, east, lambda m: self.error(m, start.position))
        meters = self.distance()
        self.expect_word("of")
        lat, lon = self.point()
        return make_geo_radius(field, lat, lon, meters, lambda m: self.error(m, start.position))

    def accept_word(self, word: str) -> bool:
        token = self.peek()
        if token.kind == "word" and token.value.lower() == word:
            self.advance()
            return True
        return False

    def expect_word(self, word: str) -> None:
        if not self.accept_word(word):
            raise self.error(f"expected {word!r}, found {self.describe(self.peek())}", self.peek().position)

    def distance(self) -> float:
        token = self.peek()
        if self.accept("distance"):
            return token.value
        if self.accept("number"):
            unit = self.peek()
            if unit.kind == "word" and unit.value.lower() in DISTANCE_UNITS:
                self.advance()
                return token.value * DISTANCE_UNITS[unit.value.lower()]
            token = unit
        raise self.error(
            f"expected a distance (5 km, 300 m) or 'box' after 'within', found {self.describe(token)}", token.position
        )

    def point(self) -> tuple[float, float]:
        """``(LAT, LON)`` in degrees."""
        self.expect("punct", "(", "'(' opening a point (latitude, longitude)")
        coordinates = []
        for closing in (",", ")"):
            token = self.peek()
            if not self.accept("number"):
                raise self.error(f"expected a number of degrees, found {self.describe(token)}", token.position)
            coordinates.append(token.value)
            self.expect("punct", closing, repr(closing))
        return coordinates[0], coordinates[1]

    def literal(self) -> Scalar:
        token = self.advance()
        if token.kind in ("string", "number", "date"):
            return token.value
        if token.kind == "keyword" and token.value in ("true", "false"):
            return token.value == "true"
        hint = f' (strings take double quotes: "{token.value}")' if token.kind == "word" else ""
        raise self.error(
            f"expected a value (string, number, true or false), found {self.describe(token)}{hint}", token.position
        )

    def literal_list(self) -> list[Scalar]:
        self.expect("punct", "[", "'['")
        values: list[Scalar] = []
        while not self.accept("punct", "]"):
            if len(values) >= MAX_LIST:
                raise self.error(f"'in' accepts at most {MAX_LIST} values", self.peek().position)
            values.append(self.literal())
            if not self.accept("punct", ","):
                self.expect("punct", "]", "',' or ']'")
                break
        return values


# --------------------------------------------------------------------------- dict form

_DICT_OPS = {"=", "==", "!=", "<", "<=", ">", ">=", "in", "not in", "exists", "startswith", "geo_radius", "geo_box"}
#: the keys of the value object of each geo op of the dict form
_GEO_KEYS = {"geo_radius": ("lat", "lon", "meters"), "geo_box": ("south", "west", "north", "east")}


def _from_dict(node: Any, path: str, depth: int) -> Filter:
    def fail(message: str) -> FilterSyntaxError:
        return FilterSyntaxError(message, path=path)

    if depth > MAX_DEPTH:
        raise fail(f"filter is nested deeper than {MAX_DEPTH} levels")
    if not isinstance(node, Mapping):
        raise fail(f"expected an object, found {type(node).__name__}")
    keys = set(node)
    for combinator, cls in (("and", And), ("or", Or)):
        if keys == {combinator}:
            items = node[combinator]
            if not isinstance(items, (list, tuple)) or not items:
                raise fail(f"{combinator!r} needs a non-empty list of filters")
            if len(items) > MAX_LIST:
                raise fail(f"{combinator!r} accepts at most {MAX_LIST} filters")
            operands = tuple(_from_dict(item, f"{path}.{combinator}[{i}]", depth + 1) for i, item in enumerate(items))
            return operands[0] if len(operands) == 1 else cls(operands)
    if keys == {"not"}:
        return Not(_from_dict(node["not"], f"{path}.not", depth + 1))
    if "field" not in keys or "op" not in keys:
        raise fail('expected {"and": [...]}, {"or": [...]}, {"not": {...}} or {"field": ..., "op": ..., "value": ...}')
    op = node["op"]
    if not isinstance(op, str) or op.lower() not in _DICT_OPS:
        raise fail(f"unknown op {op!r}; choose from {', '.join(sorted(_DICT_OPS))}")
    op = op.lower()
    field = _check_field(node["field"], lambda m: FilterSyntaxError(m, path=f"{path}.field"))
    allowed = {"field", "op"} if op == "exists" else {"field", "op", "value"}
    if keys != allowed:
        raise fail(f"op {op!r} takes exactly the keys {sorted(allowed)}, got {sorted(map(str, keys))}")
    if op == "exists":
        return Exists(field)
    value_fail = lambda m: FilterSyntaxError(m, path=f"{path}.value")  # noqa: E731
    value = node["value"]
    if op in _GEO_KEYS:
        keys = _GEO_KEYS[op]
        if not isinstance(value, Mapping) or set(value) != set(keys):
            raise value_fail(f"{op!r} needs an object with exactly the keys {list(keys)}")
        make = make_geo_radius if op == "geo_radius" else make_geo_box
        return make(field, *(value[key] for key in keys), value_fail)
    if op in ("in", "not in"):
        if not isinstance(value, (list, tuple)):
            raise value_fail(f"{op!r} needs a list of values")
        return _make_in(field, [_check_literal(v, value_fail) for v in value], op == "not in", value_fail)
    literal = _check_literal(value, value_fail)
    if op == "startswith":
        if not isinstance(literal, str):
            raise value_fail("'startswith' needs a string")
        return StartsWith(field, literal)
    return _make_compare(field, "=" if op == "==" else op, literal, value_fail)


# --------------------------------------------------------------------------- printing


def to_dict(node: Filter) -> dict[str, Any]:
    """The dict form of a parsed filter (``parse_filter(to_dict(f)) == f``)."""
    if isinstance(node, Compare):
        value = node.value.isoformat() if isinstance(node.value, Instant) else node.value
        return {"field": node.field, "op": node.op, "value": value}
    if isinstance(node, In):
        return {"field": node.field, "op": "in", "value": list(node.values)}
    if isinstance(node, Exists):
        return {"field": node.field, "op": "exists"}
    if isinstance(node, StartsWith):
        return {"field": node.field, "op": "startswith", "value": node.prefix}
    if isinstance(node, GeoRadius):
        return {"field": node.field, "op": "geo_radius", "value": {"lat": node.lat, "lon": node.lon, "meters": node.meters}}
    if isinstance(node, GeoBox):
        box = {"south": node.south, "west": node.west, "north": node.north, "east": node.east}
        return {"field": node.field, "op": "geo_box", "value": box}
    if isinstance(node, Not):
        return {"not": to_dict(node.operand)}
    if isinstance(node, (And, Or)):
        return {"and" if isinstance(node, And) else "or": [to_dict(child) for child in node.operands]}
    raise TypeError(f"not a filter node: {node!r}")


def format_literal(value: Scalar) -> str:
    """A literal in filter syntax (strings JSON-escaped, so any string round-trips)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Instant):
        return value.isoformat()
    if isinstance(value, float):
        text = repr(value)
        return text if "." in text or "e" in text else text + ".0"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def to_text(node: Filter) -> str:
    """The text form of a parsed filter (``parse_filter(to_text(f)) == f``)."""
    if isinstance(node, Compare):
        return f"{node.field} {node.op} {format_literal(node.value)}"
    if isinstance(node, In):
        return f"{node.field} in [{', '.join(format_literal(v) for v in node.values)}]"
    if isinstance(node, Exists):
        return f"exists {node.field}"
    if isinstance(node, StartsWith):
        return f"{node.field} startswith {format_literal(node.prefix)}"
    if isinstance(node, GeoRadius):
        km = node.meters / 1000
        whole_km = node.meters % 1000 == 0 and km * 1000 == node.meters
        distance = f"{format_literal(km)} km" if whole_km else f"{format_literal(node.meters)} m"
        return f"{node.field} within {distance} of ({format_literal(node.lat)}, {format_literal(node.lon)})"
    if isinstance(node, GeoBox):
        corners = (node.south, node.west), (node.north, node.east)
        return f"{node.field} within box " + " to ".join(f"({format_literal(a)}, {format_literal(b)})" for a, b in corners)
    if isinstance(node, Not):
        return f"not {_wrap(node.operand)}"
    if isinstance(node, (And, Or)):
        joiner = " and " if isinstance(node, And) else " or "
        return joiner.join(_wrap(child) for child in node.operands)
    raise TypeError(f"not a filter node: {node!r}")


def _wrap(node: Filter) -> str:
    return f"({to_text(node)})" if isinstance(node, (And, Or)) else to_text(node)


__all__ = [
    "And",
    "Compare",
    "Exists",
    "Filter",
    "FilterError",
    "FilterInput",
    "FilterSyntaxError",
    "GeoBox",
    "GeoRadius",
    "In",
    "Instant",
    "Not",
    "Or",
    "StartsWith",
    "UnsupportedFilterError",
    "format_literal",
    "make_geo_box",
    "make_geo_radius",
    "parse_filter",
    "to_dict",
    "to_text",
]
