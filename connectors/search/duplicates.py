"""Near-duplicate groups found with the database's own k-NN, and review decisions that stick.

Exact copies are already one point (ids come from the content hash). What is left are edits,
crops and re-encodes: images whose vectors are nearly identical. :func:`find_groups` asks the
database for each point's nearest neighbours above a similarity threshold (batched reads of the
stored vectors, one k-NN search per point: never an all-pairs matrix in memory) and forms groups
around leaders: the image with the most such neighbours takes them all, then the next image
among those left, and so on. Every member is similar to its group's leader itself, so a chain
of small steps never joins unrelated images (as single linkage would). In the duplicates tier
the members that are not a region of the leader are also one photo with each other
(:meth:`SamePhotoCheck.complete`).

A review decision (``keep-all``, ``not-duplicates``, ``keep-one``) is written into the payload
of every member (field ``duplicate_review``, with the member ids it was made on). Payload fields
survive re-runs and moves (a move only rewrites ``paths``), and ``clip-ingest migrate`` carries
them into the new collection. A group counts as resolved while its members are a subset of the
members some decision was made on: it comes back only when a new member joins it.

Two tiers. *Duplicates* (the default): the k-NN pass looks wide (a calibrated relevance of
:data:`CANDIDATE_MIN_RELEVANCE`), and :class:`SamePhotoCheck` keeps the pairs whose pixels are one
photo, edited (:mod:`.same_photo`): an embedding alone cannot tell the same photo from the same
kind of thing (on Caltech-101 with the starter, cosine 0.9 put 5,721 of 12,307 images in pairs
at a pair precision of 0.02). *Similar*: the k-NN pass alone, at :data:`DEFAULT_MIN_RELEVANCE`,
for look-alikes (other views, other shots of a scene). Figures: docs/duplicates.md.

A server keeps the k-NN pass per ``(threshold, k)`` while the collection's points stay the same
(:class:`GroupingCache`) and hands the groups out page by page (:func:`page_of`); a group is
named by its id, so a review can name the group instead of its members (:func:`group_by_id`).
"""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator, Sequence

from PIL import Image

from ..backends.base import Point, StoreError, VectorStore
from ..cpus import cpu_budget
from ..ingest.payload import REVIEW_FIELD
from ..ingest.reader import read_stored
from .same_photo import SAME_PHOTO_CUT, Thumbnail, is_region_of, same_photo_score
from .searcher import PointNotFoundError

DECISIONS = ("keep-all", "not-duplicates", "keep-one")
#: what a listing finds: edits of one photo (k-NN, then the pixel check), or look-alikes (k-NN only)
TIERS = ("duplicates", "similar")
#: the calibrated relevance the similar tier cuts at unless told otherwise
DEFAULT_MIN_RELEVANCE = 0.9
#: the calibrated relevance the duplicates tier's k-NN pass cuts at unless told otherwise: wide,
#: since the pixel check decides (planted borders score a cosine of 0.53-0.73 with the starter)
CANDIDATE_MIN_RELEVANCE = 0.5
#: what a listed member shows, so a person can pick which to keep
MEMBER_FIELDS = ("path", "size", "width", "height", "format", "sha256")
_LISTED_FIELDS = (*MEMBER_FIELDS, "paths", REVIEW_FIELD)

Neighbours = dict[str, dict[str, float]]
"""point id -> {neighbour id: cosine} for every point with at least one neighbour above the threshold."""


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

    @property
    def sort_key(self) -> tuple[int, float, str]:
        """The listing order: largest groups first, then the closest, then by id."""
        return (-len(self.members), -self.best_score, self.id)

    def to_dict(self) -> dict[str, Any]:
        return {"group": self.id, "size": len(self.members), "best_score": round(self.best_score, 6),
                "review": self.review, "members": [{"id": p.id, **{k: p.payload.get(k) for k in MEMBER_FIELDS}}
                                                   for p in self.members]}


def group_id(member_ids: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(sorted(member_ids)).encode()).hexdigest()[:16]


