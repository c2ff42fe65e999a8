"""A reference model of what a collection must contain, and a checker of a real store against it.

The model reads the source folders itself (sha256 of the bytes, sidecar JSON, folder labels) and
never calls the ingestion code: it is the specification of a collection, written independently.
Given the files on disk now, the collection as it was when a run started (a :class:`Snapshot`,
which carries the history the rules need: the paths a run may keep without ``prune``, the last
good metadata of a file whose sidecar turned bad) and the run's options, :func:`check_completed_run`
lists every difference between the store and the model and raises one :class:`Mismatch`
subclass per kind of difference (paths, metadata, points, embedding, statistics, prune guard),
so that hypothesis reports distinct defects as distinct failures.

The rules, in short (a file is *good* when it has no sidecar or a valid one):

* every good file is listed by exactly one point, that of its current content; ``mtimes_ns`` is
  aligned with ``paths``; one point per content, every point lists a path, ids never change;
* a file whose sidecar is invalid (not a JSON object, malformed, nested deeper than
  :data:`MAX_DEPTH`, over :data:`MAX_BYTES`) is dead-lettered (``bad_metadata``; optional for an
  unchanged second path of a stored content, whose metadata no payload holds) and its path keeps
  exactly the listing it had; a manifest row of a missing file is dead-lettered ``missing``;
* a path whose file is gone may stay listed (by the point that listed it) unless ``prune`` removed
  it or its content was found at a new path (a move);
* ``prune``: a source emptied while the collection lists paths under it, or a share of listed
  paths to remove above ``max_prune``, refuses the prune (``stats.prune_refused``); otherwise
  exactly the scanned files stay listed;
* user metadata of a point = the metadata of its primary path now (``{**sidecar, **label}``);
* embedded images = new contents stored; a dry run changes nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np
from PIL import Image

from clip_ingest.connectors.backends.base import VectorStore

#: payload keys owned by clip-ingest; everything else is user metadata
SYSTEM_KEYS = frozenset({
    "path", "paths", "mtimes_ns", "size", "mtime", "width", "height", "format", "sha256",
    "ingested_at", "model_id", "meta_sig",
})
IMAGE_EXTENSIONS = frozenset({"png", "jpg", "jpeg"})
MAX_DEPTH = 8
MAX_BYTES = 64 * 1024
MISSING = object()
"""What :func:`stat_field` returns for a statistic the implementation does not have."""


# ------------------------------------------------------------------------------ mismatches


class Mismatch(AssertionError):
    """The store differs from the model (the message lists every difference found)."""


class PathsMismatch(Mismatch):
    """A path is listed by the wrong points, not at all, or when it must not be."""


class MetadataMismatch(Mismatch):
    """A point's user metadata is not that of its primary path now."""


class PointsMismatch(Mismatch):
    """Point structure: a point with no path, a content stored twice, an id that changed, wrong facts."""


class EmbeddingMismatch(Mismatch):
    """More (or fewer) images embedded than new contents stored."""


class StatsMismatch(Mismatch):
    """A run statistic (failed, dead letters, metadata_updated) disagrees with the model."""


class PruneGuardMismatch(Mismatch):
    """``stats.prune_refused`` is not what the prune guard must say."""


class DryRunMismatch(Mismatch):
    """A dry run changed the collection."""


class Problems:
    """Differences found, by kind; :meth:`raise_if_any` raises the first kind's class with all of them."""

    ORDER = (PointsMismatch, PathsMismatch, MetadataMismatch, EmbeddingMismatch, PruneGuardMismatch,
             StatsMismatch, DryRunMismatch)

    def __init__(self) -> None:
        self.found: dict[type[Mismatch], list[str]] = defaultdict(list)

    def add(self, kind: type[Mismatch], text: str) -> None:
        self.found[kind].append(text)

    def raise_if_any(self, context: str) -> None:
        kinds = [k for k in self.ORDER if self.found.get(k)]
        if not kinds:
            return
        lines = [context]
        for kind in kinds:
            lines.append(f"{kind.__name__}:")
            lines += [f"  - {text}" for text in self.found[kind][:20]]
            if len(self.found[kind]) > 20:
                lines.append(f"  ... {len(self.found[kind]) - 20} more")
        raise kinds[0]("\n".join(lines))


