"""Find the images to ingest: recursive folder walks and CSV/JSONL manifests.

A scan yields :class:`SourceFile` records (path, size, mtime, metadata known
without reading the file) and reports files it cannot use as
:class:`ScanProblem` through a callback, so one bad entry never stops a run.
Directories are walked in sorted order, symlinked folders are followed once
(a folder reached twice, e.g. through a link loop, is skipped) and hidden
files/folders (name starting with ``.``) are skipped unless asked for.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Container, Iterable, Iterator, Mapping

from ..decode import OPTIONAL_FORMATS
from . import objectstore
from .metadata import MetadataError, MetadataLimits, check_record, parse_json_object

DEFAULT_EXTENSIONS: tuple[str, ...] = (
    "jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff",
) + (("heic", "heif") if "heif" in OPTIONAL_FORMATS else ()) + (("avif",) if "avif" in OPTIONAL_FORMATS else ())


@dataclass(frozen=True)
class SourceFile:
    """An image file found by a scan.

    ``path`` is absolute (symlinks in it are kept, not resolved) and is what the
    payload records, in its stored form (:func:`path_key`: a name that is not UTF-8 is kept
    losslessly; open it at :func:`os_path`); ``rel`` is relative to ``root`` (the scanned
    folder, or the manifest's folder) and decides the shard.
    """

    path: str
    rel: str
    root: str
    size: int
    mtime_ns: int
    metadata: dict[str, Any] = field(default_factory=dict)
    meta_sig: str = ""
    """:func:`metadata_signature` of this file's metadata sources, known without reading them."""


@dataclass(frozen=True)
class ScanProblem:
    """A source entry that cannot be ingested (same fields as a dead-letter record)."""

    path: str
    reason: str
    detail: str


class ManifestError(ValueError):
    """A manifest file is unreadable or malformed as a whole (bad header, not CSV/JSONL)."""


ProblemSink = Callable[[ScanProblem], None]


def normalise_extensions(exts: Iterable[str]) -> frozenset[str]:
    """``[".JPG", "png"]`` -> ``{"jpg", "png"}``."""
    return frozenset(e.lower().lstrip(".") for e in exts if e.strip(". "))


def _source_root(source: str) -> str:
    """A source folder as scanned and stored: absolute for a local folder, the URI without a
    trailing ``/`` for an object-store prefix."""
    return source.rstrip("/") if objectstore.is_uri(source) else os.path.abspath(source)


def is_source_folder(source: str) -> bool:
    """Whether ``source`` is a folder, or an object-store prefix that holds objects.

    Raises:
        ValueError: an object-store URI that carries credentials or a query.
        OSError: the object store cannot be reached or refuses the credentials.
    """
    return objectstore.is_folder(source) if objectstore.is_uri(source) else os.path.isdir(source)


def _is_hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in Path(rel).parts)


def _folder_label(rel: str) -> dict[str, Any]:
    parent = Path(rel).parent.name
    return {"label": parent} if parent else {}


#: a file name byte that is not UTF-8 (``os`` keeps byte B as the lone surrogate U+DC00+B) is stored
#: as the private-use character U+F700+B: valid UTF-8 (payloads are JSON), and reversible
_SURROGATES = re.compile("[\udc80-\udcff]")
_ESCAPED = re.compile("[\uf780-\uf7ff]")


def path_key(os_path: str) -> str:
    """The form of a file path that is stored and compared: ``os_path`` itself when it is valid
    UTF-8 (every usual name), else each undecodable byte B as U+F700+B (lossless; see
    :func:`os_path`). A name that really contains U+F780-U+F7FF, private-use characters no
    keyboard produces, would be read back as bytes: the one case this scheme gets wrong."""
    return _SURROGATES.sub(lambda m: chr(ord(m.group()) - 0xDC00 + 0xF700), os_path)


def os_path(key: str) -> str:
    """The path to open for a stored ``key`` (the inverse of :func:`path_key`)."""
    return _ESCAPED.sub(lambda m: chr(ord(m.group()) - 0xF700 + 0xDC00), key)


