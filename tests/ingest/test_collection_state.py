"""A stateful property test of ingestion: random file operations interleaved with runs, each
completed run checked against the reference model (tests/collection_model.py).

The machine keeps two source folders and the folder of a JSONL manifest (sub-folders ``a``, ``b``,
``a/x`` and the root, so folder labels differ) in a fresh temporary folder with a fresh collection
per example. Its rules add images (new content, or an exact copy of another file; in the manifest's
folder with a row), move them (within a source, across sources, with or without the sidecar),
rename, edit the content, re-encode, add / edit / delete sidecars (``IMAGE.ext.json`` or
``IMAGE.json``) and manifest rows, write hostile sidecars (100 and 100,000 levels deep, over
64 KiB, not an object, malformed), delete files, empty a source folder, unmount one (renamed away
or replaced by an empty folder) and mount it back. Runs: with and without ``prune``,
``max_prune`` 0.5 or 1.0, ``label_from_folder`` on or off, dry runs, and runs stopped by
``should_stop`` after k images (a run with fewer images to read completes). Every example ends with
one more completed run. After every run the store (all points with payloads) is compared with the
model: paths, labels and user metadata, one point per content, no point without a path,
stable ids, the images embedded (a counting embedder: stored content is never embedded again),
dead letters, ``stats.prune_refused`` and ``stats.metadata_updated``.

Default run: Qdrant Edge and Milvus Lite, :data:`EXAMPLES` examples of :data:`STEPS` steps (20 of
20: about 25-40 s per backend on 2 busy cores). The long job (``CLIP_INGEST_STATEFUL_EXAMPLES``
examples of 25 steps) also runs qdrant-client's local mode and the Milvus server (the one at
``CLIP_INGEST_TEST_MILVUS_URI``, else one started for the session)::

    CLIP_INGEST_STATEFUL_EXAMPLES=200 CLIP_INGEST_TEST_MILVUS_URI=http://127.0.0.1:19530 \\
        .venv/bin/python -m pytest tests/ingest/test_collection_state.py -p no:cacheprovider
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
import uuid
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule, run_state_machine_as_test
from PIL import Image, PngImagePlugin

from clip_ingest.connectors.backends.base import VectorStore
from clip_ingest.connectors.backends.milvus.store import MilvusStore
from clip_ingest.connectors.ingest.pipeline import IngestInterrupted, IngestOptions, run_ingest
from collection_model import History, RunSpec, Snapshot, check_completed_run, check_consistent, check_dry_run, scan_sources
from ingest_helpers import COLLECTION, CountingEmbedder, open_test_store
from reliability_helpers import numbered_image

#: set for the long job: more examples, longer histories, every backend
LONG_EXAMPLES = os.environ.get("CLIP_INGEST_STATEFUL_EXAMPLES")
EXAMPLES = int(LONG_EXAMPLES or "20")
STEPS = 25 if LONG_EXAMPLES else 20
settings.register_profile(
    "collection-state",
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

SOURCES = ("src0", "src1")
MANIFEST_SOURCE = "man"
"""A folder of images listed by ``man/photos.jsonl`` (a row's columns are metadata)."""
FOLDERS = ("", "a", "b", os.path.join("a", "x"))
IMAGE_SIZE = 12
HAS_MAX_PRUNE = "max_prune" in {f.name for f in fields(IngestOptions)}

sources = st.sampled_from(SOURCES)
any_sources = st.sampled_from((*SOURCES, MANIFEST_SOURCE))
folders = st.sampled_from(FOLDERS)
picks = st.integers(0, 1000)
formats = st.sampled_from(["PNG", "JPEG"])
sidecar_styles = st.sampled_from(["ext", "stem"])
json_values = st.one_of(
    st.text(alphabet="abxyz", max_size=4),
    st.integers(-3, 1000),
    st.lists(st.integers(0, 9), min_size=1, max_size=3),
    st.fixed_dictionaries({"k": st.integers(0, 3)}),
)
#: user metadata; ``label`` competes with the folder label, ``size`` is reserved (dropped)
metadata_dicts = st.dictionaries(st.sampled_from(["colour", "n", "tags", "info", "label", "size"]), json_values,
                                 max_size=3)
HOSTILE = {
    "deep100": lambda: '{"a":' * 100 + "1" + "}" * 100,
    "deep100k": lambda: "[" * 100_000 + "]" * 100_000,
    "big": lambda: json.dumps({"blob": "x" * (100 << 10)}),
    "not_object": lambda: json.dumps(["a", 1]),
    "malformed": lambda: '{"colour": "red",',
}


class CollectionMachine(RuleBasedStateMachine):
    """File operations and runs on real sources and a real store (see the module docstring)."""

    open_store: Callable[[Path], VectorStore]
    """Set by :func:`machine_for`: a fresh collection under the given folder."""
    embedder: Any
    close_store: Callable[[VectorStore], None] = staticmethod(lambda store: store.close())

    def __init__(self) -> None:
        super().__init__()
        self.base = Path(tempfile.mkdtemp(prefix="collection-state-"))
        self.folders = tuple(str(self.base / s) for s in SOURCES)
        self.manifest = str(self.base / MANIFEST_SOURCE / "photos.jsonl")
        self.roots = (*self.folders, os.path.dirname(self.manifest))
        for root in self.roots:
            os.makedirs(root)
        self.rows: dict[str, dict[str, Any]] = {}  # manifest: relative path -> row
        self._write_manifest()
        self.store = self.open_store(self.base / "db")
        self.counting = CountingEmbedder(self.embedder)
        self.history = History()
        self.names = itertools.count()
        self.clock_ns = 1_700_000_000 * 10**9
        self.away: dict[str, str] = {}  # source root -> where its unmounted folder went
        self.label = True  # label_from_folder of the last run
        self.failed = False  # a run failed its check: teardown must not hide that failure

    def teardown(self) -> None:
        """One last completed run checks the files as the last steps left them (unless a check failed)."""
        try:
            if not self.failed:
                self._run(prune=False, max_prune=0.5, label=self.label, dry=False)
        finally:
            self.close_store(self.store)
            shutil.rmtree(self.base, ignore_errors=True)

    # ---------------------------------------------------------------- files

    def _touch(self, path: str) -> None:
        """Give ``path`` a new mtime (later than any before): a change is always visible."""
        self.clock_ns += 10**9
        os.utime(path, ns=(self.clock_ns, self.clock_ns))

    def _images(self, roots: tuple[str, ...] | None = None) -> list[str]:
        return sorted(str(p) for root in roots or self.roots for p in Path(root).rglob("*")
                      if p.suffix in (".png", ".jpg") and p.is_file())

    def _pick(self, pick: int, roots: tuple[str, ...] | None = None) -> str:
        images = self._images(roots)
        return images[pick % len(images)]

    def _write_manifest(self) -> None:
        Path(self.manifest).write_text("".join(json.dumps({"path": rel, **row}) + "\n" for rel, row in self.rows.items()))

    def _list_in_manifest(self, image: str, row: dict[str, Any]) -> None:
        self.rows[os.path.relpath(image, os.path.dirname(self.manifest))] = row
        self._write_manifest()

    def _new_path(self, source: str, folder: str, ext: str) -> str:
        folder_path = os.path.join(self.base, source, folder)
        os.makedirs(folder_path, exist_ok=True)
        return os.path.join(folder_path, f"img{next(self.names)}.{ext}")

    def _write_image(self, path: str, fmt: str) -> None:
        numbered_image(next(self.names), size=IMAGE_SIZE).save(path, fmt)
        self._touch(path)

    @staticmethod
    def _sidecars(image: str) -> list[str]:
        return [s for s in (f"{image}.json", f"{os.path.splitext(image)[0]}.json") if os.path.exists(s)]

    def _write_sidecar(self, image: str, style: str, text: str) -> None:
        path = f"{image}.json" if style == "ext" else f"{os.path.splitext(image)[0]}.json"
        Path(path).write_text(text)
        self._touch(path)

    def _move(self, image: str, target: str, with_sidecars: bool) -> None:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.rename(image, target)
        if with_sidecars:
            for sidecar in self._sidecars(image):
                suffix = ".json" if sidecar == f"{image}.json" else None
                os.rename(sidecar, f"{target}{suffix}" if suffix else f"{os.path.splitext(target)[0]}.json")

    @initialize(layout=st.lists(st.tuples(any_sources, folders, formats, st.none() | metadata_dicts), min_size=1,
                                max_size=6))
    def first_run(self, layout: list) -> None:
        for source, folder, fmt, metadata in layout:
            path = self._new_path(source, folder, "png" if fmt == "PNG" else "jpg")
            self._write_image(path, fmt)
            if metadata is not None:
                self._write_sidecar(path, "ext", json.dumps(metadata))
            if source == MANIFEST_SOURCE:
                self._list_in_manifest(path, {})
        self._run(prune=False, max_prune=0.5, label=True, dry=False)

    @rule(source=any_sources, folder=folders, fmt=formats, copy_of=st.none() | picks)
    def add_image(self, source: str, folder: str, fmt: str, copy_of: int | None) -> None:
        """A new image (in the manifest's folder: listed by a new row), or an exact copy of one."""
        if copy_of is not None and self._images():  # an exact copy: same content, another path
            original = self._pick(copy_of)
            path = self._new_path(source, folder, original.rsplit(".", 1)[1])
            shutil.copyfile(original, path)
            self._touch(path)
        else:
            path = self._new_path(source, folder, "png" if fmt == "PNG" else "jpg")
            self._write_image(path, fmt)
        if source == MANIFEST_SOURCE:
            self._list_in_manifest(path, {})

    @precondition(lambda self: self._images((os.path.dirname(self.manifest),)))
    @rule(pick=picks, columns=metadata_dicts | st.just({"colour": ""}))
    def set_manifest_row(self, pick: int, columns: dict) -> None:
        """Add or edit the row of an image of the manifest's folder (an empty column is no metadata)."""
        self._list_in_manifest(self._pick(pick, (os.path.dirname(self.manifest),)), columns)

    @precondition(lambda self: self.rows)
    @rule(pick=picks)
    def delete_manifest_row(self, pick: int) -> None:
        del self.rows[sorted(self.rows)[pick % len(self.rows)]]
        self._write_manifest()

    @precondition(lambda self: self._images())
    @rule(pick=picks, source=any_sources, folder=folders, with_sidecars=st.booleans())
    def move_image(self, pick: int, source: str, folder: str, with_sidecars: bool) -> None:
        image = self._pick(pick)
        self._move(image, self._new_path(source, folder, image.rsplit(".", 1)[1]), with_sidecars)

    @precondition(lambda self: self._images())
    @rule(pick=picks, with_sidecars=st.booleans())
    def rename_image(self, pick: int, with_sidecars: bool) -> None:
        image = self._pick(pick)
        self._move(image, os.path.join(os.path.dirname(image), f"img{next(self.names)}.{image.rsplit('.', 1)[1]}"),
                   with_sidecars)

    @precondition(lambda self: self._images())
    @rule(pick=picks)
    def edit_content(self, pick: int) -> None:
        image = self._pick(pick)
        self._write_image(image, "PNG" if image.endswith(".png") else "JPEG")

    @precondition(lambda self: self._images())
    @rule(pick=picks, quality=st.integers(40, 95))
    def reencode(self, pick: int, quality: int) -> None:
        """The same picture encoded again: other bytes, other content."""
        image = self._pick(pick)
        with Image.open(image) as opened:
            picture = opened.convert("RGB")
        if image.endswith(".png"):
            info = PngImagePlugin.PngInfo()
            info.add_text("encoder", f"q{quality}")
            picture.save(image, "PNG", pnginfo=info)
        else:
            picture.save(image, "JPEG", quality=quality)
        self._touch(image)

    @precondition(lambda self: self._images())
    @rule(pick=picks, style=sidecar_styles, metadata=metadata_dicts)
    def write_sidecar(self, pick: int, style: str, metadata: dict) -> None:
        self._write_sidecar(self._pick(pick), style, json.dumps(metadata))

    @precondition(lambda self: self._images())
    @rule(pick=picks, style=sidecar_styles, kind=st.sampled_from(sorted(HOSTILE)))
    def hostile_sidecar(self, pick: int, style: str, kind: str) -> None:
        self._write_sidecar(self._pick(pick), style, HOSTILE[kind]())

    @precondition(lambda self: self._images())
    @rule(pick=picks)
    def delete_sidecar(self, pick: int) -> None:
        for sidecar in self._sidecars(self._pick(pick)):
            os.remove(sidecar)

    @precondition(lambda self: self._images())
    @rule(pick=picks)
    def delete_image(self, pick: int) -> None:
        os.remove(self._pick(pick))

    @rule(source=sources)
    def empty_source(self, source: str) -> None:
        """Every image of a source deleted (its folders and sidecars stay)."""
        for image in self._images((os.path.join(self.base, source),)):
            os.remove(image)

    @rule(source=sources, rename_away=st.booleans())
    def unmount_source(self, source: str, rename_away: bool) -> None:
        """The disk goes away: its mount point stays, empty."""
        root = os.path.join(self.base, source)
        if rename_away and root not in self.away:
            self.away[root] = os.path.join(self.base, f"away-{source}")
            os.rename(root, self.away[root])
        else:
            shutil.rmtree(root)
        os.makedirs(root)

    @precondition(lambda self: self.away)
    @rule(data=st.data())
    def remount_source(self, data: st.DataObject) -> None:
        root = data.draw(st.sampled_from(sorted(self.away)))
        shutil.rmtree(root)
        os.rename(self.away.pop(root), root)

    # ---------------------------------------------------------------- runs

    @rule(prune=st.booleans(), max_prune=st.sampled_from([0.5, 1.0]), label=st.booleans())
    def run(self, prune: bool, max_prune: float, label: bool) -> None:
        self._run(prune=prune, max_prune=max_prune, label=label, dry=False)

    @rule(max_prune=st.sampled_from([0.5, 1.0]), label=st.booleans())
    def run_prune(self, max_prune: float, label: bool) -> None:
        self._run(prune=True, max_prune=max_prune, label=label, dry=False)

    @rule(prune=st.booleans(), label=st.booleans())
    def dry_run(self, prune: bool, label: bool) -> None:
        self._run(prune=prune, max_prune=0.5, label=label, dry=True)

    @rule(stop_after=st.integers(0, 3), prune=st.booleans(), label=st.booleans())
    def interrupted_run(self, stop_after: int, prune: bool, label: bool) -> None:
        self._run(prune=prune, max_prune=1.0, label=label, dry=False, stop_after=stop_after)

    def _run(self, *, prune: bool, max_prune: float, label: bool, dry: bool, stop_after: int | None = None) -> None:
        self.failed = True
        self._check_run(prune=prune, max_prune=max_prune, label=label, dry=dry, stop_after=stop_after)
        self.failed = False
        if not dry:
            self.label = label

    def _check_run(self, *, prune: bool, max_prune: float, label: bool, dry: bool, stop_after: int | None) -> None:
        spec = RunSpec(self.roots, label, prune, max_prune, dry)
        before = Snapshot.of(self.store, with_vectors=dry)
        disk = scan_sources(self.folders, [self.manifest], label)
        self.history.saw(disk.files)
        dead_letter = str(self.base / "dead.jsonl")
        options = IngestOptions(
            collection=COLLECTION, directories=list(self.folders), manifests=[self.manifest],
            label_from_folder=label, prune=prune,
            dry_run=dry, workers=2, batch_size=4, progress=False, dead_letter=dead_letter,
            **({"max_prune": max_prune} if HAS_MAX_PRUNE else {}),
        )
        asked = itertools.count(1)
        should_stop = None if stop_after is None else (lambda: next(asked) > stop_after)
        embedded_before = self.counting.images
        context = f"after a run with {spec}"
        try:
            stats = run_ingest(self.store, self.counting, options, should_stop=should_stop)
        except IngestInterrupted:
            check_consistent(Snapshot.of(self.store), self.history, f"after an interrupted run with {spec}")
            return
        embedded = self.counting.images - embedded_before
        after = Snapshot.of(self.store, with_vectors=dry)
        if dry:
            check_dry_run(before=before, after=after, disk=disk, run=spec, stats=stats, embedded=embedded,
                          context=context)
            return
        with open(dead_letter, encoding="utf-8") as fh:
            dead = [json.loads(line) for line in fh if line.strip()]
        check_completed_run(before=before, after=after, disk=disk, history=self.history, run=spec, stats=stats,
                            embedded=embedded, dead_letters=dead, context=context)


def machine_for(open_store: Callable[[Path], VectorStore], embedder: Any,
                close_store: Callable[[VectorStore], None] | None = None) -> type[CollectionMachine]:
    """The machine bound to one backend and one embedder."""
    attrs: dict[str, Any] = {"open_store": staticmethod(open_store), "embedder": embedder}
    if close_store is not None:
        attrs["close_store"] = staticmethod(close_store)
    return type("CollectionMachineOn", (CollectionMachine,), attrs)


def server_store(uri: str) -> tuple[Callable[[Path], VectorStore], Callable[[VectorStore], None]]:
    """A fresh collection on the Milvus server per example, dropped when the example ends."""

    def open_store(_root: Path) -> VectorStore:
        return MilvusStore(f"state_{uuid.uuid4().hex[:12]}", uri=uri, timeout=30)

    def close_store(store: MilvusStore) -> None:
        try:
            store.drop_collection(store.collection)
        finally:
            store.close()

    return open_store, close_store


BACKENDS = ["qdrant-edge", "milvus"]
if LONG_EXAMPLES:
    BACKENDS += ["qdrant", pytest.param("milvus-server", marks=pytest.mark.milvus_server)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_collection_follows_the_files_through_any_history(backend: str, tiny_embedder, request) -> None:
    if backend == "milvus-server":
        open_store, close_store = server_store(request.getfixturevalue("milvus_server").uri)
        machine = machine_for(open_store, tiny_embedder, close_store)
    else:
        machine = machine_for(lambda root: open_test_store(backend, root), tiny_embedder)
    run_state_machine_as_test(machine, settings=settings.get_profile("collection-state"))


def test_run_statistics_name_a_refused_prune_and_refreshed_metadata(tmp_path: Path, tiny_embedder) -> None:
    """The statistics the state machine reads exist: an emptied source with ``prune`` is refused
    (``stats.prune_refused`` says why, nothing removed), a sidecar edit counts in
    ``stats.metadata_updated`` without embedding."""
    source = tmp_path / "photos"
    (source / "a").mkdir(parents=True)
    image = source / "a" / "one.png"
    numbered_image(1, size=IMAGE_SIZE).save(image, "PNG")
    counting = CountingEmbedder(tiny_embedder)
    with open_test_store("qdrant-edge", tmp_path / "db") as store:
        options = dict(collection=COLLECTION, directories=[str(source)], progress=False, workers=1)
        run_ingest(store, counting, IngestOptions(**options))
        Path(f"{image}.json").write_text(json.dumps({"colour": "red"}))
        stats = run_ingest(store, counting, IngestOptions(**options))
        assert (getattr(stats, "metadata_updated", "missing"), counting.images) == (1, 1)
        shutil.rmtree(source)
        source.mkdir()
        stats = run_ingest(store, counting, IngestOptions(**options, prune=True))
        assert getattr(stats, "prune_refused", "missing") not in ("missing", None)
        assert [p.payload["path"] for p in store.scroll(fields=["path"])] == [str(image)]


def test_a_bad_sidecar_found_twice_in_one_run_is_one_dead_letter(tiny_embedder) -> None:
    """A shortest history the state machine found: a content at two paths, the primary deleted, the
    other path edited and given an invalid sidecar, then ``prune``: the run reads that sidecar as the
    path's own and again as the point's new primary's, and must report the file once."""
    state = machine_for(lambda root: open_test_store("qdrant-edge", root), tiny_embedder)()
    try:
        state.first_run(layout=[("src0", "", "PNG", None)])
        state.add_image(copy_of=0, fmt="PNG", folder="", source="src0")
        state.run(label=False, max_prune=0.5, prune=False)
        state.delete_image(pick=0)
        state.edit_content(pick=0)
        state.hostile_sidecar(kind="big", pick=0, style="ext")
        state.run(label=False, max_prune=1.0, prune=True)
    finally:
        state.failed = True  # teardown's last run is the state machine's business
        state.teardown()
