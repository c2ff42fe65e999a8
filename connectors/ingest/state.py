"""What the database already holds, read by scrolling the collection.

The database is the source of truth for incremental runs: nothing is kept in a
local state file, so a lost or stale local state can never cause duplicates or
skipped files. Only the fields needed to decide "unchanged" are fetched.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..sink import Sink
from .payload import path_entries
from .scan import SourceFile

STATE_FIELDS = ("path", "paths", "mtimes_ns", "size", "meta_sig")
#: points per scroll request: few round trips (they dominate an unchanged re-run on Milvus),
#: well under Milvus' 16,384-row query window
SCROLL_BATCH = 4096


@dataclass
class StoredState:
    """Paths, their recorded mtimes, the content sizes and metadata signatures of every point in a collection."""

    by_path: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    """path -> ``[(point_id, mtime_ns), ...]`` (more than one only after an interrupted run)."""
    sizes: dict[str, int] = field(default_factory=dict)
    """point_id -> content size in bytes."""
    primaries: dict[str, str] = field(default_factory=dict)
    """point_id -> its primary path, the one its user metadata comes from."""
    meta_sigs: dict[str, str] = field(default_factory=dict)
    """point_id -> :func:`~.scan.metadata_signature` its user metadata was computed with."""
    path_counts: dict[str, int] = field(default_factory=dict)
    """point_id -> how many paths it lists."""

    @classmethod
    def from_store(cls, store: Sink, batch_size: int = SCROLL_BATCH) -> "StoredState":
        """Scroll the whole collection (payload fields :data:`STATE_FIELDS` only)."""
        state = cls()
        for point in store.scroll(fields=list(STATE_FIELDS), batch_size=batch_size):
            state.sizes[point.id] = int(point.payload.get("size", -1))
            state.meta_sigs[point.id] = str(point.payload.get("meta_sig") or "")
            entries = path_entries(point.payload)
            state.path_counts[point.id] = len(entries)
            if entries:
                state.primaries[point.id] = entries[0][0]
            for path, mtime_ns in entries:
                state.by_path.setdefault(path, []).append((point.id, mtime_ns))
        return state

    def ids_listing(self, path: str) -> list[str]:
        """IDs of the points whose ``paths`` include ``path``."""
        return [pid for pid, _ in self.by_path.get(path, ())]

    def is_unchanged(self, file: SourceFile) -> bool:
        """Exactly one point lists this path, with the same size and mtime_ns: skip without reading."""
        entries = self.by_path.get(file.path, ())
        if len(entries) != 1:
            return False
        pid, mtime_ns = entries[0]
        return mtime_ns == file.mtime_ns and self.sizes.get(pid) == file.size

    def metadata_current(self, file: SourceFile) -> bool:
        """Whether the stored user metadata that depends on ``file`` is up to date: it is when ``file``
        is not the primary path of its point (the primary's metadata is what is stored), or when
        its metadata sources are those the payload was computed from."""
        pid = self.by_path[file.path][0][0]
        return self.primaries.get(pid) != file.path or self.meta_sigs.get(pid) == file.meta_sig

    def shared(self, path: str) -> bool:
        """Whether a point lists ``path`` beside other paths (so it may become that point's primary)."""
        return any(self.path_counts.get(pid, 0) > 1 for pid, _ in self.by_path.get(path, ()))

    def known(self, point_id: str) -> bool:
        """Whether a point with this id existed when the run started."""
        return point_id in self.sizes
