"""Export a model to open_clip's local-dir layout and reload it through the ingestion embedder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from clip_ingest.connectors.openclip_embedder import OpenClipEmbedder
from clip_ingest.model.export import ExportError, export_model
from conftest import TINY_SPEC
from imagegen import make_shape_image

IMAGES = [make_shape_image(c, s, variant=i) for i, (c, s) in enumerate([("red", "circle"), ("blue", "square")])]
TEXTS = ["a red circle", "a blue square"]


def test_export_reloads_to_identical_vectors_and_model_id(tmp_path, tiny_embedder):
    result = export_model(
        TINY_SPEC, tmp_path / "tiny-export", recipe={"name": "tiny-smoke"},
        data={"images": 12}, metrics={"eth80": {"mAP": 0.5}},
    )
    out = result.path
    assert sorted(p.name for p in out.iterdir()) == [
        "clip_ingest.json", "open_clip_config.json", "open_clip_model.safetensors"
    ]
    reloaded = OpenClipEmbedder(str(out), device="cpu")
    assert reloaded.model_id == result.model_id
    # same weights and preprocessing as the source; only the recorded name differs
    assert result.model_id.split("@")[1] == tiny_embedder.model_id.split("@")[1]
    np.testing.assert_array_equal(reloaded.embed_images(IMAGES), tiny_embedder.embed_images(IMAGES))
    np.testing.assert_array_equal(reloaded.embed_texts(TEXTS), tiny_embedder.embed_texts(TEXTS))
    meta = json.loads((out / "clip_ingest.json").read_text())
    assert meta["model_id"] == result.model_id
    assert meta["base_model"] == TINY_SPEC and meta["recipe"] == {"name": "tiny-smoke"}
    assert meta["data"] == {"images": 12} and meta["metrics"]["eth80"]["mAP"] == 0.5
    config = json.loads((out / "open_clip_config.json").read_text())
    assert config["model_cfg"]["embed_dim"] == 32 and config["preprocess_cfg"]["size"] == [32, 32]


def test_reexport_of_an_export_keeps_its_name_and_model_id(tmp_path):
    first = export_model(TINY_SPEC, tmp_path / "a", name="my-model")
    second = export_model(str(first.path), tmp_path / "b")
    assert second.model_id == first.model_id
    assert json.loads((second.path / "clip_ingest.json").read_text())["base_model"] == TINY_SPEC


def test_fp16_export_halves_the_weights_and_reports_its_own_model_id(tmp_path, tiny_embedder):
    result = export_model(TINY_SPEC, tmp_path / "half", fp16=True)
    weights = load_file(str(result.path / "open_clip_model.safetensors"))
    assert {t.dtype for t in weights.values() if t.is_floating_point()} == {torch.float16}
    reloaded = OpenClipEmbedder(str(result.path), device="cpu")
    assert reloaded.model_id == result.model_id
    assert result.model_id.split("@")[1] != tiny_embedder.model_id.split("@")[1]
    cosine = (reloaded.embed_images(IMAGES) * tiny_embedder.embed_images(IMAGES)).sum(axis=1)
    assert cosine.min() > 0.999


def test_export_refuses_a_non_empty_destination_and_leaves_it_alone(tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not empty"):
        export_model(TINY_SPEC, out)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    export_model(TINY_SPEC, out, overwrite=True)
    assert not (out / "notes.txt").exists() and (out / "open_clip_model.safetensors").is_file()
    assert not list(tmp_path.glob(".*partial"))
