"""Test helper: the exit-code table of docs/deployment.md, the promise each deploy test checks."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "deployment.md"
#: the exit codes the table covers (the signals' 130 / 143 are described in prose)
EXIT_CODES = (0, 1, 2, 3, 4, 5)


def documented(column: str) -> dict[int, str]:
    """``{exit code: first bold word}`` of the table column whose header starts with ``column``:
    done, alert, retried or failed."""
    rows = [line for line in DOC.read_text().splitlines() if line.startswith("| exit |") or re.match(r"\| \d \|", line)]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    index = next(i for i, name in enumerate(header) if name.startswith(column))
    fates = {}
    for row in rows[1:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        fates[int(cells[0])] = re.match(r"\*\*(\w+)\*\*", cells[index]).group(1)
    assert sorted(fates) == list(EXIT_CODES)
    return fates


__all__ = ["DOC", "EXIT_CODES", "documented"]