_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
)


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words (``a named pipe (FIFO)``...)."""
    return next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")


def _stat_file(path: str, report: ProblemSink) -> os.stat_result | None:
    """``os.stat`` of a regular file; anything else is reported, never opened (reading a FIFO or a
    device would block the run forever)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        report(ScanProblem(path_key(path), "missing", "file does not exist (or is a broken symlink)"))
        return None
    except OSError as exc:
        report(ScanProblem(path_key(path), "unreadable", path_key(str(exc))))
        return None
    if not stat.S_ISREG(st.st_mode):
        report(ScanProblem(path_key(path), "not_a_regular_file", f"{file_kind(st.st_mode)}, not a regular file: skipped unread"))
        return None
    return st


class Scan:
    """One pass over the sources.

    Args:
        directories: folders walked recursively.
        manifests: CSV (``path`` column + metadata columns) or JSONL (``{"path": ..., ...}``)
            files; relative paths resolve against the manifest's folder and paths that
            leave that folder are refused.
        extensions: file extensions taken from folders (manifests list files explicitly).
        include_hidden: also take files and folders whose name starts with ``.``.
        label_from_folder: add ``label`` = name of the file's parent folder (below the root).
        on_problem: called for every entry that cannot be used.
        metadata_limits: the limits a manifest row must keep (past them: ``bad_metadata``).

    After iterating, :attr:`roots` are the folders the scan covered and :attr:`blind_spots`
    the folders it could not read (pruning must not touch paths in them).
    """

    def __init__(
        self,
        directories: Iterable[str | os.PathLike] = (),
        manifests: Iterable[str | os.PathLike] = (),
        *,
        extensions: Iterable[str] = DEFAULT_EXTENSIONS,
        include_hidden: bool = False,
        label_from_folder: bool = False,
        on_problem: ProblemSink = lambda problem: None,
        metadata_limits: MetadataLimits = MetadataLimits(),
    ) -> None:
        self.directories = [_source_root(os.fspath(d)) for d in directories]
        self.manifests = [os.path.abspath(os.fspath(m)) for m in manifests]
        for folder in self.directories:
            if not is_source_folder(folder):
                raise FileNotFoundError(f"source folder not found (or not a folder): {folder}")
        for manifest in self.manifests:
            if not os.path.isfile(manifest):
                raise FileNotFoundError(f"manifest not found: {manifest}")
        self.extensions = normalise_extensions(extensions)
        self.include_hidden = include_hidden
        self.label_from_folder = label_from_folder
        self.report = on_problem
        self.metadata_limits = metadata_limits
        self.roots = self.directories + [os.path.dirname(m) for m in self.manifests]
        self.blind_spots: list[str] = []
        self.found: dict[str, int] = {root: 0 for root in self.roots}
        """Files found under each root (every shard's), so that an empty source can be told apart."""

    def __iter__(self) -> Iterator[SourceFile]:
        for folder in self.directories:
            for file in (self._walk_objects if objectstore.is_uri(folder) else self._walk)(folder):
                self.found[folder] += 1
                yield file
        for manifest in self.manifests:
            for file in self._manifest(manifest):
                self.found[file.root] += 1
                yield file

    def _wanted(self, name: str) -> bool:
        """Whether a file name has one of the scanned extensions."""
        return "." in name and name.rsplit(".", 1)[-1].lower() in self.extensions

    def _walk(self, root: str) -> Iterator[SourceFile]:
        seen_dirs: set[tuple[int, int]] = set()

        def on_error(exc: OSError) -> None:
            path = os.fspath(exc.filename or root)
            self.blind_spots.append(path_key(path))
            self.report(ScanProblem(path_key(path), "unreadable", f"cannot list folder: {exc.strerror or exc}"))

        for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=on_error):
            try:
                st = os.stat(dirpath)
            except OSError:
                dirnames[:] = []
                continue
            if (st.st_dev, st.st_ino) in seen_dirs:  # reached again through a symlink: skip (no loops)
                dirnames[:] = []
                continue
            seen_dirs.add((st.st_dev, st.st_ino))
            rel_dir = os.path.relpath(dirpath, root)
            rel_dir = "" if rel_dir == "." else rel_dir
            if not self.include_hidden:
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            dirnames.sort()
            names = frozenset(filenames)
            for name in sorted(filenames):
                if not self.include_hidden and name.startswith("."):
                    continue
                if not self._wanted(name):
                    continue
                path = os.path.join(dirpath, name)
                st_file = _stat_file(path, self.report)
                if st_file is None:
                    continue
                rel = os.path.join(rel_dir, name)
                metadata = _folder_label(path_key(rel)) if self.label_from_folder else {}
                sig = metadata_signature(_local_sidecar(path, names), metadata)
                yield SourceFile(path_key(path), rel, root, st_file.st_size, st_file.st_mtime_ns, metadata, sig)

    def _walk_objects(self, root: str) -> Iterator[SourceFile]:
        """An object-store prefix, filtered like a folder (hidden parts, extensions, labels)."""
        try:
            objects = list(objectstore.walk(root))
        except OSError as exc:
            self.blind_spots.append(root)
            self.report(ScanProblem(root, "unreadable", f"cannot list objects: {exc}"))
            return
        sidecars = {o.uri: _stamp(o.rel.rsplit("/", 1)[-1], o.size, o.mtime_ns) for o in objects if o.rel.endswith(".json")}
        for obj in objects:
            name = obj.rel.rsplit("/", 1)[-1]
            if not self.include_hidden and _is_hidden(obj.rel):
                continue
            if not self._wanted(name):
                continue
            metadata = _folder_label(obj.rel) if self.label_from_folder else {}
            sidecar = next((sidecars[c] for c in sidecar_paths(obj.uri) if c in sidecars), "")
            yield SourceFile(obj.uri, obj.rel, root, obj.size, obj.mtime_ns, metadata, metadata_signature(sidecar, metadata))

    def _manifest(self, manifest: str) -> Iterator[SourceFile]:
        root = os.path.dirname(manifest)
        real_root = os.path.realpath(root)
        for record, where in _read_manifest(manifest, self.metadata_limits.max_bytes):
            try:
                if isinstance(record, str):
                    entry = parse_json_object(record, where, self.metadata_limits)
                else:
                    entry = check_record(record, where, self.metadata_limits)
            except MetadataError as exc:
                self.report(ScanProblem(where, "bad_metadata", str(exc)))
                continue
            raw = entry.pop("path", None)
            if not isinstance(raw, str) or not raw.strip():
                self.report(ScanProblem(where, "bad_manifest_entry", "entry has no 'path'"))
                continue
            if objectstore.is_uri(raw):
                self.report(ScanProblem(where, "bad_manifest_entry", "object-store URIs are sources, not manifest "
                                        "entries: give the prefix (clip-ingest s3://bucket/prefix)"))
                continue
            path = os.path.normpath(os.path.join(root, raw))
            real = os.path.realpath(path)
            if os.path.commonpath([real, real_root]) != real_root:
                self.report(ScanProblem(path, "outside_root", f"manifest paths must stay inside {root}"))
                continue
            rel = os.path.relpath(path, root)
            if not self.include_hidden and _is_hidden(rel):
                continue
            st = _stat_file(path, self.report)
            if st is None:
                continue
            metadata = _folder_label(rel) if self.label_from_folder else {}
            metadata.update({k: v for k, v in entry.items() if v not in ("", None)})
            sig = metadata_signature(_local_sidecar(path), metadata)
            yield SourceFile(path, rel, root, st.st_size, st.st_mtime_ns, metadata, sig)


