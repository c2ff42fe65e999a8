"""Test helpers for the filter language: a pure-Python reference evaluator, a planted payload set
and hypothesis strategies for random filters over it (used by test_filters / test_filter_fuzz).
"""

from __future__ import annotations

import os
import uuid
from typing import Any, Mapping

from hypothesis import strategies as st

from clip_ingest.connectors.search.filters import And, Compare, Exists, Filter, In, Not, Or, StartsWith

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
        payloads.append(payload)
    return payloads


def planted_id(index: int) -> str:
    """Deterministic UUID point id for planted payload ``index``."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"planted/{index}"))


# ---------------------------------------------------------------- random filters over the planted fields

_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
_strings = st.sampled_from(NASTY + NAMES) | st.text(_chars, max_size=6)
_numbers = st.sampled_from(NUMBERS) | st.integers(-10, 10) | st.floats(-10, 10, allow_nan=False).map(lambda x: round(x, 2))
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


def filters(max_leaves: int = 8) -> st.SearchStrategy[Filter]:
    """Random filters (and / or / not over the atoms) on the planted fields."""
    return st.recursive(
        _atoms(),
        lambda children: st.one_of(
            st.builds(Not, children),
            st.builds(lambda xs: And(tuple(xs)), st.lists(children, min_size=2, max_size=3)),
            st.builds(lambda xs: Or(tuple(xs)), st.lists(children, min_size=2, max_size=3)),
        ),
        max_leaves=max_leaves,
    )


# ---------------------------------------------------------------- real stores for the cross-backend tests

TARGETS = ("qdrant", "qdrant-edge", "milvus")


def store_options(target: str, root) -> dict[str, Any]:
    """``open_store`` options for an embedded store of ``target`` under the folder ``root``."""
    if target == "milvus":
        return {"uri": str(root / "milvus.db")}
    return {"path": str(root / target)}
