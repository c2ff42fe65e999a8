"""Quarantine: files acknowledged as broken for good, skipped unread while they stay the same.

A file that will never decode (a truncated JPEG) fails every run, so every run would exit 3.
``clip-ingest quarantine PATH`` records it in the quarantine file with its size and mtime_ns;
while both are unchanged, runs skip it without reading it (counted as ``quarantined``, not as
failed: no dead letter, no exit 3), and ``clip-ingest status`` keeps listing it. A file whose
size or mtime changed (replaced by a good copy, say) is read again like any other file.
``clip-ingest quarantine --release PATH`` forgets it.

The file is JSON lines, one :class:`QuarantineEntry` per path, beside the dead-letter files
(``DATA_DIR/dead-letter/TARGET-COLLECTION.quarantine.jsonl``: one per target + collection, shared
by the shards of a run, each of which only meets its own files). It is rewritten atomically, so a
run reading it meanwhile sees the list before or after the change, never half of it. Only local
files can be quarantined: an object-store path has no size and mtime to check here.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Iterable, Mapping

from .payload import now_iso
from .scan import SourceFile, os_path, path_key


class QuarantineError(ValueError):
    """A path that cannot be quarantined (missing, not a regular local file)."""


@dataclass(frozen=True)
class QuarantineEntry:
    """One acknowledged file: its stored path (as the dead-letter file writes it), the size and
    mtime_ns it had when it was acknowledged, why it fails, and when it was quarantined."""

    path: str
    size: int
    mtime_ns: int
    reason: str = ""
    detail: str = ""
    time: str = ""

    def matches(self, size: int, mtime_ns: int) -> bool:
        return (self.size, self.mtime_ns) == (size, mtime_ns)

    def changed_on_disk(self) -> bool:
        """Whether the file now differs from what was acknowledged (or is gone): runs read it again."""
        try:
            st = os.stat(os_path(self.path))
        except OSError:
            return True
        return not self.matches(st.st_size, st.st_mtime_ns)


class Quarantine:
    """The quarantined files of one target + collection, by path."""

    def __init__(self, entries: Iterable[QuarantineEntry] = ()) -> None:
        self.entries: dict[str, QuarantineEntry] = {e.path: e for e in entries}

    @classmethod
    def load(cls, path: str | os.PathLike | None) -> "Quarantine":
        """The quarantine file at ``path`` (None or missing: nothing quarantined)."""
        if path is None:
            return cls()
        try:
            with open(path, encoding="utf-8") as fh:
                lines = [line for line in fh if line.strip()]
        except FileNotFoundError:
            return cls()
        try:
            return cls(QuarantineEntry(**json.loads(line)) for line in lines)
        except (ValueError, TypeError) as exc:
            raise QuarantineError(f"unreadable quarantine file {os.fspath(path)}: {exc}") from None

    def holds(self, file: SourceFile) -> bool:
        """Whether a scanned file is quarantined and unchanged since (skip it unread)."""
        entry = self.entries.get(file.path)
        return entry is not None and entry.matches(file.size, file.mtime_ns)

    def save(self, path: str | os.PathLike) -> None:
        """Write the file atomically (a run reading it sees the old list or the new one)."""
        path = os.fspath(path)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            for entry in sorted(self.entries.values(), key=lambda e: e.path):
                fh.write(json.dumps(asdict(entry), ensure_ascii=False) + "\n")
        os.replace(tmp, path)


def stored_path(given: str) -> str:
    """The stored form of a path given on a command line (absolute, symlinks kept, as a scan
    records it) or taken from a dead-letter file (already in that form)."""
    if "://" in given:
        raise QuarantineError(f"{given}: only local files can be quarantined (an object-store file has no "
                              "size and mtime to check here)")
    return path_key(os.path.abspath(os_path(given)))


def acknowledge(path: str, reason: str = "", detail: str = "") -> QuarantineEntry:
    """A quarantine entry for the file at stored ``path`` as it is now."""
    try:
        st = os.stat(os_path(path))
    except OSError as exc:
        raise QuarantineError(f"{path}: {exc.strerror or exc}") from None
    if not os.path.isfile(os_path(path)):
        raise QuarantineError(f"{path}: not a regular file")
    return QuarantineEntry(path, st.st_size, st.st_mtime_ns, reason, detail, now_iso())


def add(quarantine_file: str | os.PathLike, entries: Iterable[QuarantineEntry]) -> list[QuarantineEntry]:
    """Quarantine ``entries`` (a path already there is refreshed to its current size and mtime)."""
    quarantine = Quarantine.load(quarantine_file)
    added = list(entries)
    quarantine.entries.update((e.path, e) for e in added)
    quarantine.save(quarantine_file)
    return added


def release(quarantine_file: str | os.PathLike, paths: Iterable[str]) -> list[str]:
    """Forget ``paths`` (stored form); returns the ones that were quarantined."""
    quarantine = Quarantine.load(quarantine_file)
    released = [p for p in paths if quarantine.entries.pop(p, None) is not None]
    if released:
        quarantine.save(quarantine_file)
    return released


def entries_from_dead_letter(records: Iterable[Mapping[str, str]]) -> tuple[list[QuarantineEntry], list[str]]:
    """Entries for the files of a dead-letter file, with their reason and detail, and why the
    others cannot be acknowledged (gone, an object-store path, not a regular file such as a FIFO):
    only a file that exists is acknowledged, by its size and mtime."""
    entries, refused = [], []
    for record in records:
        try:
            entries.append(acknowledge(stored_path(record["path"]), record.get("reason", ""), record.get("detail", "")))
        except QuarantineError as exc:
            refused.append(str(exc))
    return entries, refused


__all__ = ["Quarantine", "QuarantineEntry", "QuarantineError", "acknowledge", "add", "entries_from_dead_letter",
           "release", "stored_path"]