def _batches(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _check_threshold(threshold: float) -> None:
    if not -1.0 <= threshold <= 1.0:
        raise ValueError("threshold is a cosine similarity, between -1 and 1")


def listed_points(store: VectorStore) -> dict[str, Point]:
    """Every point of ``store`` by id, with the payload fields a listing shows (no vectors)."""
    return {p.id: p for p in store.scroll(fields=list(_LISTED_FIELDS))}


def find_neighbours(
    store: VectorStore, listed: dict[str, Point], threshold: float, *, k: int = 10, batch_size: int = 256,
    on_progress: Callable[[int, int], None] | None = None,
) -> Neighbours:
    """Each listed point's neighbours at ``threshold`` or above (at most ``k``): the expensive part
    of :func:`find_groups`, one k-NN search per point. It depends only on the stored vectors, so a
    caller may keep it while the collection's points stay the same (:class:`GroupingCache`)."""
    _check_threshold(threshold)
    ids = sorted(listed)
    neighbours: Neighbours = {}
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
    return neighbours


def default_min_relevance(tier: str) -> float:
    """The calibrated relevance ``tier``'s k-NN pass cuts at unless told otherwise."""
    if tier not in TIERS:
        raise ValueError(f"tier must be one of {', '.join(TIERS)}")
    return CANDIDATE_MIN_RELEVANCE if tier == "duplicates" else DEFAULT_MIN_RELEVANCE


def stored_image(point: Point) -> bytes | None:
    """The bytes of a point's image, read from its stored ``path`` (None: not readable now)."""
    return read_stored(point.payload.get("path"))


class SamePhotoCheck:
    """The pixel check (:func:`.same_photo.same_photo_score`) over the pairs of a k-NN pass.

    Each image is read (``image``: default its stored path) and reduced to a thumbnail once; the
    most recent ``keep`` thumbnails (~55 kB each, ~150 kB once compared) are kept. A pair with an
    image that cannot be read or decoded any more is dropped and counted in :attr:`unreadable`: a
    duplicate is only claimed on pixels that were seen.
    """

    def __init__(self, image: Callable[[Point], bytes | None] = stored_image, *, cut: float = SAME_PHOTO_CUT,
                 keep: int = 4096, workers: int | None = None) -> None:
        """``workers``: threads checking pairs (None: the CPUs this process may use; the FFTs and
        image resizes release the GIL)."""
        self.image = image
        self.cut = cut
        self.workers = workers or cpu_budget()
        self._keep = keep
        self._thumbnails: OrderedDict[str, Thumbnail | None] = OrderedDict()
        self._lock = threading.Lock()
        self.unreadable = 0

    def thumbnail(self, point: Point) -> Thumbnail | None:
        with self._lock:
            if point.id in self._thumbnails:
                self._thumbnails.move_to_end(point.id)
                return self._thumbnails[point.id]
        data = self.image(point)
        try:
            found = Thumbnail.of(data) if data is not None else None
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):  # what PIL raises on a bad file
            found = None
        with self._lock:
            self._thumbnails[point.id] = found
            while len(self._thumbnails) > self._keep:
                self._thumbnails.popitem(last=False)
        return found

    def _pair_thumbnails(self, listed: dict[str, Point], pair: tuple[str, str]) -> tuple[Thumbnail, Thumbnail] | None:
        """The pair's two thumbnails (None: an image could not be read)."""
        first, second = self.thumbnail(listed[pair[0]]), self.thumbnail(listed[pair[1]])
        return None if first is None or second is None else (first, second)

    def _region_of(self, listed: dict[str, Point], outer: str, inner: str) -> bool:
        """Whether ``inner``'s image is a region of ``outer``'s (False when one cannot be read)."""
        found = self._pair_thumbnails(listed, (outer, inner))
        return found is not None and is_region_of(*found)

    def _same(self, listed: dict[str, Point], pair: tuple[str, str]) -> bool | None:
        """Whether the pair is one photo (None: an image could not be read)."""
        found = self._pair_thumbnails(listed, pair)
        return None if found is None else same_photo_score(*found, cut=self.cut) >= self.cut

    def __call__(self, listed: dict[str, Point], neighbours: Neighbours,
                 on_progress: Callable[[int, int], None] | None = None) -> Neighbours:
        """The pairs of ``neighbours`` that are one photo, edited (each pair checked once), cut
        into groups whose members are all one photo (:meth:`complete`)."""
        pairs = sorted({(a, b) if a < b else (b, a) for a, found in neighbours.items() for b in found})
        kept: Neighbours = {}
        with ThreadPoolExecutor(self.workers, thread_name_prefix="same-photo") as pool:
            for done, ((a, b), same) in enumerate(zip(pairs, pool.map(lambda pair: self._same(listed, pair), pairs)), 1):
                if same is None:
                    self.unreadable += 1
                elif same:
                    score = neighbours.get(a, {}).get(b, neighbours.get(b, {}).get(a, 0.0))
                    kept.setdefault(a, {})[b] = score
                    kept.setdefault(b, {})[a] = score
                if on_progress and (done % 1000 == 0 or done == len(pairs)):
                    on_progress(done, len(pairs))
        return self.complete(listed, kept)

    def complete(self, listed: dict[str, Point], kept: Neighbours) -> Neighbours:
        """``kept`` cut into groups whose members are one photo: around each leader (most pairs
        first, as :func:`group_neighbours` picks them), members that are not a region of the
        leader must pass the check with each other too. A crop of one region links every photo
        that shows that region (one face pasted onto several backgrounds), and a middle view of
        an object links the views on either side of it; those photos are not one photo with each
        other. A region of the leader (a crop of it, a turned copy) is one photo through it.
        Only the leader's edges to its members are returned, so :func:`group_neighbours` finds
        these groups again."""
        grouped: Neighbours = {}
        assigned: set[str] = set()
        for leader in sorted(kept, key=lambda i: (-len(kept[i]), i)):
            if leader in assigned:
                continue
            members: list[str] = []
            peers: set[str] = set()  # members that are not a region of the leader
            for candidate in sorted(kept[leader], key=lambda i: (-kept[leader][i], i)):
                if candidate in assigned:
                    continue
                if not self._region_of(listed, leader, candidate):
                    if not all(member in kept.get(candidate, {}) or self._same(listed, (candidate, member))
                               for member in peers):
                        continue
                    peers.add(candidate)
                members.append(candidate)
            if not members:
                continue
            assigned.update((leader, *members))
            for member in members:
                grouped.setdefault(leader, {})[member] = kept[leader][member]
                grouped.setdefault(member, {})[leader] = kept[leader][member]
        return grouped


