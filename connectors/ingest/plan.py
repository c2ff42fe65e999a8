"""Decide, before reading any image, which scanned files need work and which paths to prune.

Prune never removes what only looks gone: paths in folders the scan could not read, paths under a
source in which the scan found no file at all (an unmounted disk's empty mount point), paths under
a source now on another filesystem than when it was last ingested, and a prune that would remove
more than ``max_prune`` of the paths the collection lists are all kept, and the run says why
(:class:`PrunePlan`). ``max_prune=1`` confirms: whatever is gone is pruned.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Container, Iterator, Mapping

from .ids import shard_of
from .quarantine import Quarantine
from .scan import Scan, SourceFile, os_path
from .state import StoredState


DEFAULT_MAX_PRUNE = 0.5
"""The largest share of a collection's paths one prune removes unless confirmed (``--max-prune``)."""


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
    metadata_only: bool = False
    """The image is unchanged, only its metadata sources changed: not read, not embedded."""


@dataclass(frozen=True)
class PrunePlan:
    """What ``--prune`` removes: ``(point_id, path)`` pairs, and why some or all were kept."""

    gone: list[tuple[str, str]] = field(default_factory=list)
    refused: str | None = None


class Planner:
    """Filters a scan against the stored state.

    Iterating yields the :class:`Candidate` files; :attr:`unchanged` counts the
    skipped ones. After iterating, :meth:`gone_paths` lists the stored paths whose
    files the scan no longer found and :meth:`prune_plan` what ``--prune`` may remove of them;
    :meth:`scanned_file` returns what the scan found at a path that may become a point's primary.
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
        self._files: dict[str, SourceFile] = {}  # candidates and paths shared with other paths of a point

    def __iter__(self) -> Iterator[Candidate]:
        for file in self.scan:
            if not self.shard.owns(file.rel):
                continue
            self.scanned += 1
            self._seen.add(file.path)
            if self.quarantine.holds(file):
                self.quarantined += 1
                continue
            unchanged = self.state.is_unchanged(file)
            if not unchanged or self.state.shared(file.path):
                self._files[file.path] = file
            if unchanged and self.state.metadata_current(file):
                self.unchanged += 1
                if self.on_unchanged is not None:
                    self.on_unchanged()
                continue
            yield Candidate(file, tuple(self.state.ids_listing(file.path)), metadata_only=unchanged)

    def scanned_file(self, path: str) -> SourceFile | None:
        """The file the scan found at ``path`` if it was read this run or shares its point with
        other paths (the only paths that can become a point's new primary); else None."""
        return self._files.get(path)

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

    def prune_plan(self, max_prune: float = DEFAULT_MAX_PRUNE, moved_roots: Mapping[str, str] | None = None,
                   moved_away: Container[str] = ()) -> PrunePlan:
        """What ``--prune`` may remove of :meth:`gone_paths` (call after iterating).

        Args:
            max_prune: the largest share of the paths this shard's part of the collection lists
                that one run may prune; 1 also prunes empty and moved sources.
            moved_roots: source roots whose filesystem is not the one recorded -> a description.
            moved_away: stored paths whose files this run found elsewhere (moves): not counted.
        """
        gone = [g for g in self.gone_paths() if g[1] not in moved_away]
        if max_prune >= 1 or not gone:
            return PrunePlan(gone)
        held = {root: f"source {root} is empty (an unmounted disk looks like this)"
                for root, count in self.scan.found.items() if count == 0}
        held.update({root: f"source {root} is on another filesystem than last time ({change})"
                     for root, change in (moved_roots or {}).items()})
        reasons = []
        for root, why in held.items():
            kept = [g for g in gone if self._owning_root(os_path(g[1])) == root]
            if kept:
                gone = [g for g in gone if self._owning_root(os_path(g[1])) != root]
                reasons.append(f"{why}: its {len(kept)} stored path(s) are kept")
        listed = sum(1 for path in self.state.by_path if self._owned(path))
        if len(gone) > max_prune * listed:
            reasons.append(f"pruning would remove {len(gone)} of the {listed} stored paths "
                           f"({len(gone) / listed:.0%}, over the {max_prune:.0%} allowed by --max-prune)")
            gone = []
        if not reasons:
            return PrunePlan(gone)
        return PrunePlan(gone, "; ".join(reasons) + "; if these files are really gone, run again with --max-prune 1")

    def _owned(self, path: str) -> bool:
        """Whether a stored path is this shard's to prune (paths outside every root count for each shard)."""
        root = self._owning_root(os_path(path))
        return root is None or self.shard.owns(os.path.relpath(os_path(path), root))
