"""Near-duplicate groups found with the database's own k-NN, and review decisions that stick.

Exact copies are already one point (ids come from the content hash). What is left are edits,
crops and re-encodes: images whose vectors are nearly identical. :func:`find_groups` asks the
database for each point's nearest neighbours above a similarity threshold (batched reads of the
stored vectors, one k-NN search per point: never an all-pairs matrix in memory) and forms groups
around leaders: the image with the most such neighbours takes them all, then the next image
among those left, and so on. Every member is similar to its group's leader itself, so a chain
of small steps never joins unrelated images (as single linkage would).

A review decision (``keep-all``, ``not-duplicates``, ``keep-one``) is written into the payload
of every member (field ``duplicate_review``, with the member ids it was made on). Payload fields
survive re-runs and moves (a move only rewrites ``paths``), and ``clip-ingest migrate`` carries
them into the new collection. A group counts as resolved while its members are a subset of the
members some decision was made on: it comes back only when a new member joins it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator, Sequence

from ..backends.base import Point, StoreError, VectorStore
from .searcher import PointNotFoundError

REVIEW_FIELD = "duplicate_review"
DECISIONS = ("keep-all", "not-duplicates", "keep-one")
_LISTED_FIELDS = ("path", "paths", "sha256", "width", "height", REVIEW_FIELD)


@dataclass
class Group:
    """Points whose vectors are nearly identical to the group's leader (similarity >= threshold)."""

    id: str
    """Stable while the members stay the same: a hash of the sorted member ids."""
    members: list[Point]
    best_score: float
    """The highest similarity of a member to the leader."""
    review: dict[str, Any] | None = None
    """The decision that resolves this group (None: open)."""

    @property
    def member_ids(self) -> list[str]:
        return [p.id for p in self.members]

    def to_dict(self) -> dict[str, Any]:
        return {"group": self.id, "size": len(self.members), "best_score": round(self.best_score, 6),
                "review": self.review, "members": [{"id": p.id, **{k: p.payload.get(k) for k in ("path", "sha256")}}
                                                   for p in self.members]}


def group_id(member_ids: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(sorted(member_ids)).encode()).hexdigest()[:16]


def _batches(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def find_groups(
    store: VectorStore, threshold: float, *, k: int = 10, batch_size: int = 256, include_resolved: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[Group]:
    """Groups of near-duplicates in ``store`` (largest first); resolved groups only when asked.

    ``threshold`` is a raw cosine similarity (see :mod:`..calibration` for one that means the
    same for every model); ``k`` bounds the neighbours looked at per point.
    """
    if not -1.0 <= threshold <= 1.0:
        raise ValueError("threshold is a cosine similarity, between -1 and 1")
    listed = {p.id: p for p in store.scroll(fields=list(_LISTED_FIELDS))}
    ids = sorted(listed)
    neighbours: dict[str, dict[str, float]] = {}
    done = 0
    for batch in _batches(ids, batch_size):
        for point in store.retrieve(list(batch), with_vectors=True):
            if point.vector is None:
                raise StoreError(f"point {point.id} came back without its vector")
            found = {hit.id: hit.score for hit in store.search(point.vector, k=k + 1, score_threshold=threshold)
                     if hit.id != point.id and hit.id in listed}
            if found:
                neighbours[point.id] = found
        done += len(batch)
        if on_progress:
            on_progress(done, len(ids))
    groups = []
    assigned: set[str] = set()
    # leaders first by how many neighbours they have, then by id: every member is similar to its
    # group's leader itself, so no chain of small steps joins unrelated images
    for leader in sorted(neighbours, key=lambda i: (-len(neighbours[i]), i)):
        if leader in assigned:
            continue
        members = sorted({leader, *(i for i in neighbours[leader] if i not in assigned)})
        if len(members) < 2:
            continue
        assigned.update(members)
        best = max(score for i, score in neighbours[leader].items() if i in members)
        group = Group(group_id(members), [listed[i] for i in members], best, review=resolving_review(listed, members))
        if group.review is None or include_resolved:
            groups.append(group)
    return sorted(groups, key=lambda g: (-len(g.members), -g.best_score, g.id))


def resolving_review(points: dict[str, Point], member_ids: Sequence[str]) -> dict[str, Any] | None:
    """The stored decision made on a superset of these members, if any."""
    wanted = set(member_ids)
    for point_id in member_ids:
        review = points[point_id].payload.get(REVIEW_FIELD)
        if isinstance(review, dict) and wanted <= set(review.get("members") or ()):
            return review
    return None


def record_review(store: VectorStore, member_ids: Sequence[str], decision: str, keep: str | None = None) -> dict[str, Any]:
    """Write ``decision`` into every member's payload; returns the review written.

    ``keep-one`` names the point to keep (``keep``); clip-ingest deletes nothing: which files to
    remove is the user's call, made from the review. ``ValueError`` for a bad decision;
    :class:`~.searcher.PointNotFoundError` when a member is not in the collection (the group changed).
    """
    if len(set(member_ids)) < 2:
        raise ValueError("a group has at least two members")
    if decision not in DECISIONS:
        raise ValueError(f"decision must be one of {', '.join(DECISIONS)}")
    if (decision == "keep-one") != (keep is not None):
        raise ValueError("keep-one takes the point to keep (and only keep-one does)")
    if keep is not None and keep not in member_ids:
        raise ValueError(f"{keep} is not a member of the group")
    review = {"decision": decision, "members": sorted(member_ids), "keep": keep,
              "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    stored = {p.id: p.payload for p in store.retrieve(list(member_ids))}
    missing = sorted(set(member_ids) - set(stored))
    if missing:
        raise PointNotFoundError(f"no point {missing[0]} in the collection (re-run the finder: the group changed)")
    store.set_payloads({point_id: {**payload, REVIEW_FIELD: review} for point_id, payload in stored.items()})
    return review


def carry_reviews(source: VectorStore, into: VectorStore, batch_size: int = 256) -> int:
    """Copy review decisions from ``source`` to the points of ``into`` with the same ids; returns how many."""
    reviews = {p.id: p.payload[REVIEW_FIELD] for p in source.scroll(fields=[REVIEW_FIELD]) if REVIEW_FIELD in p.payload}
    carried = 0
    for batch in _batches(sorted(reviews), batch_size):
        present = {p.id: p.payload for p in into.retrieve(list(batch))}
        if present:
            into.set_payloads({i: {**payload, REVIEW_FIELD: reviews[i]} for i, payload in present.items()})
            carried += len(present)
    return carried


__all__ = ["DECISIONS", "Group", "REVIEW_FIELD", "carry_reviews", "find_groups", "group_id", "record_review",
           "resolving_review"]