def same_photo_check(tier: str) -> SamePhotoCheck | None:
    """What ``tier`` checks the k-NN pass's pairs with: the pixel check for ``duplicates``, nothing
    for ``similar``."""
    default_min_relevance(tier)  # refuses an unknown tier
    return SamePhotoCheck() if tier == "duplicates" else None


def _checked_neighbours(store: VectorStore, listed: dict[str, Point], threshold: float, k: int,
                        same_photo: SamePhotoCheck | None, **search: Any) -> Neighbours:
    """The k-NN pass, then (the duplicates tier) the pairs that pass the pixel check."""
    neighbours = find_neighbours(store, listed, threshold, k=k, **search)
    return neighbours if same_photo is None else same_photo(listed, neighbours)


def group_neighbours(listed: dict[str, Point], neighbours: Neighbours, *, include_resolved: bool = False) -> list[Group]:
    """The groups of ``neighbours`` (largest first), with the reviews of ``listed``'s payloads;
    resolved groups only when asked."""
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
    return sorted(groups, key=lambda g: g.sort_key)


def find_groups(
    store: VectorStore, threshold: float, *, k: int = 10, batch_size: int = 256, include_resolved: bool = False,
    on_progress: Callable[[int, int], None] | None = None, same_photo: SamePhotoCheck | None = None,
) -> list[Group]:
    """Groups of near-duplicates in ``store`` (largest first); resolved groups only when asked.

    ``threshold`` is a raw cosine similarity (see :mod:`..calibration` for one that means the
    same for every model); ``k`` bounds the neighbours looked at per point; ``same_photo`` keeps
    only the pairs that pass the pixel check (the duplicates tier).
    """
    listed = listed_points(store)
    neighbours = _checked_neighbours(store, listed, threshold, k, same_photo, batch_size=batch_size, on_progress=on_progress)
    return group_neighbours(listed, neighbours, include_resolved=include_resolved)


@dataclass(frozen=True)
class _Computed:
    state: tuple[Any, ...]
    neighbours: Neighbours