def _read_manifest(manifest: str, max_line: int) -> Iterator[tuple[dict[str, Any] | str, str]]:
    """``(record, "manifest:line")`` pairs from a CSV or JSONL manifest: a CSV row as a dict, a JSONL
    line as its text (each line is parsed, and may fail, on its own; one longer than ``max_line``
    characters is cut there, which the parser refuses, so memory stays bounded)."""
    suffix = Path(manifest).suffix.lower()
    try:
        yield from _manifest_records(manifest, suffix, max_line)
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{manifest}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _manifest_records(manifest: str, suffix: str, max_line: int) -> Iterator[tuple[dict[str, Any] | str, str]]:
    with open(manifest, encoding="utf-8", newline="") as fh:
        if suffix == ".csv":
            reader = csv.DictReader(fh)
            try:
                if not reader.fieldnames or "path" not in reader.fieldnames:
                    raise ManifestError(f"{manifest}: CSV manifest needs a header row with a 'path' column")
                for row in reader:  # a row with more fields than the header fails alone (key None)
                    yield row, f"{manifest}:{reader.line_num}"
            except csv.Error as exc:  # e.g. a field over csv's size limit: the rest cannot be read reliably
                raise ManifestError(f"{manifest}:{reader.line_num}: not readable as CSV ({exc})") from None
        elif suffix in (".jsonl", ".ndjson"):
            for number, line in enumerate(_bounded_lines(fh, max_line), 1):
                if line.strip():
                    yield line, f"{manifest}:{number}"
        else:
            raise ManifestError(f"{manifest}: manifest must be .csv or .jsonl")


