"""User metadata (sidecar files, manifest lines and rows) parsed and checked against limits.

Every entry point returns a plain ``dict`` or raises :class:`MetadataError` (a ``ValueError``):
never another exception, and never unbounded time or memory, whatever the input. The caller
dead-letters the image with reason ``bad_metadata`` and the error's text, and the run goes on.

Limits (:class:`MetadataLimits`, defaults in brackets):

``max_bytes`` [65 536]
    A sidecar file or one manifest line, in UTF-8 bytes, checked before anything is decoded; for
    a record from elsewhere (a CSV row), its compact JSON encoding.
``max_depth`` [8]
    Nesting of objects and arrays (a flat object is depth 1), checked by a linear scan of the
    text *before* it is parsed, so hostile nesting never reaches the recursive JSON parser. At most
    :data:`DEPTH_CEILING`.
``max_keys`` [256]
    Keys in all objects of one record together.
``max_value_chars`` [4 096]
    The longest string, value or key, in characters.
``max_items`` [1 024]
    Elements in all arrays of one record together.

Besides the limits, a record is refused when it is not a JSON object at the top level, is not
valid UTF-8 (a leading UTF-8 byte-order mark is accepted and dropped), is not valid JSON, or
holds a value the payload stores cannot keep exactly:

* ``NaN``, ``Infinity``, ``-Infinity`` and floats that overflow to infinity (``1e999``);
* integers outside signed 64 bits (what the databases store), including numbers of thousands of
  digits, which are refused from their length before any conversion;
* a lone surrogate (``"\\ud800"``) in a string: it has no UTF-8 form; replacing it would store
  something the user did not write, so it is an error;
* a NUL character in a string or key;
* an empty key, a key that is not a string (a CSV row with more fields than its header has the
  extra fields under the key ``None``);
* a key given twice in one object: ``json`` would keep the last one silently and lose the first
  value, so it is an error;
* (records from elsewhere) a value that is not ``None``, ``bool``, ``int``, ``float``, ``str``,
  ``list`` or ``dict``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, fields
from typing import Any, Iterator, Mapping

#: the highest ``max_depth`` allowed: the JSON parser recurses once per level
DEPTH_CEILING = 100

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
#: digits of the longest signed 64-bit integer; a longer literal is refused before ``int()``
_INT64_DIGITS = len(str(INT64_MAX))
_UTF8_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class MetadataLimits:
    """How large one record of user metadata may be (see the module docstring for each limit)."""

    max_bytes: int = 65_536
    max_depth: int = 8
    max_keys: int = 256
    max_value_chars: int = 4_096
    max_items: int = 1_024

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"metadata limit {f.name} must be a positive integer, got {value!r}")
        if self.max_depth > DEPTH_CEILING:
            raise ValueError(f"metadata limit max_depth must be at most {DEPTH_CEILING}, got {self.max_depth}")

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> MetadataLimits:
        """Limits from a settings mapping keyed by field name (``{"max_bytes": "131072"}``);
        names it does not hold keep their defaults.

        Raises:
            ValueError: an unknown name, or a value that is not a positive integer.
        """
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - names)
        if unknown:
            raise ValueError(f"unknown metadata limit(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        values = {}
        for name, value in settings.items():
            try:
                values[name] = int(value)
            except (TypeError, ValueError):
                raise ValueError(f"metadata limit {name} must be a positive integer, got {value!r}") from None
        return cls(**values)


class MetadataError(ValueError):
    """Metadata past a limit or malformed; ``reason`` is the dead-letter reason ("bad_metadata"),
    str(exc) the detail naming the source and the limit; ``limit`` is the name of the limit
    exceeded (``"max_depth"``...), ``None`` for malformed metadata."""

    reason = "bad_metadata"

    def __init__(self, source: str, detail: str, limit: str | None = None) -> None:
        super().__init__(f"{source}: {detail}")
        self.source = source
        self.limit = limit


def _past(source: str, what: str, limits: MetadataLimits, limit: str) -> MetadataError:
    return MetadataError(source, f"{what}, past the limit {limit}={getattr(limits, limit)}", limit)


def parse_json_object(data: bytes | str, source: str, limits: MetadataLimits = MetadataLimits()) -> dict[str, Any]:
    """A sidecar file's content, or one JSONL manifest line -> a JSON object of plain values, or MetadataError.

    ``source`` names the input in error messages (``sidecar /photos/a.jpg.json``,
    ``photos.jsonl:12``). Give at most ``limits.max_bytes + 1`` bytes: more is refused anyway.
    """
    text = _decode(data, source, limits)
    _check_nesting(text, source, limits)
    hooks = _Hooks(source)
    try:
        value = json.loads(
            text, object_pairs_hook=hooks.object, parse_int=hooks.integer, parse_float=hooks.number,
            parse_constant=hooks.constant,
        )
    except json.JSONDecodeError as exc:
        raise MetadataError(source, f"invalid JSON ({exc.msg}: line {exc.lineno} column {exc.colno})") from None
    if not isinstance(value, dict):
        raise MetadataError(source, f"must be a JSON object, got a JSON {_json_kind(value)}")
    _check_values(value, source, limits)
    return value


def check_record(record: Mapping[str, Any], source: str, limits: MetadataLimits = MetadataLimits()) -> dict[str, Any]:
    """A record from elsewhere (a CSV manifest row: all str values) checked against the same limits (keys, value length, bytes).

    Returns a plain ``dict`` with the same items. ``max_bytes`` applies to the record's compact
    JSON encoding.
    """
    if not isinstance(record, Mapping):
        raise MetadataError(source, f"must be a mapping, got {type(record).__name__}")
    plain = dict(record)
    _check_values(plain, source, limits)
    size = len(json.dumps(plain, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    if size > limits.max_bytes:
        raise _past(source, f"{size} bytes as JSON", limits, "max_bytes")
    return plain


def _decode(data: bytes | str, source: str, limits: MetadataLimits) -> str:
    """``data`` as text, its UTF-8 size checked before it is decoded; a leading BOM dropped."""
    if isinstance(data, str):
        if len(data) > limits.max_bytes:  # every character is at least one byte: refused without encoding it
            raise _past(source, f"{len(data)} characters (at least as many bytes)", limits, "max_bytes")
        size = len(data.encode("utf-8", "surrogatepass"))
        if size > limits.max_bytes:
            raise _past(source, f"{size} bytes", limits, "max_bytes")
        return data.removeprefix("\ufeff")
    if not isinstance(data, (bytes, bytearray)):
        raise MetadataError(source, f"must be bytes or text, got {type(data).__name__}")
    if len(data) > limits.max_bytes:
        raise _past(source, f"{len(data)} bytes", limits, "max_bytes")
    raw = bytes(data).removeprefix(_UTF8_BOM)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MetadataError(source, f"not valid UTF-8 ({exc.reason} at byte {exc.start})") from None


#: outside a string, the characters that change the nesting or open a string
_STRUCTURE = re.compile(r'[\[\]{}"]')
#: inside a string, the characters that end it or escape the next one
_IN_STRING = re.compile(r'["\\]')


def _check_nesting(text: str, source: str, limits: MetadataLimits) -> None:
    """Refuse nesting past ``max_depth`` before the recursive parser sees it.

    One pass over the text, each character looked at once (a regular expression jumps to the next
    character that matters): linear in the length whatever the content, and it stops at the first
    level past the limit. Malformed text is left to the parser.
    """
    if text.count("[") + text.count("{") <= limits.max_depth:  # too few openers to nest too deep
        return
    depth = 0
    pos = 0
    end = len(text)
    while pos < end:
        match = _STRUCTURE.search(text, pos)
        if match is None:
            return
        char = match.group()
        pos = match.end()
        if char == '"':
            pos = _string_end(text, pos)
        elif char in "[{":
            depth += 1
            if depth > limits.max_depth:
                raise _past(source, f"nested more than {limits.max_depth} levels deep", limits, "max_depth")
        else:
            depth -= 1


def _string_end(text: str, pos: int) -> int:
    """The position after the string whose content starts at ``pos`` (the end of ``text`` when it is unterminated)."""
    while True:
        match = _IN_STRING.search(text, pos)
        if match is None:
            return len(text)
        if match.group() == '"':
            return match.end()
        pos = match.end() + 1  # skip the escaped character


class _Hooks:
    """The ``json.loads`` hooks that refuse, while parsing, what a payload store cannot keep."""

    def __init__(self, source: str) -> None:
        self.source = source

    def object(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) != len(pairs):
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    raise MetadataError(self.source, f"key {_show(key)} appears twice in one object")
                seen.add(key)
        return obj

    def integer(self, literal: str) -> int:
        digits = len(literal.lstrip("-"))
        if digits > _INT64_DIGITS:  # refused before int(): thousands of digits cost quadratic time
            raise MetadataError(self.source, f"integer of {digits} digits is outside signed 64 bits")
        value = int(literal)
        if not INT64_MIN <= value <= INT64_MAX:
            raise MetadataError(self.source, f"integer {value} is outside signed 64 bits")
        return value

    def number(self, literal: str) -> float:
        value = float(literal)
        if not math.isfinite(value):
            raise MetadataError(self.source, f"number {_show(literal)} is too large for a 64-bit float")
        return value

    def constant(self, name: str) -> float:
        raise MetadataError(self.source, f"{name} is not a number the payload stores can keep")


def _check_values(record: dict[str, Any], source: str, limits: MetadataLimits) -> None:
    """Walk a record without recursion, checking every key and value against ``limits``."""
    keys = items = 0
    for value, depth in _walk(record):
        if isinstance(value, (dict, list)) and depth > limits.max_depth:
            raise _past(source, f"nested more than {limits.max_depth} levels deep", limits, "max_depth")
        if isinstance(value, dict):
            keys += len(value)
            if keys > limits.max_keys:
                raise _past(source, f"more than {limits.max_keys} keys", limits, "max_keys")
            for key in value:
                _check_key(key, source, limits)
        elif isinstance(value, list):
            items += len(value)
            if items > limits.max_items:
                raise _past(source, f"more than {limits.max_items} array elements", limits, "max_items")
        elif isinstance(value, str):
            _check_string(value, "string", source, limits)
        else:
            _check_scalar(value, source)


def _walk(record: dict[str, Any]) -> Iterator[tuple[Any, int]]:
    """Every value in ``record`` (itself included) with the depth of the object or array it is
    (``record`` is 1); a child is produced only after its parent was checked."""
    stack: list[tuple[Any, int]] = [(record, 1)]
    while stack:
        value, depth = stack.pop()
        yield value, depth
        if isinstance(value, dict):
            stack.extend((child, depth + 1) for child in value.values())
        elif isinstance(value, list):
            stack.extend((child, depth + 1) for child in value)


def _check_key(key: Any, source: str, limits: MetadataLimits) -> None:
    if key is None:
        raise MetadataError(source, "more fields than the header has columns")
    if not isinstance(key, str):
        raise MetadataError(source, f"key {key!r} is not a string")
    if not key:
        raise MetadataError(source, "empty key")
    _check_string(key, "key", source, limits)


def _check_string(text: str, what: str, source: str, limits: MetadataLimits) -> None:
    if len(text) > limits.max_value_chars:
        raise _past(source, f"{what} of {len(text)} characters", limits, "max_value_chars")
    if "\0" in text:
        raise MetadataError(source, f"{what} {_show(text)} contains a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise MetadataError(source, f"{what} {_show(text)} contains a lone surrogate U+{ord(text[exc.start]):04X}, "
                            "which has no UTF-8 form") from None


def _check_scalar(value: Any, source: str) -> None:
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise MetadataError(source, "integer outside signed 64 bits")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise MetadataError(source, f"{value} is not a number the payload stores can keep")
    else:
        raise MetadataError(source, f"value of type {type(value).__name__} is not a JSON value")


def _json_kind(value: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")


def _show(text: str, limit: int = 40) -> str:
    """``text`` quoted for an error message, shortened and with unprintable characters escaped."""
    return ascii(text if len(text) <= limit else text[:limit] + "...")
