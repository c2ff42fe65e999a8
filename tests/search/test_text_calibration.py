"""Calibrated text queries: ``clip-model calibrate-text`` fits a model's text score scale on
captioned images (here: generated pictures of four colours, captioned by colour, which the starter
tells apart), stores it in the model folder and the cache, and ``clip-search query --text ...
--min-relevance R`` then cuts each query at its own calibrated cosine, over real Qdrant Edge."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from clip_ingest.connectors.backends import open_store
from clip_ingest.connectors.calibration import fit_text_calibration, load_text_calibration, reference_vectors
from clip_ingest.connectors.cli.clip_ingest import main as clip_ingest
from clip_ingest.connectors.cli.search import main as clip_search
from clip_ingest.connectors.openclip_embedder import OpenClipEmbedder
from clip_ingest.connectors.factory import STARTER_DIR as STARTER
from clip_ingest.model.cli import cli as clip_model
from clip_ingest.model.text_calibration import embed_pairs

from conftest import TINY_SPEC
from imagegen import COLOURS, write_shape_folder


def colour_manifest(root: Path, n: int) -> tuple[Path, list[str], list[str]]:
    """``n`` shape pictures, label = colour, caption "a <colour> picture"; (manifest, paths, colours)."""
    folder = write_shape_folder(root, n=n, sidecars=False)
    paths = sorted(str(p) for p in folder.rglob("*.png"))
    colours = [Path(p).name.split("_")[0] for p in paths]
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps({"path": p, "label": c, "captions": [f"a {c} picture"]}) + "\n"
                                for p, c in zip(paths, colours)))
    return manifest, paths, colours


def test_the_fit_is_monotone_and_the_cut_gives_the_relevance_asked_for(tmp_path, starter_embedder):
    embedder = starter_embedder
    _, paths, colours = colour_manifest(tmp_path / "fit", 24)
    texts, images = embed_pairs(embedder, [f"a {c} picture" for c in colours], paths)
    relevant = np.array([[a == b for b in colours] for a in colours])
    calibration = fit_text_calibration(embedder.model_id, texts, images, relevant)
    assert calibration == fit_text_calibration(embedder.model_id, texts, images, relevant)
    assert calibration.base_rate == pytest.approx(relevant.mean())  # a share at the fit's own base rate
    reference_scores = images @ texts[0]
    # over all cosines: never decreasing, from "no" to "yes"
    relevance = calibration.relevance(np.linspace(-1, 1, 101), reference_scores)
    assert np.all(np.diff(relevance) >= 0) and relevance[0] < 0.2 and relevance[-1] > 0.8
    for wanted in (0.3, 0.5, 0.7):
        cut = calibration.cut(texts[0], images, wanted)
        assert calibration.relevance(np.array([cut]), reference_scores)[0] == pytest.approx(wanted, abs=1e-5)  # float32 scores
    # the relevance is the share that matched: among the fit's pairs at or above each cut, at least that share
    z = (texts @ images.T - (texts @ images.T).mean(1, keepdims=True)) / (texts @ images.T).std(1, keepdims=True)
    for wanted in (0.3, 0.5, 0.7):
        kept = z >= calibration.z_for(wanted)
        assert kept.any() and relevant[kept].mean() >= wanted - 0.05
    with pytest.raises(ValueError, match="matching"):
        fit_text_calibration(embedder.model_id, texts, images, np.zeros_like(relevant))


def test_calibrate_text_stores_the_mapping_and_text_search_cuts_each_query_there(tmp_path, model_cache):
    model = tmp_path / "model"
    shutil.copytree(STARTER, model)
    fit, _, _ = colour_manifest(tmp_path / "fit", 32)
    held_out, _, _ = colour_manifest(tmp_path / "held-out", 40)
    result = CliRunner().invoke(clip_model, ["calibrate-text", "-m", str(model), "-d", str(fit), "--eval", str(held_out)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    low, high = summary["eval"]["at"]
    assert (low["relevance"], high["relevance"]) == (0.5, 0.9)
    assert high["precision"] >= low["precision"] and high["recall"] <= low["recall"] and high["precision"] > 0.25  # chance: 1 in 4
    stored = json.loads((model / "clip_ingest.json").read_text())["text_calibration"]
    embedder = OpenClipEmbedder(str(model), device="cpu")
    assert json.loads(json.dumps(load_text_calibration(embedder).__dict__)) == stored and stored["model_id"] == embedder.model_id
    shutil.rmtree(model_cache)  # the folder alone carries it
    assert load_text_calibration(OpenClipEmbedder(str(model), device="cpu")) is not None

    photos = tmp_path / "photos"
    write_shape_folder(photos, n=40)
    where = ["--target", "qdrant-edge", "--data-dir", str(tmp_path / "data"), "--model", str(model)]
    assert CliRunner().invoke(clip_ingest, ["run", str(photos), *where, "-q"]).exit_code == 0

    def search(*extra: str) -> list[dict]:
        out = CliRunner().invoke(clip_search, ["query", "--text", "a red picture", "-k", "100", "--json", "-q", *where, *extra])
        assert out.exit_code == 0, out.output
        return json.loads(out.output)["hits"]

    everything, kept = search(), search("--min-relevance", "0.9")
    with open_store("qdrant-edge", "images", path=str(tmp_path / "data" / "qdrant-edge")) as store:
        cut = load_text_calibration(embedder).cut(embedder.embed_texts(["a red picture"])[0], reference_vectors(store), 0.9)
    assert [h["id"] for h in kept] == [h["id"] for h in everything if h["score"] >= cut] and 0 < len(kept) < len(everything)
    red = [h["payload"]["colour"] == "red" for h in kept]
    assert sum(red) / len(red) > 1 / len(COLOURS)  # the cut keeps mostly the colour asked for


def test_a_model_without_a_text_calibration_refuses_min_relevance_for_text(tmp_path, model_cache):
    photos = tmp_path / "photos"
    write_shape_folder(photos, n=8)
    where = ["--target", "qdrant-edge", "--data-dir", str(tmp_path / "data"), "--model", TINY_SPEC]
    assert CliRunner().invoke(clip_ingest, ["run", str(photos), *where, "-q"]).exit_code == 0
    result = CliRunner().invoke(clip_search, ["query", "--text", "a red picture", "--min-relevance", "0.9", *where, "-q"])
    assert result.exit_code == 2 and "no text calibration" in result.output and "calibrate-text" in result.output
