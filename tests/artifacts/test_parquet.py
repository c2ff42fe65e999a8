"""The Parquet artifact: ``clip-ingest --target parquet --out DIR`` (the same incremental pipeline)
and ``--from-parquet DIR`` into real Qdrant Edge and Milvus Lite collections, without the model;
a sink of the pipeline, not a backend."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from clip_ingest.connectors.artifacts.parquet import ParquetArtifact
from clip_ingest.connectors.backends import CollectionSpec, Point, StoreError, VectorStore, open_store, registry
from clip_ingest.connectors.cli.ingest import main as ingest_main
from clip_ingest.connectors.cli.search import main as search_main
from clip_ingest.connectors.cli.status import status as status_main
from clip_ingest.connectors.sink import Sink

from conftest import TINY_SPEC
from imagegen import make_shape_image

MODEL = ["--model", TINY_SPEC]


def _ingest(*args: str):
    return CliRunner().invoke(ingest_main, [*args, *MODEL, "-q"])


@pytest.fixture
def artifact(tmp_path, shape_folder):
    out = tmp_path / "artifact"
    result = _ingest(str(shape_folder), "--target", "parquet", "--out", str(out), "--collection", "shapes",
                     "--data-dir", str(tmp_path / "data"), "--summary", str(tmp_path / "first.json"))
    assert result.exit_code == 0, result.output
    return out / "shapes", shape_folder


def test_the_artifact_is_plain_parquet_with_ids_vectors_payloads_and_the_model(artifact, tiny_embedder):
    folder, photos = artifact
    manifest = json.loads((folder / "collection.json").read_text())
    assert manifest["model_id"] == tiny_embedder.model_id and manifest["dim"] == tiny_embedder.dim
    table = pq.read_table(folder / manifest["data"])  # any Parquet reader, no clip-ingest needed
    assert table.num_rows == manifest["count"] == len(list(photos.rglob("*.png")))
    assert table.schema.metadata[b"clip_ingest.model_id"].decode() == tiny_embedder.model_id
    vectors = np.array(table.column("vector").to_pylist(), dtype=np.float32)
    payloads = [json.loads(p) for p in table.column("payload").to_pylist()]
    expected = tiny_embedder.embed_images([p["path"] for p in payloads])
    assert np.allclose(vectors, expected, atol=1e-5)


def test_an_artifact_is_incremental_like_a_database(artifact, tmp_path):
    folder, photos = artifact
    args = [str(photos), "--target", "parquet", "--out", str(folder.parent), "--collection", "shapes",
            "--data-dir", str(tmp_path / "data"), "--prune", "--summary", str(tmp_path / "s.json")]
    assert _ingest(*args).exit_code == 0
    again = json.loads((tmp_path / "s.json").read_text())
    assert again["embedded"] == 0 and again["new"] == 0
    make_shape_image("green", "square", size=64, variant=7).save(photos / "extra.png")
    gone = sorted(photos.rglob("*.png"))[0]
    gone.unlink()
    assert _ingest(*args).exit_code == 0
    changed = json.loads((tmp_path / "s.json").read_text())
    assert (changed["new"], changed["pruned"]) == (1, 1)
    store = ParquetArtifact("shapes", path=str(folder.parent))
    paths = {p.payload["path"] for p in store.scroll()}
    assert str(photos / "extra.png") in paths and str(gone) not in paths
    assert len(list(folder.glob("v-*"))) == 1  # old versions are cleaned up


@pytest.mark.parametrize("target", ["qdrant-edge", "milvus"])
def test_from_parquet_loads_a_collection_without_the_model_and_is_idempotent(artifact, tmp_path, target, tiny_embedder):
    folder, _ = artifact
    data = tmp_path / f"db-{target}"
    args = ["--from-parquet", str(folder), "--target", target, "--collection", "loaded", "--data-dir", str(data),
            "--summary", str(tmp_path / "load.json")]
    result = CliRunner().invoke(ingest_main, [*args, "-q"])  # no --model: none is loaded
    assert result.exit_code == 0, result.output
    source = ParquetArtifact("shapes", path=str(folder.parent))
    location = {"qdrant-edge": {"path": str(data / "qdrant-edge")}, "milvus": {"uri": str(data / "milvus.db")}}[target]
    with open_store(target, "loaded", **location) as store:
        assert store.collection_model() == (tiny_embedder.model_id, tiny_embedder.dim)
        loaded = {p.id: p for p in store.retrieve([p.id for p in source.points()], with_vectors=True)}
        assert store.count() == source.count() == len(loaded)
        for point in source.points():
            got, want = dict(loaded[point.id].payload), dict(point.payload)
            assert got.pop("mtime") == pytest.approx(want.pop("mtime"))  # a store may round a float payload
            assert got == want
            assert np.allclose(loaded[point.id].vector, point.vector, atol=1e-6)
    assert json.loads((tmp_path / "load.json").read_text())["new"] == source.count()
    assert CliRunner().invoke(ingest_main, [*args, "-q"]).exit_code == 0  # again: same ids, same count
    with open_store(target, "loaded", **location) as store:
        assert store.count() == source.count()
    search = CliRunner().invoke(search_main, ["--target", target, "--collection", "loaded", "--data-dir", str(data),
                                              *MODEL, "--text", "a red circle", "--json"])
    assert search.exit_code == 0 and json.loads(search.stdout)["hits"], search.output


def test_from_parquet_keeps_the_model_safety_check_and_refuses_bad_sources(artifact, tmp_path, shape_folder):
    folder, _ = artifact
    data = tmp_path / "db"
    other = CliRunner().invoke(ingest_main, [str(shape_folder), "--target", "qdrant-edge", "--collection", "other",
                                             "--data-dir", str(data), "--model", "clip-ingest-photo:random", "-q"])  # another model
    assert other.exit_code == 0, other.output
    mixed = CliRunner().invoke(ingest_main, ["--from-parquet", str(folder), "--target", "qdrant-edge", "--collection", "other",
                                             "--data-dir", str(data), "-q"])
    assert mixed.exit_code == 1 and "was built with model" in mixed.output
    not_one = CliRunner().invoke(ingest_main, ["--from-parquet", str(tmp_path), "--data-dir", str(data)])
    assert not_one.exit_code == 2 and "not a Parquet artifact" in not_one.output
    both = CliRunner().invoke(ingest_main, [str(shape_folder), "--from-parquet", str(folder)])
    assert both.exit_code == 2


def test_a_failed_flush_leaves_the_previous_artifact_whole(artifact, monkeypatch):
    folder, _ = artifact
    before = (folder / "collection.json").read_text()
    store = ParquetArtifact("shapes", path=str(folder.parent))
    count = store.count()
    store.delete([next(store.scroll()).id])

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", broken)
    with pytest.raises(OSError, match="disk full"):
        store.flush()
    monkeypatch.undo()
    assert (folder / "collection.json").read_text() == before
    assert ParquetArtifact("shapes", path=str(folder.parent)).count() == count


def test_from_parquet_records_each_run_like_any_ingestion(artifact, tmp_path):
    """A load is a run of the ingestion job: its summary goes to the last-run file and the
    --metrics-file, refused runs included (exit 4 while another run holds the lock)."""
    from clip_ingest.connectors.ingest.lock import RunLock

    folder, _ = artifact
    data, lock = tmp_path / "db", tmp_path / "load.lock"
    args = ["--from-parquet", str(folder), "--target", "qdrant-edge", "--collection", "loaded", "--data-dir", str(data),
            "--metrics-file", str(tmp_path / "load.prom"), "--lock-file", str(lock), "-q"]
    assert CliRunner().invoke(ingest_main, args).exit_code == 0
    [last_run] = (data / "dead-letter").glob("*.last-run.json")
    loaded = json.loads(last_run.read_text())
    count = ParquetArtifact("shapes", path=str(folder.parent)).count()
    assert (loaded["outcome"], loaded["exit_code"], loaded["new"], loaded["source"]) == ("ok", 0, count, str(folder))
    assert f'clip_ingest_last_run_new{{target="qdrant-edge",collection="loaded"}} {count}' in (tmp_path / "load.prom").read_text()
    with RunLock(lock):
        refused = CliRunner().invoke(ingest_main, args)
    assert refused.exit_code == 4, refused.output
    assert json.loads(last_run.read_text())["outcome"] == "locked"
    metrics = (tmp_path / "load.prom").read_text()
    assert 'clip_ingest_last_run_outcome{target="qdrant-edge",collection="loaded",outcome="locked"} 1' in metrics


def test_an_artifact_is_a_sink_of_the_pipeline_not_a_backend(tmp_path):
    """The backend registry holds the databases, which search; ``parquet`` is a ``clip-ingest
    --target`` all the same, and what it opens is written by the pipeline, never searched."""
    artifact = ParquetArtifact("shapes", path=str(tmp_path))
    assert isinstance(artifact, Sink) and not isinstance(artifact, VectorStore)
    assert not hasattr(artifact, "search") and not hasattr(artifact, "aliases")
    assert "parquet" not in registry.TARGETS and all(entry.filter_compilers for entry in registry.BACKENDS)
    assert "parquet" in {p.name: p for p in ingest_main.params}["target"].type.choices


def test_an_artifact_is_read_by_status_and_refused_by_search(artifact, tmp_path, tiny_embedder):
    folder, _ = artifact
    where = ["--target", "parquet", "--out", str(folder.parent), "--collection", "shapes", "--data-dir", str(tmp_path / "data")]
    shown = CliRunner().invoke(status_main, [*where, "--json"])
    assert shown.exit_code == 0, shown.output
    report = json.loads(shown.stdout)
    assert (report["health"], report["count"], report["model_id"]) == ("healthy", json.loads((folder / "collection.json").read_text())["count"], tiny_embedder.model_id)
    assert (report["alias_target"], report["aliases"]) == (None, {})
    search = CliRunner().invoke(search_main, [*where, *MODEL, "--text", "a red circle", "--json"])
    assert search.exit_code == 2 and "clip-ingest --from-parquet" in search.output, search.output


def test_set_payloads_keeps_vectors_and_naming_a_missing_point_writes_nothing(tmp_path):
    artifact = ParquetArtifact("c", path=str(tmp_path))
    artifact.ensure_collection(CollectionSpec("c", 2, "m"))
    ids = [str(uuid.UUID(int=i)) for i in (1, 2)]
    artifact.upsert([Point(ids[0], np.array([1.0, 0.0]), {"a": 1})])
    artifact.set_payloads({ids[0]: {"a": 2}})
    [point] = artifact.retrieve([ids[0]], with_vectors=True)
    assert point.payload == {"a": 2} and np.allclose(point.vector, [1.0, 0.0])
    with pytest.raises(StoreError, match=ids[1]):
        artifact.set_payloads({ids[0]: {"a": 3}, ids[1]: {"a": 3}})
    assert artifact.retrieve([ids[0]])[0].payload == {"a": 2}


def test_writing_an_artifact_suggests_the_command_that_loads_it(tmp_path, shape_folder):
    out, data = tmp_path / "artifact", tmp_path / "data"
    written = CliRunner().invoke(ingest_main, [str(shape_folder), "--target", "parquet", "--out", str(out),
                                               "--collection", "shapes", "--data-dir", str(data), *MODEL])
    assert written.exit_code == 0, written.output
    assert "clip-search" not in written.output  # an artifact cannot be searched
    suggested = written.output.split("load it into a database with: ")[1].split()
    assert suggested[:3] == ["clip-ingest", "--from-parquet", str(out / "shapes")]
    loaded = CliRunner().invoke(ingest_main, [*suggested[1:], "--collection", "loaded", "--data-dir", str(data), "-q"])
    assert loaded.exit_code == 0, loaded.output
    shown = CliRunner().invoke(status_main, ["--target", suggested[4], "--collection", "loaded", "--data-dir", str(data), "--json"])
    assert json.loads(shown.stdout)["count"] == len(list(shape_folder.rglob("*.png")))
