"""Scanning folders and manifests, sharding, payload path edits, the run lock (no model, no database)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from clip_ingest.connectors.ingest.ids import point_id
from clip_ingest.connectors.ingest.lock import LockedError, RunLock, default_lock_path
from clip_ingest.connectors.ingest.payload import with_path, without_paths
from clip_ingest.connectors.ingest.plan import Shard
from clip_ingest.connectors.ingest.scan import ManifestError, Scan, ScanProblem, read_sidecar


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def scan(*args, **kwargs) -> tuple[list, list[ScanProblem]]:
    problems: list[ScanProblem] = []
    files = list(Scan(*args, on_problem=problems.append, **kwargs))
    return files, problems


def test_walk_filters_extensions_hidden_and_follows_symlink_loops_once(tmp_path):
    root = tmp_path / "photos"
    touch(root / "a.JPG")
    touch(root / "sub" / "b.png")
    touch(root / "notes.txt")
    touch(root / ".hidden.png")
    touch(root / ".cache" / "c.png")
    os.symlink(root, root / "sub" / "loop")  # a loop back to the root
    os.symlink(tmp_path / "nowhere.png", root / "dangling.png")
    files, problems = scan([root], label_from_folder=True)
    assert [f.rel for f in files] == ["a.JPG", os.path.join("sub", "b.png")]
    assert files[1].metadata == {"label": "sub"} and files[0].metadata == {}
    assert files[0].path == str(root / "a.JPG") and files[0].size == 1
    assert [(Path(p.path).name, p.reason) for p in problems] == [("dangling.png", "missing")]
    hidden, _ = scan([root], include_hidden=True, extensions=["png"])
    assert {f.rel for f in hidden} == {".hidden.png", os.path.join(".cache", "c.png"), os.path.join("sub", "b.png")}


def test_missing_source_folder_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="source folder not found"):
        Scan([tmp_path / "nope"])


def test_manifests_resolve_relative_paths_and_refuse_escapes(tmp_path):
    root = tmp_path / "set"
    touch(root / "img" / "a.png")
    touch(root / "img" / "b.png")
    touch(tmp_path / "secret.png")
    (root / "m.csv").write_text("path,caption,split\nimg/a.png,a cat,\n../secret.png,x,y\nimg/missing.png,,\n")
    (root / "m.jsonl").write_text(json.dumps({"path": "img/b.png", "tags": ["x", "y"]}) + "\n\n" + json.dumps({"caption": "no path"}) + "\n")
    files, problems = scan(manifests=[root / "m.csv", root / "m.jsonl"])
    assert [(f.path, f.metadata) for f in files] == [
        (str(root / "img" / "a.png"), {"caption": "a cat"}),
        (str(root / "img" / "b.png"), {"tags": ["x", "y"]}),
    ]
    assert [p.reason for p in problems] == ["outside_root", "missing", "bad_manifest_entry"]
    (root / "bad.csv").write_text("file,caption\na.png,x\n")
    with pytest.raises(ManifestError, match="'path' column"):
        scan(manifests=[root / "bad.csv"])


def test_sidecar_prefers_full_name_then_stem(tmp_path):
    image = touch(tmp_path / "a.jpg")
    assert read_sidecar(str(image)) == {}
    (tmp_path / "a.json").write_text('{"k": 1}')
    assert read_sidecar(str(image)) == {"k": 1}
    (tmp_path / "a.jpg.json").write_text('{"k": 2}')
    assert read_sidecar(str(image)) == {"k": 2}
    (tmp_path / "a.jpg.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        read_sidecar(str(image))


def test_point_ids_are_deterministic_and_documented():
    import uuid

    sha = "ab" * 32
    namespace = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/clip-ingest/clip-ingest/point-id")
    assert point_id("images", sha) == str(uuid.uuid5(namespace, f"images/{sha}"))
    assert point_id("images", sha) != point_id("other", sha)


def test_shards_are_disjoint_and_complete():
    paths = [f"dir{i % 7}/img{i}.jpg" for i in range(500)]
    shards = [Shard.parse(f"{i}/4") for i in range(4)]
    owners = [[s.owns(p) for s in shards].count(True) for p in paths]
    assert owners == [1] * 500
    assert all(sum(s.owns(p) for p in paths) > 60 for s in shards)
    for bad in ("4/4", "1", "a/b", "0/0"):
        with pytest.raises(ValueError):
            Shard.parse(bad)


def test_payload_path_edits_keep_lists_aligned():
    payload = {"path": "/a", "paths": ["/a"], "mtimes_ns": [1], "mtime": 1e-9, "colour": "red"}
    two = with_path(payload, "/b", 2)
    assert (two["paths"], two["mtimes_ns"], two["path"]) == (["/a", "/b"], [1, 2], "/a")
    moved = with_path(payload, "/c", 3, replace=["/a"])
    assert (moved["paths"], moved["mtimes_ns"], moved["path"], moved["mtime"]) == (["/c"], [3], "/c", 3e-9)
    assert with_path(two, "/a", 9)["mtimes_ns"] == [9, 2]
    left = without_paths(two, ["/a"])
    assert (left["paths"], left["path"], left["colour"]) == (["/b"], "/b", "red")
    assert without_paths(left, ["/b"])["paths"] == []


def test_run_lock_excludes_a_second_run_and_names_the_holder(tmp_path):
    path = default_lock_path("qdrant", str(tmp_path), "images")
    assert path != default_lock_path("qdrant", str(tmp_path), "other")
    with RunLock(tmp_path / "run.lock"):
        with pytest.raises(LockedError, match=f"pid {os.getpid()}"):
            RunLock(tmp_path / "run.lock", timeout=0.3, poll=0.05).acquire()
    with RunLock(tmp_path / "run.lock", timeout=0):  # released: taken at once
        pass


def test_file_names_that_are_not_utf8_are_ingested_losslessly_and_stay_incremental(tmp_path, tiny_embedder):
    """Latin-1 and Shift-JIS names from old archives: stored as valid UTF-8 (JSON payloads) that maps
    back to the exact bytes; a re-run skips them, a move is a move, --prune keeps them."""
    from clip_ingest.connectors.backends import open_store
    from clip_ingest.connectors.ingest.scan import os_path, path_key

    from imagegen import make_shape_image
    from ingest_helpers import all_paths, ingest

    root = tmp_path / "photos"
    root.mkdir()
    raw_names = [b"caf\xe9.png", b"\x83e\x83X\x83g.png", b"plain.png"]  # Latin-1, Shift-JIS, ASCII
    for i, raw in enumerate(raw_names):
        make_shape_image(["red", "green", "blue"][i], "circle", size=48, variant=i).save(os.path.join(os.fsencode(root), raw))
    store = open_store("qdrant-edge", "images", path=str(tmp_path / "edge"))
    first = ingest(store, tiny_embedder, root, collection="images", prune=True)
    assert (first.new, first.failed) == (3, 0)
    stored = all_paths(store)
    assert all(p.encode("utf-8") for p in stored)  # every stored path is valid UTF-8
    assert sorted(os.fsencode(os_path(p)) for p in stored) == sorted(os.path.join(os.fsencode(root), r) for r in raw_names)
    assert path_key(str(root / "plain.png")) == str(root / "plain.png")  # usual names are unchanged
    again = ingest(store, tiny_embedder, root, collection="images", prune=True)
    assert (again.unchanged, again.embedded, again.pruned) == (3, 0, 0)
    os.rename(os.path.join(os.fsencode(root), raw_names[0]), os.path.join(os.fsencode(root), b"moved-\xe9.png"))
    moved = ingest(store, tiny_embedder, root, collection="images", prune=True)
    assert (moved.moved, moved.embedded) == (1, 0)
    assert path_key(os.fsdecode(os.path.join(os.fsencode(root), b"moved-\xe9.png"))) in all_paths(store)
    from clip_ingest.connectors.serve.service import SearchService

    service = SearchService(store, tiny_embedder, serialise_store=True, collection="images")
    latin = next(p for p in store.scroll() if "moved-" in p.payload["path"])
    assert service.thumbnail(latin.id, 64)[:2] == b"\xff\xd8"  # the served thumbnail opens the real bytes
    service.close()
    store.close()