def _bounded_lines(fh: Any, limit: int) -> Iterator[str]:
    """The lines of a text file, each cut after ``limit + 1`` characters (the rest of it skipped)."""
    while line := fh.readline(limit + 1):
        if len(line) > limit and not line.endswith("\n"):
            while (rest := fh.readline(limit + 1)) and not rest.endswith("\n"):
                pass
        yield line


def sidecar_paths(path: str) -> tuple[str, str]:
    """Where the sidecar of the image at ``path`` may be, in the order tried: ``IMAGE.jpg.json``, ``IMAGE.json``."""
    return f"{path}.json", f"{os.path.splitext(path)[0]}.json"


def _stamp(name: str, size: int, mtime_ns: int) -> str:
    return f"{name}:{size}:{mtime_ns}"


def _local_sidecar(path: str, names: Container[str] | None = None) -> str:
    """The stamp (name, size, mtime) of the sidecar :func:`read_sidecar` would read, ``""`` when there is
    none. ``names``: the file names of the image's folder, when the walk has them (no stat per miss)."""
    for candidate in sidecar_paths(path):
        name = os.path.basename(candidate)
        if names is not None and name not in names:
            continue
        try:
            st = os.stat(candidate)
        except FileNotFoundError:
            continue
        except OSError as exc:  # unreadable: read_sidecar reports it; a later fix changes the stamp
            return f"{name}:error:{exc.errno}"
        return _stamp(name, st.st_size, st.st_mtime_ns)
    return ""


def metadata_signature(sidecar: str, metadata: Mapping[str, Any]) -> str:
    """What a payload's user metadata is computed from, in 16 hex digits: the sidecar's stamp (name,
    size, mtime; ``""`` for none) and the metadata the scan found itself (manifest row, folder label).
    A run re-reads a stored file's metadata when this changes, and only then."""
    text = json.dumps([sidecar, metadata], sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _sidecar_bytes(candidate: str, max_bytes: int) -> bytes | None:
    """At most ``max_bytes + 1`` bytes of a sidecar file or object (enough to tell it is too big);
    ``None`` when there is none."""
    if objectstore.is_uri(candidate):
        try:  # one GET: a missing object raises FileNotFoundError, no HEAD needed first
            return objectstore.read(candidate)
        except FileNotFoundError:
            return None
    try:
        mode = os.stat(candidate).st_mode
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(mode):  # opening a FIFO would block the run
        raise MetadataError(f"sidecar {candidate}", f"{file_kind(mode)}, not a regular file")
    try:
        with open(candidate, "rb") as fh:
            return fh.read(max_bytes + 1)
    except FileNotFoundError:
        return None


def read_sidecar(path: str, limits: MetadataLimits = MetadataLimits()) -> dict[str, Any]:
    """Metadata from ``IMAGE.jpg.json``, else ``IMAGE.json``; ``{}`` when neither exists (for an
    object-store URI: the objects of those names).

    Raises:
        MetadataError: the sidecar exists but is unreadable, not a JSON object, or past ``limits``.
    """
    for candidate in sidecar_paths(path):
        try:
            data = _sidecar_bytes(candidate, limits.max_bytes)
        except OSError as exc:
            raise MetadataError(f"sidecar {candidate}", exc.strerror or str(exc)) from None
        if data is not None:
            return parse_json_object(data, f"sidecar {candidate}", limits)
    return {}
