"""Decide, before reading any image, which scanned files need work and which paths to prune."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Iterator

from .ids import shard_of
from .quarantine import Quarantine
from .scan import Scan, SourceFile, os_path
from .state import StoredState


@dataclass(frozen=True)
class Shard:
    """Worker ``index`` of ``count`` (``--shard I/N``): owns the files whose relative path hashes to it."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> "Shard":
        """``"2/8"`` -> ``Shard(2, 8)``; raises ValueError for anything else."""
        try:
            index, count = (int(x) for x in text.split("/"))
        except ValueError:
            raise ValueError(f"shard must look like I/N (e.g. 0/4), not {text!r}") from None
        if count < 1 or not 0 <= index < count:
            raise ValueError(f"shard {text!r}: need N >= 1 and 0 <= I < N")
        return cls(index, count)

    def owns(self, relative_path: str) -> bool:
        return self.count == 1 or shard_of(relative_path, self.count) == self.index

    @property
    def label(self) -> str:
        """``""`` for an unsharded run, else ``"shard-I-of-N"``: keeps the default lock and
        dead-letter files of parallel workers apart."""
        return "" if self.count == 1 else f"shard-{self.index}-of-{self.count}"


@dataclass(frozen=True)
class Candidate:
    """A scanned file that must be read: new, changed, or listed by more than one point."""

    file: SourceFile
    previous_ids: tuple[str, ...]
    """Points that listed this path when the run started."""


class Planner:
    """Filters a scan against the stored state.

    Iterating yields the :class:`Candidate` files; :attr:`unchanged` counts the
    skipped ones. After iterating, :meth:`gone_paths` lists the stored paths whose
    files the scan no longer found (what ``--prune`` removes).
    """

    def __init__(
        self, scan: Scan, state: StoredState, shard: Shard = Shard(), on_unchanged: Callable[[], None] | None = None,
        quarantine: Quarantine | None = None,
    ) -> None:
        self.scan = scan
        self.state = state
        self.shard = shard
        self.on_unchanged = on_unchanged
        """Called for every file skipped as unchanged (progress reporting)."""
        self.unchanged = 0
        self.scanned = 0
        self.quarantine = quarantine or Quarantine()
        self.quarantined = 0
        """Files skipped unread as quarantined and unchanged (seen: never pruned)."""
        self._seen: set[str] = set()

    def __iter__(self) -> Iterator[Candidate]:
        for file in self.scan:
            if not self.shard.owns(file.rel):
                continue
            self.scanned += 1
            self._seen.add(file.path)
            if self.quarantine.holds(file):
                self.quarantined += 1
                continue
            if self.state.is_unchanged(file):
                self.unchanged += 1
                if self.on_unchanged is not None:
                    self.on_unchanged()
                continue
            yield Candidate(file, tuple(self.state.ids_listing(file.path)))

    def _owning_root(self, path: str) -> str | None:
        for root in self.scan.roots:
            if path.startswith(root.rstrip(os.sep) + os.sep):
                return root
        return None

    def gone_paths(self) -> Iterator[tuple[str, str]]:
        """``(point_id, path)`` for stored paths under a scanned root, in this shard, not found now.

        Paths inside folders the scan could not read are never reported.
        """
        blind = [b.rstrip(os.sep) + os.sep for b in self.scan.blind_spots]
        for path, entries in self.state.by_path.items():
            if path in self._seen:
                continue
            root = self._owning_root(os_path(path))
            if root is None or any(path.startswith(b) for b in blind):
                continue
            if not self.shard.owns(os.path.relpath(os_path(path), root)):
                continue
            for point_id, _ in entries:
                yield point_id, path
