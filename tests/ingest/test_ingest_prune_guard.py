"""``--prune`` never wipes by accident: an empty source, a source on another filesystem and a prune
over ``--max-prune`` keep every stored path, say why, and exit 5; ``--max-prune 1`` confirms."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from clip_ingest.connectors.backends import open_store
from clip_ingest.connectors.cli.clip_ingest import main
from clip_ingest.connectors.cli.common import EXIT_OK, EXIT_PRUNE_REFUSED
from clip_ingest.connectors.ingest.mounts import SourceRecord, mount_point
from imagegen import write_shape_folder
from ingest_helpers import ALL_BACKENDS, all_paths, ingest, open_test_store

MODEL = "clip-ingest-tiny:random"


def _cli(workdir: Path, *args: str):
    env = {"CLIP_INGEST_DATA_DIR": str(workdir / "data")}
    return CliRunner().invoke(main, ["--model", MODEL, "--workers", "2", "--target", "qdrant-edge", *args], env=env)


def _edge_paths(workdir: Path) -> list[str]:
    with open_store("qdrant-edge", "images", path=str(workdir / "data" / "qdrant-edge")) as store:
        return all_paths(store)


def test_an_emptied_source_is_not_pruned_until_confirmed(tmp_path):
    """What an unmounted NAS mount point looks like: the folder exists and holds nothing."""
    photos = write_shape_folder(tmp_path / "photos", n=8)
    assert _cli(tmp_path, str(photos)).exit_code == EXIT_OK
    assert len(_edge_paths(tmp_path)) == 8
    for child in photos.iterdir():
        shutil.rmtree(child)

    refused = _cli(tmp_path, "--prune", "--summary", str(tmp_path / "s.json"), str(photos))
    assert refused.exit_code == EXIT_PRUNE_REFUSED, refused.output
    assert "is empty" in refused.output and "--max-prune 1" in refused.output
    assert len(_edge_paths(tmp_path)) == 8
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["pruned"] == 0 and "is empty" in summary["prune_refused"]

    dry = _cli(tmp_path, "--prune", "--dry-run", str(photos))
    assert dry.exit_code == EXIT_PRUNE_REFUSED and "is empty" in dry.output

    confirmed = _cli(tmp_path, "--prune", "--max-prune", "1", str(photos))
    assert confirmed.exit_code == EXIT_OK, confirmed.output
    assert _edge_paths(tmp_path) == []


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_a_prune_over_max_prune_removes_nothing(backend, tmp_path, tiny_embedder):
    photos = write_shape_folder(tmp_path / "photos", n=10)
    files = sorted(photos.rglob("*.png"))
    with open_test_store(backend, tmp_path / "db") as store:
        ingest(store, tiny_embedder, photos)
        for path in files[:6]:  # 60% of the collection
            path.unlink()
        stats = ingest(store, tiny_embedder, photos, prune=True)
        assert stats.pruned == 0 and "6 of the 10 stored paths" in stats.prune_refused
        assert len(all_paths(store)) == 10

        files[6].unlink()  # still 7 of 10 gone: refused at 0.5, allowed at 0.8
        stats = ingest(store, tiny_embedder, photos, prune=True, max_prune=0.8)
        assert stats.prune_refused is None and stats.pruned == 7
        assert sorted(all_paths(store)) == sorted(str(p) for p in files[7:])


def test_a_small_prune_goes_ahead_and_other_sources_are_pruned_beside_an_empty_one(tmp_path, tiny_embedder):
    kept, emptied = write_shape_folder(tmp_path / "a", n=10), write_shape_folder(tmp_path / "b", n=4)
    with open_test_store("qdrant-edge", tmp_path / "db") as store:
        ingest(store, tiny_embedder, kept, emptied)
        gone = sorted(kept.rglob("*.png"))[0]
        gone.unlink()
        for child in emptied.iterdir():
            shutil.rmtree(child)
        stats = ingest(store, tiny_embedder, kept, emptied, prune=True)
        assert stats.pruned == 1 and str(gone) not in all_paths(store)
        assert f"source {emptied} is empty" in stats.prune_refused
        assert len([p for p in all_paths(store) if p.startswith(str(emptied))]) == 4


def _mount_tmpfs(folder: Path) -> bool:
    return subprocess.run(["mount", "-t", "tmpfs", "none", str(folder)], capture_output=True).returncode == 0


@pytest.fixture
def mountable(tmp_path):
    """A folder this machine lets us mount a tmpfs on (root, as CI runs); unmounted afterwards."""
    probe = tmp_path / "probe"
    probe.mkdir()
    if os.geteuid() != 0 or not _mount_tmpfs(probe):
        pytest.skip("mounting needs root and a kernel that allows it here")
    subprocess.run(["umount", str(probe)], check=True)
    mounted: list[Path] = []
    yield mounted
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_a_source_on_another_filesystem_than_last_time_is_not_pruned(tmp_path, tiny_embedder, mountable):
    """A real tmpfs mounted over the source: most files are there (a prune would take only 2 of 10,
    under --max-prune), but the filesystem is not the one recorded, so nothing is pruned."""
    photos = write_shape_folder(tmp_path / "photos", n=10)
    record = str(tmp_path / "sources.json")
    with open_test_store("qdrant-edge", tmp_path / "db") as store:
        ingest(store, tiny_embedder, photos, prune=True, source_record=record)
        assert SourceRecord(record).recorded[str(photos)].startswith(mount_point(str(photos)))

        backup = tmp_path / "backup"
        shutil.copytree(photos, backup)
        assert _mount_tmpfs(photos)
        mountable.append(photos)
        shutil.copytree(backup, photos, dirs_exist_ok=True)
        for path in sorted(photos.rglob("*.png"))[:2]:
            path.unlink()

        stats = ingest(store, tiny_embedder, photos, prune=True, source_record=record)
        assert "another filesystem" in stats.prune_refused and stats.pruned == 0
        assert len(all_paths(store)) == 10
        assert ingest(store, tiny_embedder, photos, prune=True, source_record=record).pruned == 0  # still held

        stats = ingest(store, tiny_embedder, photos, prune=True, source_record=record, max_prune=1.0)
        assert stats.prune_refused is None and stats.pruned == 2
        assert ingest(store, tiny_embedder, photos, prune=True, source_record=record).prune_refused is None


def test_moved_files_do_not_count_as_pruned(tmp_path, tiny_embedder):
    """Reorganising a library (most files moved to new folders, one deleted) is not a mass prune."""
    photos = write_shape_folder(tmp_path / "photos", n=4)
    files = sorted(photos.rglob("*.png"))
    with open_test_store("qdrant-edge", tmp_path / "db") as store:
        ingest(store, tiny_embedder, photos)
        (photos / "sorted").mkdir()
        for path in files[:3]:
            path.rename(photos / "sorted" / path.name)
        files[3].unlink()
        stats = ingest(store, tiny_embedder, photos, prune=True)
        assert stats.prune_refused is None and (stats.moved, stats.pruned) == (3, 1)
        assert all_paths(store) == sorted(str(photos / "sorted" / p.name) for p in files[:3])


def test_a_bind_mount_over_the_source_counts_as_another_filesystem(tmp_path, tiny_embedder, mountable):
    """A bind mount of the same device (which ``os.path.ismount`` does not see) read from mountinfo."""
    photos = write_shape_folder(tmp_path / "photos", n=10)
    other = tmp_path / "other"
    shutil.copytree(photos, other)
    sorted(other.rglob("*.png"))[0].unlink()
    record = str(tmp_path / "sources.json")
    with open_test_store("qdrant-edge", tmp_path / "db") as store:
        ingest(store, tiny_embedder, photos, prune=True, source_record=record)
        assert subprocess.run(["mount", "--bind", str(other), str(photos)]).returncode == 0
        mountable.append(photos)
        stats = ingest(store, tiny_embedder, photos, prune=True, source_record=record)
        assert "another filesystem" in stats.prune_refused and stats.pruned == 0
