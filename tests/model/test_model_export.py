"""Export a model to open_clip's local-dir layout and reload it through the ingestion embedder."""

from __future__ import annotations

import json

from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from safetensors.torch import load_file

from clip_ingest.connectors.factory import load_model
from clip_ingest.connectors.openclip_embedder import OpenClipEmbedder
from clip_ingest.model.doc_blocks import replace_block
from clip_ingest.model.export import ExportError, export_model
from clip_ingest.model.model_card import CARD_NAME, EXPERIMENT_BLOCK, render_model_card
from clip_ingest.model.published import PUBLISHED, PublishedCheckpoint, PublishedCheckpointError, fetch_published
from conftest import TINY_ARCH, TINY_SPEC
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
        "MODEL_CARD.md", "clip_ingest.json", "open_clip_config.json", "open_clip_model.safetensors"
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


def test_model_card_states_the_recorded_facts_and_its_tables_are_refreshable(tmp_path):
    """The card is generated from clip_ingest.json: model_id, numbers beside the run's other models,
    an experiment block; update-doc replaces a block and leaves the rest alone."""
    others = [{"name": "random", "spec": "clip-ingest-tiny:random", "model_id": "random@1/2",
               "metrics": {"eth80 instance mAP": 0.25, "cifar10 zero-shot acc": 0.1}}]
    result = export_model(TINY_SPEC, tmp_path / "m", name="mine", metrics={"eth80 instance mAP": 0.5},
                          compared_with=others, experiment="| metric | base |\n|---|---:|\n| x | 1.0 |\n")
    card = (result.path / CARD_NAME).read_text()
    assert card.startswith("# mine\n") and f"`{result.model_id}`" in card
    assert "| metric | random | **mine** |" in card and "| eth80 instance mAP | 25.0 | 50.0 |" in card
    assert "cifar10" not in card  # only this model's metrics are rows
    assert "| x | 1.0 |" in card and "random@1/2" in card
    new_table = tmp_path / "experiment.md"
    new_table.write_text("| metric | base |\n|---|---:|\n| x | 2.0 |\n")
    assert replace_block(result.path / CARD_NAME, EXPERIMENT_BLOCK, new_table)
    refreshed = (result.path / CARD_NAME).read_text()
    assert "| x | 2.0 |" in refreshed and "| x | 1.0 |" not in refreshed
    assert refreshed.split("## Experiment")[0] == card.split("## Experiment")[0]
    bare = (export_model(TINY_SPEC, tmp_path / "bare").path / CARD_NAME).read_text()
    assert "*Not evaluated.*" in bare and "*No experiment table.*" in bare
    resumed = render_model_card({"fit": {"steps": 30, "epochs": 20, "seconds": 600, "resumed_from_epoch": 16}})
    assert "epochs 17-20 (resumed after epoch 16) took 10 min" in resumed  # not the whole run's time


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


# --- published checkpoints: conversion of a local .pth (no network) ---------------------------

TINY_RELEASE = PublishedCheckpoint(arch=TINY_ARCH, base_tag=None, url="unused", description="tiny test release")


def _tiny_state_dict() -> dict[str, torch.Tensor]:
    return load_model(TINY_SPEC).model.state_dict()


def test_published_pth_is_converted_once_and_loads_strictly(tmp_path, tiny_embedder):
    pth = tmp_path / "release.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in _tiny_state_dict().items()}}, pth)
    cache = tmp_path / "cache"
    out = fetch_published("tiny-release", cache_dir=cache, url=str(pth), entry=TINY_RELEASE)
    assert (out / "open_clip_model.safetensors").is_file() and not list(cache.glob("*.pth"))
    embedder = OpenClipEmbedder(str(out), device="cpu")
    np.testing.assert_array_equal(embedder.embed_images(IMAGES), tiny_embedder.embed_images(IMAGES))
    meta = json.loads((out / "clip_ingest.json").read_text())
    assert meta["model_id"] == embedder.model_id and meta["source"] == str(pth)
    pth.unlink()  # cached: no second download
    assert fetch_published("tiny-release", cache_dir=cache, url=str(pth), entry=TINY_RELEASE) == out


@pytest.mark.parametrize("damage", ["missing", "unexpected"])
def test_published_conversion_rejects_a_state_dict_that_does_not_fit(tmp_path, damage):
    state = _tiny_state_dict()
    if damage == "missing":
        state.pop("text_projection")
    else:
        state["visual.extra_head.weight"] = torch.zeros(2)
    pth = tmp_path / "bad.pth"
    torch.save(state, pth)
    with pytest.raises(PublishedCheckpointError, match="does not fit") as err:
        fetch_published("bad", cache_dir=tmp_path / "cache", url=str(pth), entry=TINY_RELEASE)
    assert ("text_projection" if damage == "missing" else "extra_head") in str(err.value)
    assert not (tmp_path / "cache" / "bad").exists() and not list((tmp_path / "cache").iterdir())


class _Payload:
    """Unpickling this would run code (write a marker file) if pickle were trusted."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path(self.marker).write_text, ("pwned",))


def test_published_pickle_with_an_arbitrary_object_is_refused(tmp_path):
    marker = tmp_path / "marker.txt"
    pth = tmp_path / "evil.pth"
    torch.save({"visual.proj": torch.zeros(1), "payload": _Payload(str(marker))}, pth)
    with pytest.raises(PublishedCheckpointError, match="weights_only"):
        fetch_published("evil", cache_dir=tmp_path / "cache", url=str(pth), entry=TINY_RELEASE)
    assert not marker.exists()


def test_published_table_names_real_architectures_and_unknown_aliases_fail():
    for entry in PUBLISHED.values():
        assert entry.arch in open_clip.list_models()
        assert entry.base_tag in open_clip.list_pretrained_tags_by_model(entry.arch)
    with pytest.raises(PublishedCheckpointError, match="known: mcip-vit-l-14-336"):
        fetch_published("nope")
