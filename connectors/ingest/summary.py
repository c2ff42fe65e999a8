"""A run's statistics, its JSON summary and its progress display.

Every run leaves a summary, whatever its end: the counters of :class:`RunStats`, plus
:func:`outcome_fields` (``outcome``, a word, and ``exit_code``, what ``clip-ingest`` exits with),
``started_at`` / ``finished_at`` and the first :data:`FAILED_FILES_LISTED` failed files.
``clip-search serve``'s scheduled passes write the same fields and words.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from .deadletter import read_dead_letter_head
from .payload import now_iso

log = logging.getLogger("clip_ingest.ingest")


@dataclass
class RunStats:
    """Counters of one run (paths, except ``embedded`` and ``points_deleted``).

    new: paths not in the collection before (embedded, or added to an identical image's point);
    updated: known paths whose size/mtime changed (re-embedded if the content changed);
    moved: new paths whose content was known under a path that no longer exists;
    unchanged: skipped without reading; failed: in the dead-letter file;
    quarantined: skipped unread because ``clip-ingest quarantine`` acknowledged them (unchanged since);
    metadata_updated: stored paths whose metadata changed (sidecar, manifest row, folder label), not re-embedded;
    pruned: paths removed by ``--prune``; points_deleted: points left with no path;
    prune_refused: why ``--prune`` removed nothing (an empty source, a changed mount, over ``--max-prune``).
    """

    scanned: int = 0
    new: int = 0
    updated: int = 0
    moved: int = 0
    unchanged: int = 0
    failed: int = 0
    quarantined: int = 0
    metadata_updated: int = 0
    pruned: int = 0
    embedded: int = 0
    points_deleted: int = 0
    prune_refused: str | None = None
    started: float = field(default_factory=time.monotonic)
    duration_s: float = 0.0
    started_at: str = field(default_factory=now_iso)
    finished_at: str | None = None

    def finish(self) -> None:
        self.duration_s = time.monotonic() - self.started
        self.finished_at = now_iso()

    @property
    def images_per_s(self) -> float:
        return self.embedded / self.duration_s if self.duration_s > 0 else 0.0

    def to_dict(self, **extra: Any) -> dict[str, Any]:
        """The JSON summary: counters, duration, throughput plus ``extra`` (model_id, target...)."""
        data = {k: v for k, v in asdict(self).items() if k != "started"}
        data["duration_s"] = round(self.duration_s, 3)
        data["images_per_s"] = round(self.images_per_s, 2)
        data.update(extra)
        return data


#: the outcome word of each exit code of ``clip-ingest`` (``cli.common.EXIT_*``): a summary holds both
OUTCOMES: dict[int, str] = {
    0: "ok", 1: "fatal", 2: "usage", 3: "failed_files", 4: "locked", 5: "prune_refused", 130: "interrupted",
    143: "interrupted",
}

#: how many failed files a summary lists (``failed`` counts them all; the dead-letter file has every one)
FAILED_FILES_LISTED = 100


def outcome_fields(exit_code: int) -> dict[str, Any]:
    """``{"outcome": word, "exit_code": code}`` for a run that ends with ``exit_code``."""
    return {"outcome": OUTCOMES.get(exit_code, "fatal"), "exit_code": exit_code}


def exit_code_of(outcome: str) -> int:
    """The exit code ``clip-ingest`` gives an ``outcome`` (``interrupted``: Ctrl-C's 130)."""
    return min(code for code, word in OUTCOMES.items() if word == outcome)


def failed_files_fields(dead_letter: str | os.PathLike | None) -> dict[str, Any]:
    """``failed_files``: the first :data:`FAILED_FILES_LISTED` records (path, reason, detail) of the
    dead-letter file this run wrote, and ``failed_files_omitted``: how many more it holds."""
    records, total = read_dead_letter_head(dead_letter, FAILED_FILES_LISTED) if dead_letter else ([], 0)
    listed = [{k: r.get(k) for k in ("path", "reason", "detail")} for r in records]
    return {"failed_files": listed, "failed_files_omitted": total - len(listed)}


def write_summary(path: str | os.PathLike, summary: dict[str, Any]) -> None:
    """Write the summary atomically (a reader never sees half a file)."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)


class ScanCounts(Protocol):
    """Live counts of the scan (the :class:`~clip_ingest.connectors.ingest.plan.Planner`)."""

    scanned: int
    unchanged: int


class Progress:
    """A tqdm bar on a terminal, a log line every ``interval`` seconds otherwise (cron, CI).

    Every file handled counts, the unchanged ones skipped by the planner included, so a
    re-run over an unchanged collection shows progress too.
    """

    def __init__(
        self, stats: RunStats, scan: ScanCounts, *, enabled: bool | None = None, interval: float = 10.0
    ) -> None:
        self.stats = stats
        self.scan = scan
        self.interval = interval
        self._last = time.monotonic()
        tty = sys.stderr.isatty() if enabled is None else enabled
        self._bar = None
        if tty:
            from tqdm import tqdm

            self._bar = tqdm(unit="file", desc="ingest", dynamic_ncols=True)

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more files handled.

        The scan runs ahead of the work (it is lazy: a first count would read every folder
        twice), so the bar's total is what the scan has found so far: it grows until the scan
        ends, and the bar shows a percentage and an ETA from then on.
        """
        if self._bar is not None:
            found = max(self.scan.scanned, self._bar.n + n)
            if self._bar.total != found:
                self._bar.total = found
            self._bar.set_postfix_str(f"{self.stats.new} new, {self.scan.unchanged} unchanged, "
                                      f"{self.stats.failed} failed", refresh=False)
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            s = self.stats
            log.info(
                "progress: %d scanned, %d new, %d updated, %d moved, %d unchanged, %d failed",
                self.scan.scanned, s.new, s.updated, s.moved, self.scan.unchanged, s.failed,
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
