"""Towers/freezing for both open_clip model classes, data sources, and tiny end-to-end stage runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from clip_ingest.connectors.factory import load_model
from clip_ingest.model import train as train_module
from clip_ingest.model.data import DataError, Sample, load_samples, read_manifest, split_samples, write_jsonl, write_manifest
from clip_ingest.model.stages import (
    FinetuneConfig,
    PretrainConfig,
    RealignConfig,
    run_finetune,
    run_pretrain,
    run_realign,
)
from clip_ingest.model.towers import (
    image_parameter_names,
    realign_parameter_names,
    set_trainable,
    text_parameter_names,
)
from clip_ingest.model.train import TrainConfig
from model_helpers import (
    FAST,
    TINY,
    changed,
    count_image_tower_calls,
    labelled_images,
    register_custom_text_config,
    snapshot,
)

TEMPLATES = ("a photo of a {label}.", "a {label} shape")


@pytest.fixture(scope="module")
def specs(tmp_path_factory) -> list[str]:
    return [TINY, register_custom_text_config(tmp_path_factory.mktemp("configs"))]


@pytest.fixture
def images(tmp_path: Path) -> Path:
    return labelled_images(tmp_path / "imgs")


def _train(**kw) -> TrainConfig:
    return TrainConfig(**{**FAST, "device": "cpu", **kw})


@pytest.mark.parametrize("which", [0, 1], ids=["CLIP", "CustomTextCLIP"])
def test_towers_partition_and_freeze_both_model_classes(specs, which):
    model = load_model(specs[which]).model
    assert type(model).__name__ == ("CLIP", "CustomTextCLIP")[which]
    image, text = set(image_parameter_names(model)), set(text_parameter_names(model))
    assert image and text and not image & text
    assert image | text | {"logit_scale"} == {n for n, _ in model.named_parameters()}
    realign = realign_parameter_names(model, last_blocks=1)
    assert any(".resblocks.0." in n for n in realign)  # the tiny text tower has one block
    assert any("ln_final" in n for n in realign) and any("text_projection" in n for n in realign)
    assert set(realign) - {"logit_scale"} <= text
    # a real step: frozen parameters keep their values and get no .grad
    set_trainable(model, image_parameter_names(model))
    before = snapshot(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    img = model.encode_image(torch.randn(2, 3, 32, 32))
    txt = model.encode_text(torch.randint(0, 100, (2, 32)))
    (img.sum() + txt.sum()).backward()
    opt.step()
    params = dict(model.named_parameters())
    assert all(params[n].grad is None for n in text)
    assert changed(before, snapshot(model)) == image


def test_set_trainable_refuses_unknown_names(specs):
    with pytest.raises(KeyError, match="no parameters"):
        set_trainable(load_model(TINY).model, ["visual.nope"])


@pytest.mark.parametrize("which", [0, 1], ids=["CLIP", "CustomTextCLIP"])
@pytest.mark.parametrize("method", ["retrieval", "mcip"])
def test_finetune_trains_only_the_image_tower(specs, images, tmp_path, which, method):
    spec = specs[which]
    initial = load_model(spec).model
    result = run_finetune(
        FinetuneConfig(spec, str(images), str(tmp_path / "out"), train=_train(), method=method, templates=TEMPLATES)
    )
    trained = load_model(str(result.model_dir)).model  # the exported directory loads through the factory
    diff = changed(snapshot(initial), snapshot(trained))
    assert diff and diff <= set(image_parameter_names(initial))
    assert any(n.endswith("proj") for n in diff)  # the image projection is trained too
    assert result.fit.steps == 2 and result.fit.samples == 12
    meta = json.loads((result.model_dir / "clip_ingest.json").read_text())
    assert meta["method"] == method and meta["classes"] == ["circle", "square", "triangle"]


@pytest.mark.parametrize("which", [0, 1], ids=["CLIP", "CustomTextCLIP"])
def test_realign_trains_chosen_text_parts_and_never_runs_the_image_tower(specs, images, tmp_path, monkeypatch, which):
    spec = specs[which]
    calls = count_image_tower_calls(monkeypatch)
    cfg = RealignConfig(
        spec, str(images), str(tmp_path / "re"), train=_train(epochs=3), templates=TEMPLATES,
        last_blocks=1, final_norm=False,
    )
    run_realign(cfg)
    assert calls["n"] == 2  # 12 images in cache batches of 6; none in 3 training epochs
    assert (tmp_path / "re" / "image_embeddings.safetensors").is_file()
    calls["n"] = 0
    result = run_realign(RealignConfig(**{**cfg.__dict__, "out_dir": str(tmp_path / "re"), "train": _train(epochs=3, resume=False)}))
    assert calls["n"] == 0  # the cache is reused
    initial = load_model(spec).model
    diff = changed(snapshot(initial), snapshot(load_model(str(result.model_dir)).model))
    assert diff and not diff & set(image_parameter_names(initial))
    assert not any("ln_final" in n for n in diff)  # final_norm=False keeps it frozen
    assert any("resblocks.0" in n for n in diff) and "logit_scale" in diff


def test_realign_output_keeps_the_finetuned_image_tower(images, tmp_path):
    ft = run_finetune(FinetuneConfig(TINY, str(images), str(tmp_path / "ft"), train=_train()))
    re = run_realign(RealignConfig(str(ft.model_dir), str(images), str(tmp_path / "re"), train=_train(), templates=TEMPLATES))
    a, b = snapshot(ft.model), snapshot(load_model(str(re.model_dir)).model)
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("visual."))
    assert any(not torch.equal(a[k], b[k]) for k in a if not k.startswith("visual."))


def test_pretrain_trains_both_towers_from_random_weights(images, tmp_path):
    result = run_pretrain(PretrainConfig(TINY, str(images), str(tmp_path / "pre"), train=_train(), templates=TEMPLATES))
    diff = changed(snapshot(load_model(TINY).model), snapshot(load_model(str(result.model_dir)).model))
    assert any(n.startswith("visual.") for n in diff) and any(n.startswith("transformer.") for n in diff)


def test_two_view_self_supervision_adds_an_image_image_infonce_and_changes_training(images, tmp_path):
    """``image_ssl_weight``: the dataset yields two augmentations of one decode, the loss is the
    image-text InfoNCE of the first view plus the weighted view-view InfoNCE, and it trains."""
    import math

    from clip_ingest.model.augment import AugmentConfig, train_transform
    from clip_ingest.model.data import ImageDataset, collate_images
    from clip_ingest.model.losses import InfoNCELoss
    from clip_ingest.model.mining import with_template_captions
    from clip_ingest.model.trainers import ContrastiveTrainer

    loaded = load_model(TINY)
    samples = with_template_captions(load_samples(str(images)), TEMPLATES)
    two = ImageDataset(samples, train_transform(loaded.preprocess_cfg, AugmentConfig()), views=2)
    pixels, _ = two[0]
    assert pixels.shape[0] == 2 and not torch.equal(pixels[0], pixels[1])  # two different crops
    with pytest.raises(ValueError):
        ImageDataset(samples, loaded.preprocess, views=3)

    batch = collate_images([two[i] for i in range(4)])
    model = loaded.model.eval()
    captions = [s.captions for s in samples]
    torch.manual_seed(0)
    got = ContrastiveTrainer(model, loaded.tokenizer, captions, image_ssl_weight=0.5, image_ssl_temperature=0.2)(batch)
    torch.manual_seed(0)
    picks = torch.randint(0, 2**31 - 1, (4,)).tolist()
    texts = [captions[i][p % len(captions[i])] for i, p in zip(batch.indices.tolist(), picks)]
    with torch.no_grad():
        txt = model.encode_text(loaded.tokenizer(texts))
        a, b = model.encode_image(batch.pixels[:, 0]), model.encode_image(batch.pixels[:, 1])
        expected = InfoNCELoss()(a, txt, model.logit_scale) + 0.5 * InfoNCELoss()(a, b, torch.tensor(math.log(5.0)))
    assert torch.allclose(got.detach(), expected, atol=1e-5)

    plain = run_pretrain(PretrainConfig(TINY, str(images), str(tmp_path / "plain"), train=_train(), templates=TEMPLATES))
    ssl = run_pretrain(PretrainConfig(TINY, str(images), str(tmp_path / "ssl"), train=_train(), templates=TEMPLATES,
                                      image_ssl_weight=1.0))
    assert changed(snapshot(plain.model), snapshot(ssl.model))
    assert ssl.metadata["config"]["image_ssl_weight"] == 1.0


def test_pretrain_without_captions_is_a_clear_error(images, tmp_path):
    with pytest.raises(DataError, match="needs captions") as caught:
        run_pretrain(PretrainConfig(TINY, str(images), str(tmp_path / "pre"), train=_train()))
    assert "--set \"templates=['a photo of a {label}.']\"" in str(caught.value)  # the syntax that works


def test_finetune_resumes_after_an_interruption_with_identical_weights(images, tmp_path, monkeypatch):
    def cfg(out: str) -> FinetuneConfig:
        return FinetuneConfig(TINY, str(images), str(tmp_path / out), train=_train(epochs=2))

    straight = run_finetune(cfg("straight"))
    real_save = train_module.save_training_state

    def crash_after_first_snapshot(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "save_training_state", crash_after_first_snapshot)
    with pytest.raises(KeyboardInterrupt):
        run_finetune(cfg("resumed"))
    monkeypatch.setattr(train_module, "save_training_state", real_save)
    resumed = run_finetune(cfg("resumed"))
    assert resumed.fit.resumed_from_epoch == 1 and resumed.fit.steps == straight.fit.steps
    assert not changed(snapshot(straight.model), snapshot(resumed.model))


def test_undecodable_images_are_skipped_and_counted(images, tmp_path):
    (images / "circle" / "broken.png").write_bytes(b"not a png at all")
    result = run_finetune(FinetuneConfig(TINY, str(images), str(tmp_path / "out"), train=_train()))
    assert result.fit.skipped == 1 and result.fit.samples == 12


def test_manifests_csv_and_jsonl_with_both_caption_syntaxes(tmp_path):
    (tmp_path / "m.csv").write_text('path,label,captions\na.png,cat,"a cat|a pet"\nb.png,,\n')
    rows = [{"path": "c.png", "label": "dog", "captions": ["a dog"]}, {"path": "d.png", "captions": '["x", "y"]'}]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    csv_samples = read_manifest(tmp_path / "m.csv")
    assert csv_samples[0].captions == ("a cat", "a pet") and csv_samples[0].path == str(tmp_path / "a.png")
    assert csv_samples[1].label is None and csv_samples[1].captions == ()
    jl = load_samples(tmp_path / "m.jsonl")
    assert jl[0].label == "dog" and jl[1].captions == ("x", "y")
    (tmp_path / "bad.jsonl").write_text('{"path": "a.png"}\nnot json\n')
    with pytest.raises(DataError, match="bad.jsonl:2"):
        read_manifest(tmp_path / "bad.jsonl")


def test_a_manifest_is_written_whole_or_not_at_all(tmp_path):
    """A run stopped while writing a manifest leaves the previous file (or none), never a
    truncated one that a re-run would take as finished."""
    out = tmp_path / "m.jsonl"
    write_manifest([Sample(str(tmp_path / "a.png"), "cat", ("a cat",))], out)
    before = out.read_bytes()

    def rows_then_failure():
        yield {"path": "b.png", "label": "dog", "captions": ["a dög"]}
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_jsonl(rows_then_failure(), out)
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["m.jsonl"]
    assert write_jsonl(iter([{"path": "b.png", "captions": ["a dög"]}]), out) == 1
    assert read_manifest(out)[0].captions == ("a dög",)


def test_split_is_deterministic_and_independent_of_order(images):
    samples = load_samples(images)
    train, val = split_samples(samples, 0.25, seed=3)
    train2, val2 = split_samples(list(reversed(samples)), 0.25, seed=3)
    assert {s.path for s in val} == {s.path for s in val2} and len(train) + len(val) == 12
    assert {s.label for s in samples} == {"circle", "square", "triangle"}
