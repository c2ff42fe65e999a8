"""The write stage: applies write ops to the store in byte-sized batches, in a crash-safe order.

Ordering rules that make a killed run lose nothing (the next run finishes the job):

* a path is added to its new point before it is removed from an old one; all
  removals (content changed, ``--prune``) run after every new point is flushed;
* a move is one payload update (old path replaced by the new one);
* a point's user metadata is its primary path's: replaced whenever the primary changes (a move,
  a removal) or its metadata sources changed (``metadata_only`` candidates), never re-embedded;
* payload updates are batched like new points: one read and one ``set_payloads`` per batch,
  not a round trip per file (a server read waits for its time tick);
* point IDs are deterministic and writes are upserts, so repeating any step is harmless.

Store calls are retried with exponential backoff and jitter on
:class:`TransientStoreError` only; any other store error fails at once.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Callable, Iterable, Mapping

from tenacity import Retrying, retry_if_exception_type, stop_before_delay, wait_random_exponential

from ..backends.base import Point, TransientStoreError
from ..sink import Sink
from .deadletter import DeadLetter
from .payload import path_entries, with_metadata, with_path, without_paths
from .scan import os_path
from .stages import KnownContent, NewPoint, WriteOp
from .summary import RunStats

log = logging.getLogger("clip_ingest.ingest")

ChangeSink = Callable[[str, str], None]
"""Called with (kind, path) for every change: new, updated, moved, metadata_updated, pruned, deleted."""

Describe = Callable[[str], "tuple[dict[str, Any], str] | None"]
"""The user metadata and metadata signature of a path that became a point's primary; None when
unknown this run (the next run that scans the path re-reads it)."""

RETRY_FOR_S = 120.0
"""Default seconds a store call is retried for: long enough to ride out a server restart."""


def make_retrying(retry_for: float = RETRY_FOR_S, max_wait: float = 10.0) -> Retrying:
    """Retry on :class:`TransientStoreError` only, for ``retry_for`` seconds in all.

    Waits grow exponentially with full jitter up to ``max_wait`` (so a server that comes back is
    seen within seconds); no retry starts after the budget. ``retry_for=0`` tries once.
    """
    return Retrying(
        retry=retry_if_exception_type(TransientStoreError),
        wait=wait_random_exponential(multiplier=0.5, max=max_wait),
        stop=stop_before_delay(retry_for),
        reraise=True,
        before_sleep=lambda rs: log.warning(
            "store call failed (%s); retrying for up to %.0f s more (--retry-for %g)",
            rs.outcome.exception(), max(0.0, retry_for - (rs.seconds_since_start or 0.0)), retry_for,
        ),
    )


def _estimate_bytes(point: Point) -> int:
    vector = 0 if point.vector is None else point.vector.size * 4
    return vector + len(json.dumps(point.payload, default=str)) + 64


class PointBatch:
    """New points held by id until their estimated size reaches ``max_bytes`` (the backend's
    request limit with room to spare) or they number ``max_points``, then handed to ``write`` in
    one call: the one batch loop of every run that writes points, embedded or loaded."""

    def __init__(self, write: Callable[[list[Point]], Any], max_bytes: int, max_points: int = 1000) -> None:
        self.write = write
        self.max_bytes = max_bytes
        self.max_points = max_points
        self.points: dict[str, Point] = {}
        self._bytes = 0

    def add(self, point: Point) -> None:
        """Hold ``point`` (replacing one of the same id); write the batch once it is full."""
        self.points[point.id] = point
        self._bytes += _estimate_bytes(point)
        if self._bytes >= self.max_bytes or len(self.points) >= self.max_points:
            self.flush()

    def flush(self) -> None:
        """Write the held points, if any."""
        if self.points:
            self.write(list(self.points.values()))
        self.points.clear()
        self._bytes = 0


class Writer:
    """Single-threaded owner of every write of a run.

    Args:
        store: the collection.
        stats: counters updated here (new, updated, moved, pruned, points_deleted).
        dead_letter: where a point that vanished during the run is reported.
        dry_run: decide and report everything, write nothing.
        max_batch_bytes: flush new points once their estimated size reaches this.
        max_batch_points: ... or once this many are buffered (also the batch of payload updates).
        on_change: told about every change (used by ``--dry-run`` to print them).
        retrying: the retry policy for store calls.
        describe: the metadata of a path that becomes a point's primary (see :data:`Describe`).
    """

    def __init__(
        self,
        store: Sink,
        stats: RunStats,
        dead_letter: DeadLetter,
        *,
        dry_run: bool = False,
        max_batch_bytes: int = 4 << 20,
        max_batch_points: int = 1000,
        on_change: ChangeSink | None = None,
        retrying: Retrying | None = None,
        describe: Describe = lambda path: None,
    ) -> None:
        self.store = store
        self.stats = stats
        self.dead_letter = dead_letter
        self.dry_run = dry_run
        self.max_batch_points = max_batch_points
        self.on_change = on_change or (lambda kind, path: None)
        self.retrying = retrying or make_retrying()
        self.describe = describe
        self._pending = PointBatch(self._write_points, max_batch_bytes, max_batch_points)
        self._dry_created: set[str] = set()
        self._known: dict[str, list[KnownContent]] = {}  # point id -> ops adding a path to it, in order
        self._known_ops = 0
        self._assigned: dict[str, str] = {}  # path -> point id it was written to in this run
        self._removals: dict[str, dict[str, bool]] = {}  # point id -> {path: is_prune}
        self.moved_away: set[str] = set()
        """Stored paths a move replaced in this run (after :meth:`flush_known`): gone, but not lost."""

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.retrying(fn, *args)

    def _note(self, kind: str, path: str) -> None:
        setattr(self.stats, kind, getattr(self.stats, kind) + 1)
        self.on_change(kind, path)

    def handle(self, op: WriteOp) -> None:
        """Apply one write op (new points and payload updates are buffered until a batch is full)."""
        kind = "updated" if op.candidate.previous_ids else "new"
        if isinstance(op, NewPoint):
            self._add_new(op)
            self.stats.embedded += op.vector is not None
            self._applied(op, kind)
        elif op.point_id in self._pending.points:  # content embedded earlier in this run, not yet written
            self._add_path_to_pending(op)
            self._applied(op, kind)
        elif op.point_id in self._dry_created:
            self._applied(op, kind)
        else:
            self._known.setdefault(op.point_id, []).append(op)
            self._known_ops += 1
            if self._known_ops >= self.max_batch_points:
                self.flush_known()

    def _applied(self, op: WriteOp, kind: str) -> None:
        """Count the change and schedule the removal of the path from the points it left."""
        path = op.candidate.file.path
        self._note(kind, path)
        self._assigned[path] = op.point_id
        for old in op.candidate.previous_ids:
            if old != op.point_id:
                self._removals.setdefault(old, {})[path] = False

    def _add_path_to_pending(self, op: WriteOp) -> None:
        point = self._pending.points[op.point_id]
        point.payload = with_path(point.payload, op.candidate.file.path, op.candidate.file.mtime_ns)

    def _add_new(self, op: NewPoint) -> None:
        if op.point_id in self._pending.points:  # same content twice in one batch
            self._add_path_to_pending(op)
            return
        self._pending.add(Point(op.point_id, op.vector, op.payload))

    def flush_known(self) -> None:
        """Add the buffered paths to their stored points: one read and one payload write per batch.

        A point deleted since the run read the collection's state is reported in the dead-letter
        file (``vanished``) for each of its paths; the next run ingests them.
        """
        known, self._known, self._known_ops = self._known, {}, 0
        if not known:
            return
        stored = {point.id: point.payload for point in self._call(self.store.retrieve, list(known))}
        updates: dict[str, dict[str, Any]] = {}
        for point_id, ops in known.items():
            payload = stored.get(point_id)
            for op in ops:
                if payload is None:
                    self.dead_letter.record(op.candidate.file.path, "vanished", "its point was deleted during the run; retried next run")
                    self.stats.failed += 1
                    continue
                payload, kind = self._with_known_path(payload, op)
                self._applied(op, kind)
            if payload is not None:
                updates[point_id] = payload
        if updates and not self.dry_run:
            self._call(self.store.set_payloads, updates)

    def _with_known_path(self, payload: Mapping[str, Any], op: KnownContent) -> tuple[dict[str, Any], str]:
        """The stored payload with the op's path added (paths gone from disk replaced: a move) and the
        primary's metadata, and the change kind."""
        file, cand = op.candidate.file, op.candidate
        already_listed = op.point_id in cand.previous_ids
        gone = [] if already_listed else [p for p, _ in path_entries(payload) if p != file.path and not os.path.exists(os_path(p))]
        self.moved_away.update(gone)
        updated = self._primary_metadata(payload, with_path(payload, file.path, file.mtime_ns, replace=gone),
                                         (file.path, op.metadata, file.meta_sig))
        if cand.metadata_only:
            return updated, "metadata_updated"
        if already_listed or cand.previous_ids:
            return updated, "updated"
        return updated, "moved" if gone else "new"

    def _primary_metadata(self, before: Mapping[str, Any], after: dict[str, Any],
                          read: tuple[str, dict[str, Any], str] | None = None) -> dict[str, Any]:
        """``after`` with its primary path's user metadata: ``read`` = (path, metadata, signature) read
        this run, used when that path is the primary; else looked up (:attr:`describe`) when the
        primary is not the one ``before`` had."""
        primary = after.get("path")
        if not after.get("paths"):
            return after
        if read is not None and primary == read[0]:
            return with_metadata(after, read[1], read[2])
        if primary == before.get("path"):
            return after
        described = self.describe(primary)
        if described is None:  # unknown now: an empty signature makes the next run re-read it
            return {**after, "meta_sig": ""}
        return with_metadata(after, *described)

    def flush_points(self) -> None:
        """Upsert the buffered new points."""
        self._pending.flush()

    def _write_points(self, points: list[Point]) -> None:
        if self.dry_run:
            self._dry_created.update(point.id for point in points)
        else:
            self._call(self.store.upsert, points)

    def prune(self, gone: Iterable[tuple[str, str]]) -> None:
        """Schedule removal of ``(point_id, path)`` pairs whose files are gone."""
        for point_id, path in gone:
            self._removals.setdefault(point_id, {})[path] = True

    def finish(self, batch_size: int = 256) -> None:
        """Flush new points and payload updates, then apply the scheduled path removals, then make it all durable."""
        self.flush_points()
        self.flush_known()
        ids = list(self._removals)
        for start in range(0, len(ids), batch_size):
            updates: dict[str, dict[str, Any]] = {}
            deleted: list[str] = []
            for point in self._call(self.store.retrieve, ids[start : start + batch_size]):
                payload = self._remove_paths(point, self._removals[point.id])
                if payload is not None and payload["paths"]:
                    updates[point.id] = payload
                elif payload is not None:
                    deleted.append(point.id)
            if not self.dry_run:
                if updates:
                    self._call(self.store.set_payloads, updates)
                if deleted:
                    self._call(self.store.delete, deleted)
            for point_id in deleted:
                self.stats.points_deleted += 1
                self.on_change("deleted", point_id)
        self._removals.clear()
        if not self.dry_run:
            self._call(self.store.flush)

    def _remove_paths(self, point: Point, paths: Mapping[str, bool]) -> dict[str, Any] | None:
        """The point's payload without ``paths`` (those pruned are counted); None when none is listed.

        A path this run assigned to the same point stays. An empty ``paths`` list in the result
        means the point has no file left and is deleted.
        """
        listed = {p for p, _ in path_entries(point.payload)}
        drop = [p for p in paths if p in listed and self._assigned.get(p) != point.id]
        if not drop:
            return None
        for path in drop:
            if paths[path]:
                self._note("pruned", path)
        return self._primary_metadata(point.payload, without_paths(point.payload, drop))
