"""``--runtime onnx`` / ``--quantize int8``: the ONNX Runtime path through the real pipeline, the
CLIs and the adapters, its cache, and the model ids that keep int8 vectors out of fp32 collections."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from clip_ingest.connectors.backends import open_store
from clip_ingest.connectors.calibration import load_text_calibration
from clip_ingest.connectors.cli.ingest import main as ingest_main
from clip_ingest.connectors.cli.search import main as search_main
from clip_ingest.connectors.model_spec import METADATA_FILE, STARTER_DIR
from clip_ingest.connectors.onnx_embedder import OnnxEmbedder
from clip_ingest.connectors.runtime import INT8_SUFFIX, load_embedder, onnx_model_dir
from clip_ingest.model.export import export_model

from conftest import TINY_SPEC
from ingest_helpers import ingest


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    root = tmp_path_factory.getbasetemp() / "runtime-cache"  # shared by the module: export once
    monkeypatch.setenv("CLIP_INGEST_CACHE", str(root))
    return root


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_onnx_runs_the_real_pipeline_with_torchs_vectors_and_model_id(tmp_path, shape_folder, tiny_embedder):
    onnx = load_embedder(TINY_SPEC, runtime="onnx")
    assert isinstance(onnx, OnnxEmbedder) and onnx.model_id == tiny_embedder.model_id
    store = open_store("qdrant-edge", "images", path=str(tmp_path / "edge"))
    stats = ingest(store, onnx, shape_folder, collection="images")  # numpy inputs stacked by the encoder
    assert stats.failed == 0 and stats.embedded > 0
    stored = store.retrieve([p.id for p in store.scroll()], with_vectors=True)
    paths = [p.payload["path"] for p in stored]
    expected = tiny_embedder.embed_images(paths)
    assert _cosines(np.array([p.vector for p in stored]), expected).min() >= 0.9999
    texts = ["a red circle", "a blue square"]
    assert _cosines(onnx.embed_texts(texts), tiny_embedder.embed_texts(texts)).min() >= 0.9999
    store.close()


def test_the_cache_is_built_once_and_an_onnx_export_is_used_as_it_is(tmp_path, cache):
    first = onnx_model_dir(TINY_SPEC)
    graph = first / json.loads((first / "clip_ingest.json").read_text())["onnx"]["image"]
    built = graph.stat().st_mtime_ns
    assert onnx_model_dir(TINY_SPEC) == first and graph.stat().st_mtime_ns == built
    assert first.is_relative_to(cache) and not list(first.parent.glob(".*partial"))
    export = export_model(TINY_SPEC, tmp_path / "export", onnx=True).path
    assert onnx_model_dir(str(export)) == export  # no second copy of graphs that exist


def test_int8_gets_a_model_id_of_its_own_and_close_vectors(shape_folder, tiny_embedder):
    int8 = load_embedder(TINY_SPEC, runtime="onnx", quantize="int8")
    assert int8.model_id == tiny_embedder.model_id + INT8_SUFFIX
    paths = sorted(str(p) for p in shape_folder.rglob("*.png"))
    cos = _cosines(int8.embed_images(paths), tiny_embedder.embed_images(paths))
    assert cos.mean() > 0.9 and cos.min() < 0.99999  # close, but not the same vectors
    with pytest.raises(ValueError, match="runtime onnx"):
        load_embedder(TINY_SPEC, runtime="torch", quantize="int8")
    assert load_embedder(TINY_SPEC, quantize="int8").model_id == int8.model_id  # auto: int8 runs on ONNX
    with pytest.raises(ValueError, match="runtime must be"):
        load_embedder(TINY_SPEC, runtime="tensorrt")


def test_the_clis_take_the_runtime_and_refuse_to_mix_int8_into_fp32(tmp_path, shape_folder):
    runner = CliRunner()
    common = ["--target", "qdrant-edge", "--collection", "images", "--data-dir", str(tmp_path / "data"), "--model", TINY_SPEC]
    first = runner.invoke(ingest_main, [str(shape_folder), *common, "--runtime", "onnx", "-q"])
    assert first.exit_code == 0, first.output
    torch_hits = runner.invoke(search_main, [*common, "--text", "a red circle", "--json"])
    onnx_hits = runner.invoke(search_main, [*common, "--text", "a red circle", "--json", "--runtime", "onnx"])
    assert torch_hits.exit_code == 0 and onnx_hits.exit_code == 0, torch_hits.output + onnx_hits.output
    ids = [[h["id"] for h in json.loads(r.stdout)["hits"]] for r in (torch_hits, onnx_hits)]
    assert ids[0] == ids[1] and ids[0]  # one collection, either runtime
    mixed = runner.invoke(ingest_main, [str(shape_folder), *common, "--runtime", "onnx", "--quantize", "int8", "-q"])
    assert mixed.exit_code == 1 and INT8_SUFFIX in mixed.output
    usage = runner.invoke(search_main, [*common, "--text", "x", "--runtime", "torch", "--quantize", "int8"])
    assert usage.exit_code == 2 and "runtime onnx" in usage.output


def test_the_adapters_take_the_runtime(tiny_embedder):
    from clip_ingest.connectors.adapters.langchain import ClipIngestEmbeddings

    embeddings = ClipIngestEmbeddings(TINY_SPEC, runtime="onnx")
    vector = embeddings.embed_query("a red circle")
    assert _cosines(np.array([vector]), tiny_embedder.embed_texts(["a red circle"]))[0] >= 0.9999


@pytest.fixture
def torch_threads():
    import torch

    before = torch.get_num_threads()
    yield torch
    torch.set_num_threads(before)  # load_embedder's setting is process-wide


def test_the_factory_sizes_the_runtimes_threads_and_turns_spinning_off(monkeypatch, torch_threads):
    from clip_ingest.connectors.cpus import ORT_NO_SPIN

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("CLIP_INGEST_CPUS", "3")  # the setting's environment variable
    load_embedder(TINY_SPEC, device="cpu")
    assert torch_threads.get_num_threads() == 3
    load_embedder(TINY_SPEC, device="cpu", cpus=1)  # the setting itself (--cpus) over the environment
    assert torch_threads.get_num_threads() == 1
    for quantize in ("none", "int8"):
        onnx = load_embedder(TINY_SPEC, runtime="onnx", quantize=quantize)
        for session in (onnx._image, onnx._text):
            options = session.get_session_options()
            assert (options.intra_op_num_threads, options.inter_op_num_threads) == (3, 1)
            assert [options.get_session_config_entry(key) for key in ORT_NO_SPIN] == ["0", "0"]
    monkeypatch.delenv("CLIP_INGEST_CPUS")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # a user's OMP_NUM_THREADS names the model threads, ONNX Runtime's too
    assert load_embedder(TINY_SPEC, runtime="onnx")._image.get_session_options().intra_op_num_threads == 1


def test_an_onnx_cache_entry_keeps_its_models_text_calibration(tmp_path):
    """A model folder without towers, run on ONNX: the cache entry built for it carries the text
    calibration the folder ships (calibrated text search works on either runtime)."""
    folder = tmp_path / "starter-without-towers"
    shutil.copytree(STARTER_DIR, folder, ignore=shutil.ignore_patterns("onnx"))
    metadata = json.loads((folder / METADATA_FILE).read_text())
    metadata.pop("onnx")
    (folder / METADATA_FILE).write_text(json.dumps(metadata))
    embedder = load_embedder(str(folder), runtime="onnx")
    assert embedder.export_dir != folder  # a cache entry was built
    assert load_text_calibration(embedder) == load_text_calibration(load_embedder(str(folder), runtime="torch")) is not None