class GroupingCache:
    """Groups per ``(threshold, k)`` whose k-NN pass runs once while the collection is unchanged.

    Each call still lists the points (one scroll of the listed fields, about 0.2 s at 10,000
    points) so that reviews, moves and new or removed points show at once; the neighbours are
    computed again only when the set of point ids, the collection behind an alias or its model
    differ from those they were computed on (a point's id is its content hash, so the same ids
    are the same vectors). The most recent ``entries`` ``(threshold, k)`` pairs are kept.
    """

    def __init__(self, store: VectorStore, entries: int = 4) -> None:
        self._store = store
        self._entries = entries
        self._computed: OrderedDict[tuple[float, int, float | None], _Computed] = OrderedDict()
        self._lock = threading.Lock()  # two first requests must not both run the k-NN pass

    def groups(self, threshold: float, *, k: int = 10, include_resolved: bool = False,
               same_photo: SamePhotoCheck | None = None) -> list[Group]:
        """What :func:`find_groups` returns, from the kept k-NN pass (and pixel check) when it
        still holds (ids are content hashes: the same ids are the same pixels)."""
        _check_threshold(threshold)
        listed = listed_points(self._store)
        state = (frozenset(listed), self._store.alias_target(), self._store.collection_model())
        key = (threshold, k, None if same_photo is None else same_photo.cut)
        with self._lock:
            computed = self._computed.get(key)
            if computed is None or computed.state != state:
                neighbours = _checked_neighbours(self._store, listed, threshold, k, same_photo)
                computed = self._computed[key] = _Computed(state, neighbours)
            self._computed.move_to_end(key)
            while len(self._computed) > self._entries:
                self._computed.popitem(last=False)
        return group_neighbours(listed, computed.neighbours, include_resolved=include_resolved)


@dataclass
class GroupPage:
    """One page of a listing of groups, and how many there are in all."""

    groups: list[Group]
    total_groups: int
    total_members: int
    next_cursor: str | None
    """Where the next page starts (None: this is the last page)."""


class CursorError(ValueError):
    """A paging cursor that this listing did not hand out."""


def _cursor(group: Group) -> str:
    size, score, gid = group.sort_key
    return f"{-size}_{-score!r}_{gid}"


def _after(cursor: str) -> tuple[int, float, str]:
    """The sort key a cursor names (:class:`CursorError` for anything :func:`_cursor` did not write)."""
    try:
        size, score, gid = cursor.split("_")
        key = (-int(size), -float(score), gid)
        if len(gid) == 16 and all(c in "0123456789abcdef" for c in gid):
            return key
    except ValueError:
        pass
    raise CursorError(f"{cursor!r} is not a cursor of this listing (use next_cursor as given)")


def page_of(groups: list[Group], *, limit: int, offset: int = 0, cursor: str | None = None) -> GroupPage:
    """``limit`` groups of ``groups`` (in listing order) from ``offset``, or after ``cursor``.

    A cursor names the last group of the page before by its place in the order, not by a
    position, so a page stays right when groups before it were reviewed meanwhile.
    """
    start = offset
    if cursor is not None:
        after = _after(cursor)
        start = next((i for i, g in enumerate(groups) if g.sort_key > after), len(groups))
    chosen = groups[start : start + limit]
    more = bool(chosen) and start + limit < len(groups)
    return GroupPage(chosen, len(groups), sum(len(g.members) for g in groups), _cursor(chosen[-1]) if more else None)


def group_by_id(groups: Iterable[Group], wanted: str) -> Group:
    """The group with id ``wanted``; :class:`~.searcher.PointNotFoundError` when no group has it now
    (a mistyped id, or the group changed since it was listed: list the groups again)."""
    for group in groups:
        if group.id == wanted:
            return group
    raise PointNotFoundError(f"no near-duplicate group {wanted!r} now (it changed since it was listed, or the id is "
                             "wrong; list the groups again with the same threshold and k)")


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


__all__ = ["CANDIDATE_MIN_RELEVANCE", "DECISIONS", "DEFAULT_MIN_RELEVANCE", "TIERS", "CursorError", "Group", "GroupPage", "GroupingCache",
           "MEMBER_FIELDS", "REVIEW_FIELD", "SamePhotoCheck", "carry_reviews", "default_min_relevance", "find_groups", "find_neighbours", "group_by_id", "group_id", "group_neighbours", "listed_points",
           "page_of", "record_review", "resolving_review", "same_photo_check", "stored_image"]
