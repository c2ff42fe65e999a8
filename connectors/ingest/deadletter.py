"""The dead-letter file: one JSON line per file a run could not ingest.

Each record is ``{"path", "reason", "detail", "time"}``; ``reason`` is one of
:class:`~clip_ingest.connectors.decode.ImageDecodeError`'s reasons or a scan/
metadata reason (``outside_root``, ``bad_manifest_entry``, ``bad_metadata``,
``not_a_regular_file``: a FIFO, socket or device, never opened; ``timeout``: a read that hung).
Failed files are never written to the database, so the next run retries them
automatically; each run rewrites the file with its own failures only.
"""

from __future__ import annotations

import json
import os
import threading
from typing import IO

from .payload import now_iso


class DeadLetter:
    """Collects failures; writes them to ``path`` (None: count only, e.g. in a dry run)."""

    def __init__(self, path: str | os.PathLike | None) -> None:
        self.path = os.fspath(path) if path is not None else None
        self.count = 0
        self._lock = threading.Lock()
        self._fh: IO[str] | None = None
        if self.path is not None:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            self._fh = open(self.path, "w", encoding="utf-8")

    def record(self, path: str, reason: str, detail: str) -> None:
        """Append one failure (flushed at once, so a killed run keeps what it found)."""
        line = json.dumps({"path": path, "reason": reason, "detail": detail, "time": now_iso()}, ensure_ascii=False)
        with self._lock:
            self.count += 1
            if self._fh is not None:
                self._fh.write(line + "\n")
                self._fh.flush()

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None


def read_dead_letter(path: str | os.PathLike) -> list[dict]:
    """The records of a dead-letter file (for tools and tests)."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