def short(value: Any, limit: int = 80) -> str:
    """``repr`` cut to ``limit`` characters (hostile metadata is huge)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}...({len(text)} chars)"


def dict_diff(got: Mapping[str, Any], want: Mapping[str, Any]) -> str:
    """Keys missing, unexpected or different, one clause each."""
    parts = [f"missing {k}={short(want[k])}" for k in sorted(set(want) - set(got))]
    parts += [f"unexpected {k}={short(got[k])}" for k in sorted(set(got) - set(want))]
    parts += [f"{k}: {short(got[k])} != {short(want[k])}" for k in sorted(set(got) & set(want)) if got[k] != want[k]]
    return "; ".join(parts)


# ------------------------------------------------------------------------------ the files


BAD = None
"""Metadata of a file whose sidecar is invalid."""


def json_depth(text: str) -> int:
    """The deepest nesting of ``{``/``[`` in JSON ``text`` (strings skipped): measured without parsing,
    so that a 100,000-level document costs a loop, not a recursion."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "}]":
            depth -= 1
    return deepest


def sidecar_metadata(image_path: str) -> dict[str, Any] | None:
    """The sidecar of ``image_path`` (``IMAGE.ext.json``, else ``IMAGE.json``) as user metadata:
    ``{}`` without one, :data:`BAD` when it is invalid; reserved keys dropped."""
    for candidate in (f"{image_path}.json", f"{os.path.splitext(image_path)[0]}.json"):
        try:
            with open(candidate, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            continue
        if len(raw) > MAX_BYTES:
            return BAD
        try:
            text = raw.decode("utf-8")
            if json_depth(text) > MAX_DEPTH:
                return BAD
            data = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return BAD
        if not isinstance(data, dict):
            return BAD
        return {k: v for k, v in data.items() if k not in SYSTEM_KEYS}
    return {}


def folder_label(path: str, root: str) -> dict[str, str]:
    """``{"label": parent folder}`` for a file below a sub-folder of ``root``, ``{}`` in the root itself."""
    parent = os.path.basename(os.path.dirname(os.path.relpath(path, root)))
    return {"label": parent} if parent else {}


@dataclass(frozen=True)
class Content:
    """Facts of one file content, read by the model (PIL for the pixel size and format)."""

    sha256: str
    size: int
    width: int
    height: int
    format: str | None


def content_of(data: bytes) -> Content:
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height, fmt = image.width, image.height, image.format
    except OSError:
        width = height = 0
        fmt = None
    return Content(hashlib.sha256(data).hexdigest(), len(data), width, height, fmt)


@dataclass(frozen=True)
class DiskFile:
    """One scanned file: where, which content, its mtime and its metadata now (:data:`BAD` or a dict)."""

    path: str
    root: str
    content: Content
    mtime_ns: int
    metadata: dict[str, Any] | None


@dataclass(frozen=True)
class Disk:
    """What a run must find: the files it scans, and the manifest rows whose file is missing."""

    files: dict[str, DiskFile]
    missing: frozenset[str]
    """Paths listed by a manifest that do not exist (each dead-lettered as ``missing``)."""


def _read_file(path: str, root: str, label_from_folder: bool, row: Mapping[str, Any] | None = None) -> DiskFile:
    with open(path, "rb") as fh:
        data = fh.read()
    meta = sidecar_metadata(path)
    if meta is not BAD:
        meta = {**meta, **(folder_label(path, root) if label_from_folder else {}),
                **{k: v for k, v in (row or {}).items() if k not in SYSTEM_KEYS and v not in ("", None)}}
    return DiskFile(path, root, content_of(data), os.stat(path).st_mtime_ns, meta)


def scan_sources(directories: Iterable[str], manifests: Iterable[str], label_from_folder: bool) -> Disk:
    """Every image file under ``directories`` (hidden names skipped) and every row of the JSONL
    ``manifests`` (paths relative to the manifest's folder), as the model sees them."""
    files: dict[str, DiskFile] = {}
    missing = set()
    for root in directories:
        root = os.path.abspath(root)
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if not name.startswith(".") and name.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS:
                    path = os.path.join(dirpath, name)
                    files[path] = _read_file(path, root, label_from_folder)
    for manifest in manifests:
        root = os.path.dirname(os.path.abspath(manifest))
        with open(manifest, encoding="utf-8") as fh:
            rows = [json.loads(line) for line in fh if line.strip()]
        for row in rows:
            path = os.path.normpath(os.path.join(root, row["path"]))
            if os.path.isfile(path):
                files[path] = _read_file(path, root, label_from_folder, row)
            else:
                missing.add(path)
    return Disk(files, frozenset(missing))


# ------------------------------------------------------------------------------ the store


@dataclass
class Snapshot:
    """Every point of a collection: id -> full payload (and vectors when asked for)."""

    payloads: dict[str, dict[str, Any]]
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    duplicate_ids: list[str] = field(default_factory=list)
    """Ids the scroll returned more than once."""

    @classmethod
    def of(cls, store: VectorStore, with_vectors: bool = False) -> "Snapshot":
        """The store's points (none before its collection exists)."""
        if store.collection_model() is None:
            return cls({})
        points = list(store.scroll(fields=None))
        payloads = {p.id: p.payload for p in points}
        duplicates = sorted(pid for pid, n in Counter(p.id for p in points).items() if n > 1)
        vectors = {}
        if with_vectors and payloads:
            vectors = {p.id: np.asarray(p.vector) for p in store.retrieve(list(payloads), with_vectors=True)}
        return cls(payloads, vectors, duplicates)

    def listing(self) -> dict[str, list[str]]:
        """path -> sha256 of every point listing it."""
        by_path: dict[str, list[str]] = defaultdict(list)
        for payload in self.payloads.values():
            for path in payload.get("paths") or []:
                by_path[path].append(payload.get("sha256"))
        return by_path

    def user_metadata(self, point_id: str) -> dict[str, Any]:
        return {k: v for k, v in self.payloads[point_id].items() if k not in SYSTEM_KEYS}


def stat_field(stats: Any, name: str) -> Any:
    """``stats.name``, or :data:`MISSING` when the implementation has no such statistic."""
    return getattr(stats, name, MISSING)


@dataclass(frozen=True)
class RunSpec:
    """The options of one run that the model depends on."""

    roots: tuple[str, ...]
    """Source folders, and the folder of each manifest."""
    label_from_folder: bool
    prune: bool
    max_prune: float
    dry_run: bool = False


@dataclass
class History:
    """What the model remembers across runs: point id of each content, contents seen at each path."""

    ids: dict[str, str] = field(default_factory=dict)
    """sha256 -> the point id it was stored under (ids are deterministic: never change)."""
    contents: dict[str, Content] = field(default_factory=dict)
    at_path: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    """path -> every sha256 the file at that path has had."""

    def saw(self, files: Mapping[str, DiskFile]) -> None:
        for f in files.values():
            self.contents[f.content.sha256] = f.content
            self.at_path[f.path].add(f.content.sha256)


# ------------------------------------------------------------------------------ checks


def check_points(after: Snapshot, history: History, problems: Problems) -> None:
    """Structure every state must have, interrupted or not: each point lists paths (``path`` =
    ``paths[0]``, ``mtimes_ns`` aligned, no path twice), one point per content, stable ids,
    content facts (size, pixels, format) right."""
    for pid in after.duplicate_ids:
        problems.add(PointsMismatch, f"point id {pid} scrolled more than once")
    seen_sha: dict[str, str] = {}
    for pid, payload in after.payloads.items():
        paths = payload.get("paths") or []
        sha = payload.get("sha256")
        if not paths:
            problems.add(PointsMismatch, f"point {pid} ({short(sha, 20)}) lists no path: {short(payload, 200)}")
            continue
        if payload.get("path") != paths[0]:
            problems.add(PointsMismatch, f"point {pid}: path {payload.get('path')!r} is not paths[0] {paths[0]!r}")
        if len(payload.get("mtimes_ns") or []) != len(paths):
            problems.add(PointsMismatch, f"point {pid}: mtimes_ns {payload.get('mtimes_ns')} not aligned with {paths}")
        if len(set(paths)) != len(paths):
            problems.add(PointsMismatch, f"point {pid}: a path listed twice: {paths}")
        if sha in seen_sha:
            problems.add(PointsMismatch, f"content {sha} stored twice: points {seen_sha[sha]} and {pid}")
        seen_sha[sha] = pid
        if history.ids.setdefault(sha, pid) != pid:
            problems.add(PointsMismatch, f"content {sha[:12]} moved from point id {history.ids[sha]} to {pid}")
        content = history.contents.get(sha)
        if content is None:
            problems.add(PointsMismatch, f"point {pid}: sha256 {short(sha, 20)} is no content ever written")
            continue
        facts = {k: payload.get(k) for k in ("size", "width", "height", "format")}
        want = {"size": content.size, "width": content.width, "height": content.height, "format": content.format}
        if facts != want:
            problems.add(PointsMismatch, f"point {pid} ({paths[0]}): {dict_diff(facts, want)}")


def check_consistent(after: Snapshot, history: History, context: str) -> None:
    """After an interrupted run: structure, and every listed path had the listing point's content
    at some time (a path listed by two points is allowed here: an interrupted content change)."""
    problems = Problems()
    check_points(after, history, problems)
    for path, shas in after.listing().items():
        for sha in shas:
            if sha not in history.at_path.get(path, ()):
                problems.add(PathsMismatch, f"{path} listed by content {short(sha, 20)}, never its content")
    problems.raise_if_any(context)


def check_dry_run(*, before: Snapshot, after: Snapshot, disk: Disk, run: RunSpec, stats: Any,
                  embedded: int, context: str) -> None:
    """A dry run leaves ids, payloads and vectors exactly as they were, embeds nothing, and
    reports the prune guard's decision like a real run."""
    problems = Problems()
    if embedded:
        problems.add(DryRunMismatch, f"a dry run embedded {embedded} images")
    was = before.listing()
    check_prune_refused(prune_verdict(was, disk.files, run), was, disk.files, run, stats, problems)
    for pid in sorted(set(before.payloads) | set(after.payloads)):
        b, a = before.payloads.get(pid), after.payloads.get(pid)
        if b is None or a is None:
            problems.add(DryRunMismatch, f"point {pid} {'appeared' if b is None else 'vanished'}")
        elif a != b:
            problems.add(DryRunMismatch, f"point {pid} payload changed: {dict_diff(a, b)}")
        elif pid in before.vectors and not np.array_equal(before.vectors[pid], after.vectors.get(pid)):
            problems.add(DryRunMismatch, f"point {pid} vector changed")
    problems.raise_if_any(context)


@dataclass(frozen=True)
class PruneVerdict:
    """What the prune guard must decide for the paths listed at the start whose files are gone
    (a moved file's old path aside: that one always goes)."""

    refused: bool | None
    """Whether ``stats.prune_refused`` must be set; None where the spec allows both."""
    removed: frozenset[str]
    """Gone paths that must not be listed after the run."""
    kept: frozenset[str]
    """Gone paths that must still be listed (a refused prune removes nothing); the rest may go or stay."""


def moved_away(before: Mapping[str, list[str]], files: Mapping[str, DiskFile]) -> set[str]:
    """Listed paths whose file no longer exists while their content is found at a path that did not
    list it (a move). A file that still exists but is not scanned (its manifest row deleted) was
    not moved."""
    found_anew = {f.content.sha256 for p, f in files.items()
                  if f.metadata is not BAD and f.content.sha256 not in before.get(p, [])}
    return {p for p, shas in before.items()
            if p not in files and set(shas) & found_anew and not os.path.lexists(p)}


def prune_verdict(before: Mapping[str, list[str]], files: Mapping[str, DiskFile], run: RunSpec) -> PruneVerdict:
    """The prune guard's decision for a run (see the module docstring)."""
    gone = {p for p in before if p not in files}
    keepable = frozenset(gone - moved_away(before, files))
    if not run.prune:
        return PruneVerdict(False, frozenset(), frozenset())
    if run.max_prune >= 1.0 or not gone:
        return PruneVerdict(False, keepable, frozenset())
    empty = tuple(r + os.sep for r in run.roots if not any(f.root == r for f in files.values()))
    held = frozenset(p for p in keepable if p.startswith(empty))
    if held:  # an empty source's paths are kept; whether the other sources are pruned is not said
        return PruneVerdict(True, frozenset(), held)
    # the share of listed paths to remove; whether a moved file's old path counts is not said
    shares = {len(keepable) / len(before), len(gone) / len(before)}
    verdicts = {share > run.max_prune for share in shares}
    # a source emptied by moves only: "no file found while paths are listed under it" at the start,
    # none left to keep after the moves; either reading is allowed
    if any(p.startswith(empty) for p in before):
        verdicts.add(True)
    if verdicts == {False}:
        return PruneVerdict(False, keepable, frozenset())
    if verdicts == {True}:
        return PruneVerdict(True, frozenset(), keepable)
    return PruneVerdict(None, frozenset(), frozenset())


def check_completed_run(
    *,
    before: Snapshot,
    after: Snapshot,
    disk: Disk,
    history: History,
    run: RunSpec,
    stats: Any,
    embedded: int,
    dead_letters: list[dict[str, Any]],
    context: str,
) -> None:
    """Compare the store after a completed (not dry) run with the model; raise a :class:`Mismatch`."""
    problems = Problems()
    check_points(after, history, problems)
    files = disk.files
    was = before.listing()
    now = after.listing()
    good = {p: f for p, f in files.items() if f.metadata is not BAD}
    bad = {p: f for p, f in files.items() if f.metadata is BAD}
    moved = moved_away(was, files)
    verdict = prune_verdict(was, files, run)

    mtimes = {path: mtime for payload in after.payloads.values()
              for path, mtime in zip(payload.get("paths") or [], payload.get("mtimes_ns") or [])}
    for path, f in sorted(good.items()):
        got = now.get(path, [])
        if got != [f.content.sha256]:
            problems.add(PathsMismatch, f"{path}: listed by {[s[:12] for s in got]}, must be exactly "
                                        f"[{f.content.sha256[:12]}] (its content)")
        elif mtimes.get(path) != f.mtime_ns:
            problems.add(PointsMismatch, f"{path}: mtimes_ns says {mtimes.get(path)}, the file's is {f.mtime_ns}")
    for path, f in sorted(bad.items()):
        if sorted(now.get(path, [])) != sorted(was.get(path, [])):
            problems.add(PathsMismatch, f"{path} (invalid sidecar): listed by {[s[:12] for s in now.get(path, [])]}, "
                                        f"must keep {[s[:12] for s in was.get(path, [])]}")
    for path, shas in sorted(now.items()):
        if path in files:
            continue
        if not set(shas) <= set(was.get(path, [])):
            problems.add(PathsMismatch, f"{path} (not scanned) newly listed by {[s[:12] for s in shas]}")
        elif len(shas) > 1:
            problems.add(PathsMismatch, f"{path} (not scanned) listed by {len(shas)} points")
        elif path in moved:
            problems.add(PathsMismatch, f"{path} (not scanned): stale path of a moved file (content "
                                        f"{shas[0][:12]} found at a new path)")
        elif path in verdict.removed:
            problems.add(PathsMismatch, f"{path} (not scanned) not pruned")
    for path in sorted(verdict.kept - set(now)):
        problems.add(PathsMismatch, f"{path} (not scanned) removed although the prune must be refused")

    for pid, payload in sorted(after.payloads.items()):
        primary = payload.get("path")
        f = files.get(primary)
        if f is None or f.content.sha256 != payload.get("sha256"):
            continue
        if f.metadata is BAD:
            if pid not in before.payloads or before.payloads[pid].get("path") != primary:
                continue
            want, why = before.user_metadata(pid), "its previous metadata (sidecar invalid now)"
        else:
            want, why = f.metadata, "metadata of its primary path now"
        got = after.user_metadata(pid)
        if got != want:
            problems.add(MetadataMismatch, f"point of {primary}: {dict_diff(got, want)} (expected {why})")

    new_points = set(after.payloads) - set(before.payloads)
    if embedded != len(new_points):
        reembedded = len(set(after.payloads) & set(before.payloads))
        problems.add(EmbeddingMismatch, f"{embedded} images embedded for {len(new_points)} new contents "
                                        f"({reembedded} contents were stored already)")
    if stats.embedded != embedded:
        problems.add(EmbeddingMismatch, f"stats.embedded={stats.embedded}, the embedder saw {embedded}")

    check_prune_refused(verdict, was, files, run, stats, problems)
    check_failures(bad, disk.missing, before, stats, dead_letters, problems)
    check_metadata_updated(before, after, good, stats, problems)
    problems.raise_if_any(context)


def check_prune_refused(verdict: PruneVerdict, was: Mapping[str, list[str]], files: Mapping[str, DiskFile],
                        run: RunSpec, stats: Any, problems: Problems) -> None:
    """``stats.prune_refused`` is set exactly when the guard must refuse (a dry run included).

    A missing statistic is not reported here (a plain test says it is missing), so that the
    state machine goes on checking everything else of an implementation without it."""
    refused = stat_field(stats, "prune_refused")
    if refused is not MISSING and verdict.refused is not None and bool(refused) != verdict.refused:
        problems.add(PruneGuardMismatch, f"stats.prune_refused={refused!r}, must be "
                                         f"{'set' if verdict.refused else 'None'} (prune={run.prune}, "
                                         f"max_prune={run.max_prune}, {len(was)} paths listed, "
                                         f"{len(set(was) - set(files))} gone)")


def check_failures(bad: Mapping[str, DiskFile], missing: Iterable[str], before: Snapshot, stats: Any,
                   dead_letters: list[dict[str, Any]], problems: Problems) -> None:
    """Every file with an invalid sidecar is dead-lettered as ``bad_metadata``, every manifest row
    whose file is missing as ``missing``; nothing else fails.

    Except, optionally, a stored second path of a content (not its point's primary) whose image is
    unchanged: its metadata is in no payload, so whether its sidecar must be read at all is not said."""
    was = before.listing()
    primaries = {payload.get("path") for payload in before.payloads.values()}
    unread = {p for p, f in bad.items() if was.get(p) == [f.content.sha256] and p not in primaries}
    want = sorted([(p, "bad_metadata") for p in bad if p not in unread] + [(p, "missing") for p in missing])
    allowed = set(want) | {(p, "bad_metadata") for p in unread}
    if not len(want) <= stats.failed <= len(allowed):
        problems.add(StatsMismatch, f"stats.failed={stats.failed}, must be {len(want)} (files with an invalid "
                                    f"sidecar, manifest rows of missing files)"
                                    + (f" to {len(allowed)}" if unread else ""))
    got = {(d.get("path"), d.get("reason")) for d in dead_letters}
    if len(got) != len(dead_letters):
        twice = sorted(p for p, n in Counter(d.get("path") for d in dead_letters).items() if n > 1)
        problems.add(StatsMismatch, f"dead-lettered more than once in one run: {twice}")
    if not set(want) <= got <= allowed:
        details = [(d.get("path"), d.get("reason"), short(d.get("detail"), 60)) for d in dead_letters]
        problems.add(StatsMismatch, f"dead letters {details}, must be {want}"
                                    + (f" and may be {sorted(unread)}" if unread else ""))


def check_metadata_updated(before: Snapshot, after: Snapshot, good: Mapping[str, DiskFile], stats: Any,
                           problems: Problems) -> None:
    """``stats.metadata_updated`` is positive when a stored point kept its primary path and content
    but its metadata had to change (not checked while the statistic does not exist)."""
    count = stat_field(stats, "metadata_updated")
    if count is MISSING:
        return
    changed = []
    for pid, payload in before.payloads.items():
        primary = payload.get("path")
        stays = pid in after.payloads and after.payloads[pid].get("path") == primary and primary in good
        if stays and good[primary].content.sha256 == payload.get("sha256") \
                and before.user_metadata(pid) != good[primary].metadata:
            changed.append(pid)
    if changed and not count:
        problems.add(StatsMismatch, f"stats.metadata_updated={count!r} although the metadata of "
                                    f"{len(changed)} stored point(s) had to change")
