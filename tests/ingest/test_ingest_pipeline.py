"""End-to-end ingestion runs against real embedded stores with the tiny real model."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import tenacity
import torch

from clip_ingest.connectors.backends.base import ModelMismatchError, StoreError, TransientStoreError
from clip_ingest.connectors.backends.milvus.store import MilvusStore
from clip_ingest.connectors.ingest.deadletter import read_dead_letter
from clip_ingest.connectors.ingest.ids import point_id
from clip_ingest.connectors.ingest.pipeline import IngestOptions, run_ingest
from clip_ingest.connectors.ingest.writer import make_retrying
from imagegen import make_shape_image
from ingest_helpers import (
    ALL_BACKENDS,
    COLLECTION,
    CountingEmbedder,
    FaultyStore,
    all_paths,
    ingest,
    open_test_store,
    points_by_path,
)


@pytest.fixture
def counting(tiny_embedder) -> CountingEmbedder:
    return CountingEmbedder(tiny_embedder)


#: every embedded backend, plus the real Milvus server that .ci/run starts
STORE_BACKENDS = [*ALL_BACKENDS, pytest.param("milvus-server", marks=pytest.mark.milvus_server)]


@pytest.fixture
def backend_store(request, tmp_path):
    """``(store, collection)``: an embedded store, or a fresh collection on the Milvus server."""
    if request.param != "milvus-server":
        with open_test_store(request.param, tmp_path / "db") as store:
            yield store, COLLECTION
        return
    server = request.getfixturevalue("milvus_server")
    collection = "ingest_" + hashlib.sha1(str(tmp_path).encode()).hexdigest()[:12]
    store = MilvusStore(collection, uri=server.uri, timeout=30)
    try:
        yield store, collection
    finally:
        store.close()


@pytest.mark.parametrize("backend_store", STORE_BACKENDS, indirect=True)
def test_first_run_then_incremental_changes(backend_store, shape_folder, counting):
    store, collection = backend_store
    stats = ingest(store, counting, shape_folder, collection=collection, index_fields={"colour": "keyword"})
    assert (stats.new, stats.failed, stats.embedded, counting.images) == (12, 0, 12, 12)
    assert store.count() == 12
    first = shape_folder / "circle" / "red_0000.png"
    payload = points_by_path(store)[str(first)]
    sha = hashlib.sha256(first.read_bytes()).hexdigest()
    assert payload["_id"] == point_id(collection, sha)
    assert payload["paths"] == [str(first)]
    assert payload["mtimes_ns"] == [first.stat().st_mtime_ns]
    assert (payload["size"], payload["sha256"], payload["format"]) == (first.stat().st_size, sha, "PNG")
    assert (payload["width"], payload["height"]) == (64, 64)
    assert (payload["colour"], payload["shape"], payload["index"]) == ("red", "circle", 0)
    assert payload["model_id"] == counting.model_id and payload["ingested_at"].endswith("+00:00")

    counting.images = 0
    again = ingest(store, counting, shape_folder, collection=collection)
    assert (again.unchanged, again.new, again.updated, counting.images) == (12, 0, 0, 0)

    # modify one, move one, copy one, delete one
    changed = shape_folder / "square" / "green_0001.png"
    make_shape_image("green", "circle", variant=99).save(changed)
    moved_from = shape_folder / "triangle" / "blue_0002.png"
    moved_to = shape_folder / "renamed.png"
    moved_from.rename(moved_to)
    shutil.copy(shape_folder / "circle" / "yellow_0003.png", shape_folder / "copy.png")
    deleted = shape_folder / "circle" / "red_0000.png"
    deleted.unlink()
    counting.images = 0
    third = ingest(store, counting, shape_folder, collection=collection, prune=True)
    # points deleted: the deleted file's and the modified file's old content
    assert (third.updated, third.moved, third.new, third.pruned, third.points_deleted) == (1, 1, 1, 1, 2)
    assert counting.images == 1  # only the modified image is embedded again
    by_path = points_by_path(store)
    assert store.count() == 11
    assert by_path[str(changed)]["sha256"] == hashlib.sha256(changed.read_bytes()).hexdigest()
    assert str(moved_to) in by_path and str(moved_from) not in all_paths(store)
    yellow = by_path[str(shape_folder / "circle" / "yellow_0003.png")]
    assert yellow["paths"] == [str(shape_folder / "circle" / "yellow_0003.png"), str(shape_folder / "copy.png")]
    assert str(deleted) not in all_paths(store)
    assert len(all_paths(store)) == len(set(all_paths(store))) == 12


def test_moves_and_removals_are_batched_into_one_payload_write_each(tmp_path, shape_folder, counting):
    """Ten moved files: one set_payloads call for all of them (a server read costs a time tick each)."""
    with open_test_store("qdrant", tmp_path / "db") as real:
        ingest(real, counting, shape_folder)
        files = sorted(shape_folder.rglob("*.png"))
        for index, path in enumerate(files[:10]):
            path.rename(tmp_path / "photos" / f"moved_{index}.png")
        counting_writes = FaultyStore(real, "set_payloads", TransientStoreError("unused"), times=0)
        stats = ingest(counting_writes, counting, shape_folder, prune=True)
        assert (stats.moved, stats.pruned, stats.failed) == (10, 0, 0)
        assert counting_writes.calls == 1
        paths = all_paths(real)
        assert sorted(paths) == sorted(map(str, shape_folder.rglob("*.png"))) and len(paths) == 12


def test_touched_file_is_rehashed_but_not_reembedded(tmp_path, shape_folder, counting):
    with open_test_store("qdrant", tmp_path / "db") as store:
        ingest(store, counting, shape_folder)
        target = shape_folder / "circle" / "red_0000.png"
        target.write_bytes(target.read_bytes())  # same content, new mtime
        new_mtime = target.stat().st_mtime_ns
        counting.images = 0
        stats = ingest(store, counting, shape_folder)
        assert (stats.updated, stats.unchanged, counting.images) == (1, 11, 0)
        assert points_by_path(store)[str(target)]["mtimes_ns"] == [new_mtime]


def test_identical_files_in_one_run_are_one_point(tmp_path, counting):
    folder = tmp_path / "dups"
    folder.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        make_shape_image("red", "circle").save(folder / name)
    with open_test_store("qdrant", tmp_path / "db") as store:
        stats = ingest(store, counting, folder)
        assert (stats.new, counting.images, store.count()) == (3, 1, 1)
        assert all_paths(store) == [str(folder / n) for n in ("a.png", "b.png", "c.png")]


def test_bad_files_go_to_the_dead_letter_and_are_retried(tmp_path, shape_folder, counting):
    good = make_shape_image("red", "circle", size=64)
    good.save(shape_folder / "truncated.jpg", "JPEG")
    data = (shape_folder / "truncated.jpg").read_bytes()
    (shape_folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (shape_folder / "empty.jpg").write_bytes(b"")
    (shape_folder / "text.jpg").write_text("not an image at all\n")
    (shape_folder / "broken.json").write_text("{not json")
    make_shape_image("blue", "square", variant=50).save(shape_folder / "broken.png")
    dead = tmp_path / "dead.jsonl"
    with open_test_store("qdrant", tmp_path / "db") as store:
        stats = ingest(store, counting, shape_folder, dead_letter=str(dead))
        assert (stats.new, stats.failed, store.count()) == (12, 4, 12)
        reasons = {Path(r["path"]).name: r["reason"] for r in read_dead_letter(dead)}
        assert reasons == {"truncated.jpg": "truncated", "empty.jpg": "empty", "text.jpg": "not_an_image", "broken.png": "bad_metadata"}
        # fixing a file makes the next run ingest it; the others are retried and fail again
        (shape_folder / "broken.json").write_text(json.dumps({"colour": "blue"}))
        stats = ingest(store, counting, shape_folder, dead_letter=str(dead))
        assert (stats.new, stats.failed, stats.unchanged, store.count()) == (1, 3, 12, 13)
        assert points_by_path(store)[str(shape_folder / "broken.png")]["colour"] == "blue"
        assert len(read_dead_letter(dead)) == 3


def test_reserved_metadata_keys_are_dropped_with_a_warning(tmp_path, counting, caplog):
    folder = tmp_path / "photos"
    folder.mkdir()
    make_shape_image("red", "circle").save(folder / "a.png")
    (folder / "a.png.json").write_text(json.dumps({"path": "/etc/passwd", "size": -1, "camera": "x100"}))
    with open_test_store("qdrant", tmp_path / "db") as store:
        ingest(store, counting, folder)
        payload = points_by_path(store)[str(folder / "a.png")]
    assert payload["camera"] == "x100" and payload["size"] == (folder / "a.png").stat().st_size
    assert "reserved" in caplog.text and "'path'" in caplog.text


def test_another_model_is_refused_and_recreate_reembeds(tmp_path, shape_folder, counting):
    from clip_ingest.connectors.factory import load_model
    from clip_ingest.connectors.openclip_embedder import OpenClipEmbedder

    loaded = load_model("clip-ingest-tiny:random")
    with torch.no_grad():
        next(loaded.model.parameters()).add_(0.5)  # a genuinely different model: other weights
    other = OpenClipEmbedder.from_loaded(loaded, device="cpu", batch_size=8)
    assert other.model_id != counting.model_id
    with open_test_store("qdrant", tmp_path / "db") as store:
        ingest(store, counting, shape_folder)
        with pytest.raises(ModelMismatchError):
            ingest(store, other, shape_folder)
        with pytest.raises(ModelMismatchError):
            ingest(store, other, shape_folder, dry_run=True)
        assert store.count() == 12 and store.collection_model() == (counting.model_id, counting.dim)
        stats = ingest(store, other, shape_folder, recreate=True)
        assert (stats.new, stats.embedded, store.count()) == (12, 12, 12)
        assert store.collection_model() == (other.model_id, other.dim)


def test_dry_run_writes_nothing(tmp_path, shape_folder, counting):
    changes: list[tuple[str, str]] = []
    dead = tmp_path / "dead.jsonl"
    with open_test_store("qdrant", tmp_path / "db") as store:
        stats = run_ingest(
            store, counting, IngestOptions(COLLECTION, [str(shape_folder)], dry_run=True, dead_letter=str(dead), progress=False),
            on_change=lambda kind, path: changes.append((kind, path)),
        )
        assert stats.new == 12 and len(changes) == 12 and {k for k, _ in changes} == {"new"}
        assert counting.images == 0 and store.collection_model() is None and not dead.exists()


def test_transient_errors_are_retried_other_errors_fail_at_once(tmp_path, shape_folder, counting):
    with open_test_store("qdrant", tmp_path / "db") as real:
        flaky = FaultyStore(real, "upsert", TransientStoreError("connection refused"), times=2)
        stats = ingest(flaky, counting, shape_folder)
        assert stats.new == 12 and flaky.calls == 3 and real.count() == 12
        make_shape_image("green", "square", size=48).save(shape_folder / "new.png")  # new content
        broken = FaultyStore(real, "upsert", StoreError("schema violation"), times=5)
        with pytest.raises(StoreError, match="schema violation"):
            ingest(broken, counting, shape_folder)
        assert broken.calls == 1 and real.count() == 12
        for method in ("ensure_collection", "scroll"):  # preparing and reading the collection are retried too
            blip = FaultyStore(real, method, TransientStoreError("connection refused"), times=1)
            stats = ingest(blip, counting, shape_folder)
            assert (stats.scanned, stats.failed, blip.calls, real.count()) == (13, 0, 2, 13)


def test_retries_last_for_the_time_budget_and_no_longer(monkeypatch):
    """``--retry-for``: 0 tries once; a budget keeps retrying until no retry would start within it.

    The policy runs on a simulated clock (tenacity's ``time`` and ``sleep``), so an oversleeping
    scheduler on a busy machine cannot move an attempt past the budget, and the lower bound
    (retrying went on until the budget was nearly spent) can be asserted exactly.
    """
    now = [0.0]
    monkeypatch.setattr(tenacity, "time", SimpleNamespace(monotonic=lambda: now[0]))
    calls: list[float] = []

    def down() -> None:
        calls.append(now[0])
        raise TransientStoreError("connection refused")

    def sleep(seconds: float) -> None:
        now[0] += seconds

    with pytest.raises(TransientStoreError):
        make_retrying(0).copy(sleep=sleep)(down)
    assert calls == [0.0]
    calls.clear()
    with pytest.raises(TransientStoreError):
        make_retrying(1.5, max_wait=0.2).copy(sleep=sleep)(down)
    assert len(calls) >= 3
    assert 1.5 - 0.2 <= calls[-1] < 1.5  # stopped only when the next wait could cross the budget


def test_interrupted_content_change_converges_on_the_next_run(tmp_path, shape_folder, counting):
    """The new point is written, the run dies before removing the path from the old point."""
    target = shape_folder / "circle" / "red_0000.png"
    with open_test_store("qdrant", tmp_path / "db") as real:
        ingest(real, counting, shape_folder)
        old_id = points_by_path(real)[str(target)]["_id"]
        make_shape_image("red", "square", variant=42).save(target)
        dying = FaultyStore(real, "delete", StoreError("killed"), times=1)
        with pytest.raises(StoreError):
            ingest(dying, counting, shape_folder)
        assert all_paths(real).count(str(target)) == 2  # listed by the old and the new point
        stats = ingest(real, counting, shape_folder)
        assert stats.updated == 1 and stats.points_deleted == 1
        assert all_paths(real).count(str(target)) == 1 and real.count() == 12
        assert real.retrieve([old_id]) == []


def test_shards_partition_the_files(tmp_path, shape_folder, counting):
    from clip_ingest.connectors.ingest.plan import Shard

    with open_test_store("qdrant", tmp_path / "db") as store:
        totals = [ingest(store, counting, shape_folder, shard=Shard(i, 3), prune=True).new for i in range(3)]
        assert sum(totals) == 12 and store.count() == 12 and max(totals) < 12


def test_progress_counts_every_file_and_logs_live_scan_counts(tmp_path, shape_folder, counting, monkeypatch, caplog):
    from types import SimpleNamespace

    from clip_ingest.connectors.ingest import summary

    advanced = {"n": 0}
    real_advance = summary.Progress.advance

    def counting_advance(self, n: int = 1) -> None:
        advanced["n"] += n
        real_advance(self, n)

    monkeypatch.setattr(summary.Progress, "advance", counting_advance)
    with open_test_store("qdrant-edge", tmp_path / "db") as store:
        ingest(store, counting, shape_folder)
        assert advanced["n"] == 12
        advanced["n"] = 0
        again = ingest(store, counting, shape_folder)
        assert again.unchanged == 12 and advanced["n"] == 12  # an unchanged re-run reports progress too

    stats = summary.RunStats()
    stats.new = 2
    progress = summary.Progress(stats, SimpleNamespace(scanned=7, unchanged=5), enabled=False, interval=0)
    with caplog.at_level("INFO", logger="clip_ingest.ingest"):
        real_advance(progress)
    assert "progress: 7 scanned, 2 new, 0 updated, 0 moved, 5 unchanged, 0 failed" in caplog.text


def test_the_terminal_bar_has_a_total_that_follows_the_scan(monkeypatch):
    import io
    from types import SimpleNamespace

    from clip_ingest.connectors.ingest import summary

    monkeypatch.setattr("sys.stderr", io.StringIO())  # tqdm's output
    scan = SimpleNamespace(scanned=3, unchanged=1)
    progress = summary.Progress(summary.RunStats(), scan, enabled=True)
    progress.advance()
    assert progress._bar.total == 3 and progress._bar.n == 1
    scan.scanned = 10  # the scan found more
    progress.advance()
    assert progress._bar.total == 10 and "1 unchanged" in str(progress._bar.postfix)
    progress.close()
