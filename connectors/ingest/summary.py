"""A run's statistics, its JSON summary and its progress display."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

log = logging.getLogger("clip_ingest.ingest")


@dataclass
class RunStats:
    """Counters of one run (paths, except ``embedded`` and ``points_deleted``).

    new: paths not in the collection before (embedded, or added to an identical image's point);
    updated: known paths whose size/mtime changed (re-embedded if the content changed);
    moved: new paths whose content was known under a path that no longer exists;
    unchanged: skipped without reading; failed: in the dead-letter file;
    pruned: paths removed by ``--prune``; points_deleted: points left with no path.
    """

    scanned: int = 0
    new: int = 0
    updated: int = 0
    moved: int = 0
    unchanged: int = 0
    failed: int = 0
    pruned: int = 0
    embedded: int = 0
    points_deleted: int = 0
    started: float = field(default_factory=time.monotonic)
    duration_s: float = 0.0

    def finish(self) -> None:
        self.duration_s = time.monotonic() - self.started

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
