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
from dataclasses import dataclass
from typing import IO

from .lock import run_file_stem
from .payload import now_iso


@dataclass(frozen=True)
class RunFiles:
    """Where the runs of one target + collection (+ shard) keep their files by default, under
    ``DATA_DIR/dead-letter/``: the dead-letter file, the last run's summary (every run writes it;
    ``clip-ingest status`` reads it) and the quarantine file (per target + collection: the
    shards of a run share it, each meeting only its own files)."""

    dead_letter: str
    last_run: str
    quarantine: str
    sources: str
    """The filesystem each source folder was on at the last prune (:mod:`.mounts`)."""

    @classmethod
    def of(cls, data_dir: str | os.PathLike, target: str, collection: str, worker: str = "",
           dead_letter: str | None = None) -> "RunFiles":
        """The files of ``collection`` on ``target``; ``worker``: a shard label; ``dead_letter``:
        a dead-letter file given by the user instead of the default."""
        folder = os.path.join(os.fspath(data_dir), "dead-letter")
        stem = run_file_stem(target, collection, worker)
        return cls(dead_letter=dead_letter or os.path.join(folder, f"{stem}.jsonl"),
                   last_run=os.path.join(folder, f"{stem}.last-run.json"),
                   quarantine=os.path.join(folder, f"{run_file_stem(target, collection)}.quarantine.jsonl"),
                   sources=os.path.join(folder, f"{stem}.sources.json"))


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


def read_dead_letter_head(path: str | os.PathLike, limit: int) -> tuple[list[dict], int]:
    """The first ``limit`` records of a dead-letter file and how many it holds in all; a missing
    file holds none. A line a killed run left half-written is counted, not parsed."""
    records: list[dict] = []
    total = 0
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if not line.strip():
                    continue
                total += 1
                if len(records) < limit:
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError:
                        pass
    except FileNotFoundError:
        pass
    return records, total
