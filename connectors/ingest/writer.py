"""The write stage: applies write ops to the store in byte-sized batches, in a crash-safe order.

Ordering rules that make a killed run lose nothing (the next run finishes the job):

* a path is added to its new point before it is removed from an old one; all
  removals (content changed, ``--prune``) run after every new point is flushed;
* a move is one ``set_payload`` (old path replaced by the new one);
* point IDs are deterministic and writes are upserts, so repeating any step is harmless.

Store calls are retried with exponential backoff and jitter on
:class:`TransientStoreError` only; any other store error fails at once.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Callable, Iterable, Mapping

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from ..backends.base import Point, TransientStoreError, VectorStore
from .deadletter import DeadLetter
from .payload import path_entries, with_path, without_paths
from .stages import KnownContent, NewPoint, WriteOp
from .summary import RunStats

log = logging.getLogger("clip_ingest.ingest")

ChangeSink = Callable[[str, str], None]
"""Called with (kind, path) for every change: new, updated, moved, pruned, deleted."""

RETRY_ATTEMPTS = 6


def make_retrying(attempts: int = RETRY_ATTEMPTS, max_wait: float = 30.0) -> Retrying:
    """Retry on :class:`TransientStoreError` only, exponential backoff with full jitter."""
    return Retrying(
        retry=retry_if_exception_type(TransientStoreError),
        wait=wait_random_exponential(multiplier=0.5, max=max_wait),
        stop=stop_after_attempt(attempts),
        reraise=True,
        before_sleep=lambda rs: log.warning("store call failed (%s); retrying", rs.outcome.exception()),
    )


def _estimate_bytes(point: Point) -> int:
    vector = 0 if point.vector is None else point.vector.size * 4
    return vector + len(json.dumps(point.payload, default=str)) + 64


class Writer:
    """Single-threaded owner of every write of a run.

    Args:
        store: the collection.
        stats: counters updated here (new, updated, moved, pruned, points_deleted).
        dead_letter: where a point that vanished during the run is reported.
        dry_run: decide and report everything, write nothing.
        max_batch_bytes: flush new points once their estimated size reaches this.
        max_batch_points: ... or once this many are buffered.
        on_change: told about every change (used by ``--dry-run`` to print them).
        retrying: the retry policy for store calls.
    """

    def __init__(
        self,
        store: VectorStore,
        stats: RunStats,
        dead_letter: DeadLetter,
        *,
        dry_run: bool = False,
        max_batch_bytes: int = 4 << 20,
        max_batch_points: int = 1000,
        on_change: ChangeSink | None = None,
        retrying: Retrying | None = None,
    ) -> None:
        self.store = store
        self.stats = stats
        self.dead_letter = dead_letter
        self.dry_run = dry_run
        self.max_batch_bytes = max_batch_bytes
        self.max_batch_points = max_batch_points
        self.on_change = on_change or (lambda kind, path: None)
        self.retrying = retrying or make_retrying()
        self._pending: dict[str, Point] = {}
        self._pending_bytes = 0
        self._dry_created: set[str] = set()
        self._assigned: dict[str, str] = {}  # path -> point id it was written to in this run
        self._removals: dict[str, dict[str, bool]] = {}  # point id -> {path: is_prune}

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.retrying(fn, *args)

    def _note(self, kind: str, path: str) -> None:
        setattr(self.stats, kind, getattr(self.stats, kind) + 1)
        self.on_change(kind, path)

    def handle(self, op: WriteOp) -> None:
        """Apply one write op (new points are buffered until a batch is full)."""
        file = op.candidate.file
        if isinstance(op, NewPoint):
            self._add_new(op)
            self.stats.embedded += op.vector is not None
            self._note("updated" if op.candidate.previous_ids else "new", file.path)
        else:
            kind = self._add_known(op)
            if kind is None:
                return
            self._note(kind, file.path)
        self._assigned[file.path] = op.point_id
        for old in op.candidate.previous_ids:
            if old != op.point_id:
                self._removals.setdefault(old, {})[file.path] = False

    def _add_new(self, op: NewPoint) -> None:
        if op.point_id in self._pending:  # same content twice in one batch
            point = self._pending[op.point_id]
            point.payload = with_path(point.payload, op.candidate.file.path, op.candidate.file.mtime_ns)
            return
        point = Point(op.point_id, op.vector, op.payload)
        self._pending[op.point_id] = point
        self._pending_bytes += _estimate_bytes(point)
        if self._pending_bytes >= self.max_batch_bytes or len(self._pending) >= self.max_batch_points:
            self.flush_points()

    def _add_known(self, op: KnownContent) -> str | None:
        """Add the path to a stored point; returns the change kind, None when the point vanished."""
        file, cand = op.candidate.file, op.candidate
        already_listed = op.point_id in cand.previous_ids
        if op.point_id in self._pending:
            point = self._pending[op.point_id]
            point.payload = with_path(point.payload, file.path, file.mtime_ns)
            return "updated" if cand.previous_ids else "new"
        if op.point_id in self._dry_created:
            return "updated" if cand.previous_ids else "new"
        found = self._call(self.store.retrieve, [op.point_id])
        if not found:
            self.dead_letter.record(file.path, "vanished", "its point was deleted during the run; retried next run")
            self.stats.failed += 1
            return None
        payload = found[0].payload
        gone = [] if already_listed else [p for p, _ in path_entries(payload) if p != file.path and not os.path.exists(p)]
        updated = with_path(payload, file.path, file.mtime_ns, replace=gone)
        if not self.dry_run:
            self._call(self.store.set_payload, op.point_id, updated)
        if already_listed or cand.previous_ids:
            return "updated"
        return "moved" if gone else "new"

    def flush_points(self) -> None:
        """Upsert the buffered new points."""
        if not self._pending:
            return
        points = list(self._pending.values())
        if self.dry_run:
            self._dry_created.update(self._pending)
        else:
            self._call(self.store.upsert, points)
        self._pending.clear()
        self._pending_bytes = 0

    def prune(self, gone: Iterable[tuple[str, str]]) -> None:
        """Schedule removal of ``(point_id, path)`` pairs whose files are gone."""
        for point_id, path in gone:
            self._removals.setdefault(point_id, {})[path] = True

    def finish(self, batch_size: int = 256) -> None:
        """Flush new points, then apply the scheduled path removals, then make it all durable."""
        self.flush_points()
        ids = list(self._removals)
        for start in range(0, len(ids), batch_size):
            chunk = ids[start : start + batch_size]
            for point in self._call(self.store.retrieve, chunk):
                self._remove_paths(point, self._removals[point.id])
        self._removals.clear()
        if not self.dry_run:
            self._call(self.store.flush)

    def _remove_paths(self, point: Point, paths: Mapping[str, bool]) -> None:
        listed = {p for p, _ in path_entries(point.payload)}
        drop = [p for p in paths if p in listed and self._assigned.get(p) != point.id]
        if not drop:
            return
        for path in drop:
            if paths[path]:
                self._note("pruned", path)
        payload = without_paths(point.payload, drop)
        if payload["paths"]:
            if not self.dry_run:
                self._call(self.store.set_payload, point.id, payload)
            return
        if not self.dry_run:
            self._call(self.store.delete, [point.id])
        self.stats.points_deleted += 1
        self.on_change("deleted", point.id)

