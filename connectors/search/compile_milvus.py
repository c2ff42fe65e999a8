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
"""

from __future__ import annotations

import math
from typing import Any

from .filters import And, Compare, Exists, Filter, In, Not, Or, Scalar, StartsWith, UnsupportedFilterError

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
        return repr(value)
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


class _Compiler:
    def __init__(self, inline: bool) -> None:
        self.inline = inline
        self.params: dict[str, Any] = {}

    def value(self, value: Any) -> str:
        if self.inline:
            return milvus_literal(value)
        name = f"p{len(self.params)}"
        self.params[name] = list(value) if isinstance(value, tuple) else value
        return "{" + name + "}"

    def expr(self, node: Filter) -> str:
        if isinstance(node, And):
            return "(" + " and ".join(self.expr(child) for child in node.operands) + ")"
        if isinstance(node, Or):
            return "(" + " or ".join(self.expr(child) for child in node.operands) + ")"
        if isinstance(node, Not):
            return f"(not {self.expr(node.operand)})"
        if isinstance(node, Exists):
            return _exists(node.field)
        if isinstance(node, Compare):
            if node.op == "=":
                return _guard(node.field, self.one_of(node.field, [node.value]))
            return _guard(node.field, f"{node.field} {_OPS[node.op]} {self.value(node.value)}")
        if isinstance(node, In):
            return _guard(node.field, " or ".join(self.one_of(node.field, group) for group in _type_groups(node.values)))
        if isinstance(node, StartsWith):
            low, high = prefix_range(node.prefix)
            bound = f"{node.field} >= {self.value(low)}"
            if high is not None:
                bound += f" and {node.field} < {self.value(high)}"
            return _guard(node.field, bound)
        raise TypeError(f"not a filter node: {node!r}")

    def one_of(self, field: str, values: list[Scalar]) -> str:
        """The field (or an element of it) equals one of ``values`` (all of one type).

        Milvus refuses mixed-type lists, so callers group by type; scalars are compared one by
        one because Milvus Lite's ``in`` fails on list payloads, and elements are tested with
        ``json_contains_any`` because ``json_contains(f, -1)`` does not parse.
        """
        scalars = " or ".join(f"{field} == {self.value(value)}" for value in values)
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


def _exists(field: str) -> str:
    # Milvus' ``exists`` is two-valued and false for a missing or null field; unlike Qdrant's it
    # is true for an empty list (no two-valued test for that exists; see docs/filters.md)
    return f"(exists {field})"


def to_milvus_expr(node: Filter, *, inline: bool = False) -> tuple[str, dict[str, Any]]:
    """``(expression, params)`` for Milvus ``filter=`` / ``filter_params=``.

    With ``inline=False`` every value is a ``{pN}`` template parameter (Milvus >= 2.5); with
    ``inline=True`` values are escaped literals and ``params`` is empty.
    """
    compiler = _Compiler(inline)
    return compiler.expr(node), compiler.params


__all__ = ["milvus_literal", "milvus_string", "prefix_range", "to_milvus_expr"]
