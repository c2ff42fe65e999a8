"""Keep the tables in docs/results/ and model cards equal to the run that measured them.

A document marks a generated block with two HTML comments, which Markdown renders as nothing::

    <!-- clip-model:photo-ssl-mcip -->
    ...the table written by `clip-model experiment` (experiment.md) or `clip-model eval` (eval.md)...
    <!-- /clip-model:photo-ssl-mcip -->

:func:`replace_block` puts a table file's text between them and leaves every other byte of the
document as it was, so a number in a results page is the run's number, never one copied by hand.
The document is rewritten whole or not at all (a temporary file renamed over it).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

BLOCK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class DocBlockError(ValueError):
    """The document lacks the block's markers, has them more than once, or out of order."""


def markers(name: str) -> tuple[str, str]:
    """The opening and closing comment of block ``name`` (letters, digits, ``_.-``)."""
    if not BLOCK_NAME.fullmatch(name):
        raise DocBlockError(f"block name {name!r}: use letters, digits, '_', '.' and '-'")
    return f"<!-- clip-model:{name} -->", f"<!-- /clip-model:{name} -->"


def replace_text(document: str, name: str, content: str) -> str:
    """``document`` with the text between block ``name``'s markers replaced by ``content``."""
    start, end = markers(name)
    if document.count(start) != 1 or document.count(end) != 1:
        raise DocBlockError(
            f"block {name!r} needs exactly one {start} and one {end} line "
            f"(found {document.count(start)} and {document.count(end)})"
        )
    head, rest = document.split(start, 1)
    if end not in rest:
        raise DocBlockError(f"block {name!r}: {end} comes before {start}")
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{content.strip()}\n{end}{tail}"


def replace_block(doc: str | os.PathLike, name: str, table: str | os.PathLike) -> bool:
    """Write ``table``'s text into block ``name`` of ``doc``; whether the document changed."""
    path = Path(doc)
    before = path.read_text(encoding="utf-8")
    after = replace_text(before, name, Path(table).read_text(encoding="utf-8"))
    if after == before:
        return False
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(after, encoding="utf-8")
    os.replace(tmp, path)
    return True
