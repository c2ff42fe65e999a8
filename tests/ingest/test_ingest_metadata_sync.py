"""Payloads follow the files: a point's user metadata is its primary path's, recomputed on the next
run after a move, a sidecar or manifest change or a switch of ``label_from_folder``, without
re-embedding; hostile metadata fails its file alone."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from clip_ingest.connectors.ingest.deadletter import read_dead_letter
from clip_ingest.connectors.search.duplicates import record_review
from imagegen import make_shape_image
from ingest_helpers import ALL_BACKENDS, CountingEmbedder, ingest, open_test_store, points_by_path


@pytest.fixture
def counting(tiny_embedder) -> CountingEmbedder:
    return CountingEmbedder(tiny_embedder)


def _photo(path: Path, variant: int, sidecar: dict | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    make_shape_image("red", "circle", variant=variant).save(path, "PNG")
    if sidecar is not None:
        Path(f"{path}.json").write_text(json.dumps(sidecar))
    return path


def _user_fields(payload: dict) -> dict:
    reserved = {"path", "paths", "mtimes_ns", "size", "mtime", "width", "height", "sha256", "format",
                "ingested_at", "model_id", "meta_sig", "_id"}
    return {k: v for k, v in payload.items() if k not in reserved}


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_a_file_moved_to_another_folder_takes_that_folder_label(backend, tmp_path, counting):
    root = tmp_path / "photos"
    photo = _photo(root / "cats" / "a.png", 1)
    with open_test_store(backend, tmp_path / "db") as store:
        ingest(store, counting, root, label_from_folder=True)
        assert points_by_path(store)[str(photo)]["label"] == "cats"
        moved = root / "dogs" / "a.png"
        moved.parent.mkdir()
        shutil.move(photo, moved)
        stats = ingest(store, counting, root, label_from_folder=True)
        assert stats.moved == 1 and counting.images == 1
        assert _user_fields(points_by_path(store)[str(moved)]) == {"label": "dogs"}


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_sidecars_added_edited_and_removed_later_reach_the_payload_without_reembedding(backend, tmp_path, counting):
    root = tmp_path / "photos"
    photo = _photo(root / "a.png", 1)
    with open_test_store(backend, tmp_path / "db") as store:
        ingest(store, counting, root)
        assert _user_fields(points_by_path(store)[str(photo)]) == {}

        Path(f"{photo}.json").write_text(json.dumps({"rating": 5}))
        stats = ingest(store, counting, root)
        assert stats.metadata_updated == 1 and stats.unchanged == 0
        assert _user_fields(points_by_path(store)[str(photo)]) == {"rating": 5}

        Path(f"{photo}.json").write_text(json.dumps({"rating": 3, "tag": "x"}))
        os.utime(f"{photo}.json", ns=(1, 1_000_000_000))  # a new mtime whatever the clock's resolution
        ingest(store, counting, root)
        assert _user_fields(points_by_path(store)[str(photo)]) == {"rating": 3, "tag": "x"}

        os.unlink(f"{photo}.json")
        Path(root / "a.json").write_text(json.dumps({"from": "IMAGE.json"}))  # the other sidecar name
        ingest(store, counting, root)
        assert _user_fields(points_by_path(store)[str(photo)]) == {"from": "IMAGE.json"}

        os.unlink(root / "a.json")
        ingest(store, counting, root)
        assert _user_fields(points_by_path(store)[str(photo)]) == {}
        assert ingest(store, counting, root).unchanged == 1  # settled: nothing more to do
        assert counting.images == 1


def test_label_from_folder_switched_on_and_off_and_manifest_rows_edited(tmp_path, counting):
    root = tmp_path / "photos"
    photo = _photo(root / "cats" / "a.png", 1)
    manifest = root / "manifest.jsonl"
    manifest.write_text(json.dumps({"path": "cats/a.png", "owner": "ann"}) + "\n")
    with open_test_store("qdrant-edge", tmp_path / "db") as store:
        ingest(store, counting, manifests=[str(manifest)])
        assert _user_fields(points_by_path(store)[str(photo)]) == {"owner": "ann"}
        ingest(store, counting, manifests=[str(manifest)], label_from_folder=True)
        assert _user_fields(points_by_path(store)[str(photo)]) == {"owner": "ann", "label": "cats"}
        manifest.write_text(json.dumps({"path": "cats/a.png", "owner": "bob"}) + "\n")
        ingest(store, counting, manifests=[str(manifest)])
        assert _user_fields(points_by_path(store)[str(photo)]) == {"owner": "bob"}
        assert counting.images == 1


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_when_the_primary_path_is_pruned_the_next_path_brings_its_own_metadata(backend, tmp_path, counting):
    root = tmp_path / "photos"
    first = _photo(root / "x" / "a.png", 1, {"who": "first"})
    second = root / "y" / "b.png"
    second.parent.mkdir()
    shutil.copy(first, second)
    Path(f"{second}.json").write_text(json.dumps({"who": "second"}))
    with open_test_store(backend, tmp_path / "db") as store:
        ingest(store, counting, root, label_from_folder=True)
        (point,) = points_by_path(store).values()
        assert point["paths"] == [str(first), str(second)] and point["who"] == "first" and point["label"] == "x"
        first.unlink()
        ingest(store, counting, root, label_from_folder=True, prune=True, max_prune=1.0)
        (point,) = points_by_path(store).values()
        assert point["paths"] == [str(second)]
        assert _user_fields(point) == {"who": "second", "label": "y"}
        assert ingest(store, counting, root, label_from_folder=True).unchanged == 1


def test_hostile_sidecars_fail_their_file_alone(tmp_path, counting):
    root = tmp_path / "photos"
    deep = _photo(root / "deep.png", 1)
    Path(f"{deep}.json").write_text("[" * 30_000 + "]" * 30_000)  # under max_bytes, past the parser's recursion
    big = _photo(root / "big.png", 2)
    Path(f"{big}.json").write_text(json.dumps({"blob": "x" * 5_000_000}))
    fine = _photo(root / "fine.png", 3, {"ok": True})
    dead = tmp_path / "dead.jsonl"
    with open_test_store("qdrant-edge", tmp_path / "db") as store:
        stats = ingest(store, counting, root, dead_letter=str(dead))
        assert stats.failed == 2 and stats.new == 1
        assert _user_fields(points_by_path(store)[str(fine)]) == {"ok": True}
        reasons = {r["path"]: (r["reason"], r["detail"]) for r in read_dead_letter(dead)}
        assert reasons[str(deep)][0] == reasons[str(big)][0] == "bad_metadata"
        assert "max_depth" in reasons[str(deep)][1] and "max_bytes" in reasons[str(big)][1]

        Path(f"{fine}.json").write_text("{" * 50)  # a stored file's sidecar turns bad: its payload stays
        os.utime(f"{fine}.json", ns=(1, 1_000_000_000))
        stats = ingest(store, counting, root, dead_letter=str(dead))
        assert stats.failed == 3
        assert _user_fields(points_by_path(store)[str(fine)]) == {"ok": True}


def test_hostile_manifest_rows_fail_alone(tmp_path, counting):
    root = tmp_path / "photos"
    good, other = _photo(root / "a.png", 1), _photo(root / "b.png", 2)
    jsonl = root / "m.jsonl"
    jsonl.write_text("\n".join([
        json.dumps({"path": "a.png", "k": 1}),
        '{"path": "b.png", "deep": ' + "[" * 20_000 + "]" * 20_000 + "}",
        '{"path": "b.png", "huge": "' + "x" * 200_000,  # one over-long line with no newline at the end
    ]))
    csv_file = root / "m.csv"
    csv_file.write_text("path,k\nb.png,2,an-extra-field\n")
    dead = tmp_path / "dead.jsonl"
    with open_test_store("qdrant-edge", tmp_path / "db") as store:
        stats = ingest(store, counting, manifests=[str(jsonl), str(csv_file)], dead_letter=str(dead))
        assert stats.new == 1 and stats.failed == 3
        assert _user_fields(points_by_path(store)[str(good)]) == {"k": 1}
        assert str(other) not in points_by_path(store)
        records = read_dead_letter(dead)
        assert [r["reason"] for r in records] == ["bad_metadata"] * 3
        assert [r["path"] for r in records] == [f"{jsonl}:2", f"{jsonl}:3", f"{csv_file}:2"]


def test_a_review_decision_survives_a_metadata_refresh(tmp_path, counting):
    root = tmp_path / "photos"
    first, second = _photo(root / "a.png", 1, {"v": 1}), _photo(root / "b.png", 2)
    with open_test_store("qdrant-edge", tmp_path / "db") as store:
        ingest(store, counting, root)
        ids = [points_by_path(store)[str(p)]["_id"] for p in (first, second)]
        review = record_review(store, ids, "not-duplicates")
        Path(f"{first}.json").write_text(json.dumps({"v": 2}))
        os.utime(f"{first}.json", ns=(1, 1_000_000_000))
        assert ingest(store, counting, root).metadata_updated == 1
        payload = points_by_path(store)[str(first)]
        assert payload["v"] == 2 and payload["duplicate_review"] == review


def test_a_file_is_dead_lettered_once_even_when_it_also_becomes_a_primary(tmp_path, counting):
    """A touched second path with a bad sidecar fails when read, and again when the pruned primary
    hands it the point: one dead letter, one failure."""
    root = tmp_path / "photos"
    first = _photo(root / "a.png", 1)
    second = root / "b.png"
    shutil.copy(first, second)
    dead = tmp_path / "dead.jsonl"
    with open_test_store("qdrant-edge", tmp_path / "db") as store:
        ingest(store, counting, root)
        first.unlink()
        Path(f"{second}.json").write_text("[" * 20)
        os.utime(second, ns=(1, 1_000_000_000))
        stats = ingest(store, counting, root, prune=True, max_prune=1.0, dead_letter=str(dead))
        assert stats.failed == 1 and [r["path"] for r in read_dead_letter(dead)] == [str(second)]
