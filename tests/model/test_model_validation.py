"""Model selection on a validation split: the best epoch is kept, early stopping, resume, stage wiring."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from clip_ingest.connectors.factory import load_model
from clip_ingest.model import train as train_module
from clip_ingest.model.data import DataError, load_samples, split_samples
from clip_ingest.model.distributed import DistInfo
from clip_ingest.model.stages import FinetuneConfig, PretrainConfig, RealignConfig, run_finetune, run_pretrain, run_realign
from clip_ingest.model.train import TrainConfig, fit
from clip_ingest.model.validation import GuardedScore, ImageRetrievalScore
from model_helpers import FAST, TINY, count_image_tower_calls, labelled_images, snapshot

TEMPLATES = ("a photo of a {label}.",)


class IndexBatch(list):
    skipped = 0

    def to(self, device):
        return self


class Quadratic(nn.Module):
    """One weight pulled towards 3 by every step: its value tells which epoch it comes from."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, batch):
        return ((self.w - 3.0) ** 2).sum()


class Scripted:
    """A validation score that replays a fixed sequence and counts its calls."""

    name = "scripted"

    def __init__(self, scores):
        self.scores, self.calls = list(scores), 0

    def __call__(self) -> float:
        self.calls += 1
        return self.scores[self.calls - 1]


def _fit(tmp_path: Path, scores, epochs: int, patience: int = 0, module: nn.Module | None = None, **kw):
    module = module or Quadratic()
    weights: list[float] = []
    result = fit(
        module,
        [{"params": list(module.parameters()), "lr": 0.1, "weight_decay": 0.0}],
        list(range(8)),
        IndexBatch,
        TrainConfig(epochs=epochs, batch_size=4, lr=0.1, warmup_steps=0, patience=patience, device="cpu", **kw),
        tmp_path / "ckpt",
        DistInfo(),
        torch.device("cpu"),
        on_epoch_end=lambda epoch, loss: weights.append(module.w.item()),
        validate=Scripted(scores),
    )
    return result, module, weights


def test_fit_ends_with_the_weights_of_the_best_validation_epoch(tmp_path):
    result, module, weights = _fit(tmp_path, [0.1, 0.5, 0.3], epochs=3)
    assert result.val_scores == [0.1, 0.5, 0.3] and result.best_epoch == 2 and result.epochs == 3
    assert len(set(weights)) == 3  # every epoch moved the weight
    assert module.w.item() == weights[1]


def test_fit_keeps_the_last_epoch_when_it_is_the_best(tmp_path):
    result, module, weights = _fit(tmp_path, [0.1, 0.2, 0.3], epochs=3)
    assert result.best_epoch == 3 and module.w.item() == weights[2]


def test_early_stopping_after_patience_epochs_without_improvement(tmp_path):
    result, module, weights = _fit(tmp_path, [0.5, 0.4, 0.5, 0.9], epochs=4, patience=2)
    assert result.epochs == 3 and len(weights) == 3  # epoch 4 never ran: 2 and 3 did not beat 0.5
    assert result.best_epoch == 1 and module.w.item() == weights[0]


def test_without_patience_every_epoch_runs(tmp_path):
    result, _, _ = _fit(tmp_path, [0.5, 0.4, 0.3, 0.2], epochs=4)
    assert result.epochs == 4 and result.best_epoch == 1


def test_a_resumed_run_keeps_the_validation_history_and_the_best_weights(tmp_path, monkeypatch):
    straight, straight_module, _ = _fit(tmp_path / "a", [0.1, 0.9, 0.2], epochs=3)
    real_save = train_module.save_training_state
    saves = {"n": 0}

    def crash_after_second_snapshot(*args, **kwargs):
        real_save(*args, **kwargs)
        saves["n"] += 1
        if saves["n"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "save_training_state", crash_after_second_snapshot)
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path / "b", [0.1, 0.9, 0.2], epochs=3)
    monkeypatch.setattr(train_module, "save_training_state", real_save)
    scores = Scripted([0.2])  # only epoch 3 is left to train and score
    module = Quadratic()
    resumed = fit(
        module, [{"params": list(module.parameters()), "lr": 0.1, "weight_decay": 0.0}], list(range(8)), IndexBatch,
        TrainConfig(epochs=3, batch_size=4, lr=0.1, warmup_steps=0, device="cpu"), tmp_path / "b" / "ckpt",
        DistInfo(), torch.device("cpu"), validate=scores,
    )
    assert resumed.resumed_from_epoch == 2 and scores.calls == 1
    assert resumed.val_scores == straight.val_scores and resumed.best_epoch == 2
    assert module.w.item() == straight_module.w.item()


def test_finetune_selects_on_its_validation_split(tmp_path):
    images = labelled_images(tmp_path / "imgs", n=36)
    cfg = FinetuneConfig(
        TINY, str(images), str(tmp_path / "ft"), train=TrainConfig(**{**FAST, "epochs": 3, "device": "cpu"}),
        val_fraction=0.3,
    )
    result = run_finetune(cfg)
    assert len(result.fit.val_scores) == 3 and all(0.0 < s <= 1.0 for s in result.fit.val_scores)
    best = result.fit.val_scores.index(max(result.fit.val_scores)) + 1
    assert result.fit.best_epoch == best
    meta = json.loads((result.model_dir / "clip_ingest.json").read_text())
    assert meta["fit"]["best_epoch"] == best and meta["val_images"] > 0
    # the exported directory holds the selected weights, the same as the model in memory
    exported = snapshot(load_model(str(result.model_dir)).model)
    in_memory = snapshot(result.model)
    assert all(torch.equal(exported[k], in_memory[k]) for k in exported)


def test_finetune_selects_on_a_validation_set_of_its_own_and_trains_on_all_of_data(tmp_path):
    images = labelled_images(tmp_path / "imgs", n=24)
    unseen = labelled_images(tmp_path / "unseen", n=12)
    cfg = FinetuneConfig(
        TINY, str(images), str(tmp_path / "ft"), train=TrainConfig(**{**FAST, "epochs": 3, "lr": 3e-3, "device": "cpu"}),
        val_data=str(unseen),
    )
    result = run_finetune(cfg)
    meta = json.loads((result.model_dir / "clip_ingest.json").read_text())
    assert (meta["train_images"], meta["val_images"], meta["val_data"]) == (24, 12, str(unseen))
    assert len(result.fit.val_scores) == 3
    # the kept model scores on the separate set exactly what selection recorded for its epoch
    exported = load_model(str(result.model_dir))
    score = ImageRetrievalScore.build(exported.model, load_samples(unseen), exported.preprocess, torch.device("cpu"))
    assert score() == pytest.approx(result.fit.val_scores[result.fit.best_epoch - 1], abs=1e-6)


def test_a_separate_validation_set_may_not_share_images_with_the_training_data(tmp_path):
    images = labelled_images(tmp_path / "imgs", n=12)
    with pytest.raises(DataError, match="12 validation images are also in"):
        run_finetune(FinetuneConfig(TINY, str(images), str(tmp_path / "ft"), val_data=str(images)))
    with pytest.raises(ValueError, match="val_data or val_fraction, not both"):
        FinetuneConfig(TINY, str(images), str(tmp_path / "ft"), val_fraction=0.1, val_data=str(images))
    assert not (tmp_path / "ft").exists()


def test_wise_ft_moves_the_image_tower_back_towards_the_start_by_the_alpha_validation_rates_best(tmp_path):
    images = labelled_images(tmp_path / "imgs", n=36)
    train = TrainConfig(**{**FAST, "epochs": 2, "lr": 3e-3, "device": "cpu"})
    runs = {alphas: run_finetune(FinetuneConfig(TINY, str(images), str(tmp_path / f"ft{len(alphas)}"), train=train,
                                                val_fraction=0.3, wise_ft_alphas=alphas))
            for alphas in [(), (0.5,), (0.25, 1.0)]}
    start, trained, half = (snapshot(load_model(spec).model) for spec in (TINY, str(runs[()].model_dir),
                                                                           str(runs[(0.5,)].model_dir)))
    visual = [k for k in start if k.startswith("visual.") and start[k].is_floating_point()]
    assert any(not torch.equal(start[k], trained[k]) for k in visual)
    for k in visual:  # training is deterministic: alpha 0.5 lands halfway between the start and the trained weights
        torch.testing.assert_close(half[k], (start[k] + trained[k]) / 2, rtol=1e-4, atol=1e-5)
    assert all(torch.equal(half[k], trained[k]) for k in trained if not k.startswith("visual."))
    meta = json.loads((runs[(0.25, 1.0)].model_dir / "clip_ingest.json").read_text())["wise_ft"]
    assert meta["alphas"] == [0.25, 1.0] and len(meta["scores"]) == 2
    assert meta["alpha"] == meta["alphas"][meta["scores"].index(max(meta["scores"]))]
    assert meta["scores"][1] == pytest.approx(max(runs[(0.25, 1.0)].fit.val_scores), abs=1e-6)
    exported = load_model(str(runs[(0.25, 1.0)].model_dir))
    val = split_samples(load_samples(images), 0.3, 0)[1]
    kept = ImageRetrievalScore.build(exported.model, val, exported.preprocess, torch.device("cpu"))()
    assert kept == pytest.approx(max(meta["scores"]), abs=1e-6)


def test_with_wise_ft_and_a_text_guard_epochs_go_by_image_map_and_the_guard_judges_the_alphas(tmp_path):
    images = labelled_images(tmp_path / "imgs", n=36)
    held_out = _captioned_manifest(labelled_images(tmp_path / "held", n=24), tmp_path / "held.jsonl")
    cfg = FinetuneConfig(
        TINY, str(images), str(tmp_path / "ft"), train=TrainConfig(**{**FAST, "epochs": 3, "lr": 3e-3, "device": "cpu"}),
        val_fraction=0.3, text_guard_data=str(held_out), text_guard_tolerance=0.0, wise_ft_alphas=(0.3, 0.6, 1.0),
    )
    result = run_finetune(cfg)
    meta = json.loads((result.model_dir / "clip_ingest.json").read_text())
    guard, wise = meta["text_guard"], meta["wise_ft"]
    assert "epochs" not in guard and all(0.0 < v <= 1.0 for v in result.fit.val_scores)  # plain image mAP
    assert result.fit.best_epoch == result.fit.val_scores.index(max(result.fit.val_scores)) + 1
    assert [p for p, _ in guard["alphas"]][-1] == pytest.approx(max(result.fit.val_scores), abs=1e-6)
    expected = [p if g >= guard["floor"] else g - guard["floor"] for p, g in guard["alphas"]]
    assert wise["scores"] == pytest.approx(expected)
    assert wise["alpha"] == max(zip(expected, wise["alphas"]))[1]


def test_wise_ft_needs_a_validation_score_and_alphas_in_the_unit_interval(tmp_path):
    images = labelled_images(tmp_path / "imgs", n=12)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        FinetuneConfig(TINY, str(images), str(tmp_path / "ft"), wise_ft_alphas=(0.0, 1.0))
    with pytest.raises(DataError, match="choose by"):
        run_finetune(FinetuneConfig(TINY, str(images), str(tmp_path / "ft"), wise_ft_alphas=(0.5,),
                                    train=TrainConfig(**{**FAST, "device": "cpu"})))


def test_pretrain_and_realign_score_captions_and_realign_still_never_runs_the_image_tower(tmp_path, monkeypatch):
    images = labelled_images(tmp_path / "imgs", n=24)
    train = TrainConfig(**{**FAST, "epochs": 2, "device": "cpu"})
    pre = run_pretrain(PretrainConfig(TINY, str(images), str(tmp_path / "pre"), train=train, templates=TEMPLATES, val_fraction=0.3))
    assert len(pre.fit.val_scores) == 2 and pre.fit.best_epoch == pre.fit.val_scores.index(max(pre.fit.val_scores)) + 1
    calls = count_image_tower_calls(monkeypatch)
    re = run_realign(RealignConfig(
        str(pre.model_dir), str(images), str(tmp_path / "re"), train=TrainConfig(**{**FAST, "epochs": 3, "device": "cpu"}),
        templates=TEMPLATES, val_fraction=0.3,
    ))
    assert len(re.fit.val_scores) == 3
    assert calls["n"] == 4  # 24 train + val images, once, in cache batches of 6; none while training or scoring


def test_weights_kept_by_an_epoch_that_crashed_before_its_snapshot_are_never_used(tmp_path, monkeypatch):
    real_save = train_module.save_training_state
    saves = {"n": 0}

    def crash_on_second_snapshot(*args, **kwargs):
        saves["n"] += 1
        if saves["n"] == 2:
            raise KeyboardInterrupt  # epoch 2 kept its (best) weights, its snapshot never happened
        real_save(*args, **kwargs)

    monkeypatch.setattr(train_module, "save_training_state", crash_on_second_snapshot)
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path, [0.1, 0.9], epochs=3)
    monkeypatch.setattr(train_module, "save_training_state", real_save)
    _, reference, _ = _fit(tmp_path / "ref", [0.1, 0.0, 0.0], epochs=3)  # ends with epoch 1's weights
    # the retrained epoch 2 now scores worse (a nondeterministic run): epoch 1 must win
    result, module, _ = _fit(tmp_path, [0.05, 0.04], epochs=3)
    assert result.resumed_from_epoch == 1 and result.val_scores == [0.1, 0.05, 0.04] and result.best_epoch == 1
    assert module.w.item() == reference.w.item()
    assert [p.name for p in (tmp_path / "ckpt").glob("best-*")] == ["best-1.safetensors"]


def test_resuming_without_validation_keeps_the_trained_weights(tmp_path):
    first, _, weights = _fit(tmp_path, [0.9, 0.1], epochs=2)
    assert first.best_epoch == 1
    module = Quadratic()
    result = fit(
        module, [{"params": list(module.parameters()), "lr": 0.1, "weight_decay": 0.0}], list(range(8)), IndexBatch,
        TrainConfig(epochs=3, batch_size=4, lr=0.1, warmup_steps=0, device="cpu"), tmp_path / "ckpt",
        DistInfo(), torch.device("cpu"),
    )
    assert result.resumed_from_epoch == 2 and result.best_epoch is None
    assert module.w.item() not in weights  # epoch 3's weights, not epoch 1's kept best put back


def test_a_guarded_score_keeps_the_best_epoch_that_kept_its_guard(tmp_path):
    """Epoch 2 has the best primary score but broke the guard (0.45 < 0.5 - 0.01): epoch 3 wins."""
    guard = Scripted([0.5, 0.495, 0.45, 0.492])  # the first value is the starting model's
    score = GuardedScore(Scripted([0.6, 0.8, 0.7]), guard, tolerance=0.01)
    assert score.start == 0.5 and guard.calls == 1
    module = Quadratic()
    result = fit(
        module, [{"params": list(module.parameters()), "lr": 0.1, "weight_decay": 0.0}], list(range(8)), IndexBatch,
        TrainConfig(epochs=3, batch_size=4, lr=0.1, warmup_steps=0, device="cpu"), tmp_path / "ckpt", DistInfo(),
        torch.device("cpu"), validate=score,
    )
    assert result.best_epoch == 3
    assert result.val_scores == pytest.approx([0.6, 0.45 - 0.49, 0.7])
    assert score.history == [(0.6, 0.495), (0.8, 0.45), (0.7, 0.492)]


def test_when_every_epoch_breaks_the_guard_the_least_damaging_one_wins():
    score = GuardedScore(Scripted([0.9, 0.6]), Scripted([0.5, 0.40, 0.47]), tolerance=0.01)
    values = [score(), score()]
    assert values == pytest.approx([0.40 - 0.49, 0.47 - 0.49]) and max(values) == values[1] < 0
    with pytest.raises(ValueError, match="tolerance"):
        GuardedScore(Scripted([0.1]), Scripted([0.5]), tolerance=-0.1)


def _captioned_manifest(images: Path, out: Path) -> Path:
    """A JSONL manifest of the shape images with one caption each that names the shape and the file."""
    rows = [{"path": str(p), "captions": [f"a {p.parent.name} number {i}"]}
            for i, p in enumerate(sorted(images.rglob("*.png")))]
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return out


@pytest.mark.parametrize("tolerance", [0.0, 1.0])
def test_finetune_with_a_text_guard_selects_by_image_map_among_epochs_that_kept_text_retrieval(tmp_path, tolerance):
    images = labelled_images(tmp_path / "imgs", n=36)
    held_out = _captioned_manifest(labelled_images(tmp_path / "held", n=24), tmp_path / "held.jsonl")
    cfg = FinetuneConfig(
        TINY, str(images), str(tmp_path / "ft"), train=TrainConfig(**{**FAST, "epochs": 3, "lr": 3e-3, "device": "cpu"}),
        val_fraction=0.3, text_guard_data=str(held_out), text_guard_fraction=0.5, text_guard_tolerance=tolerance,
    )
    result = run_finetune(cfg)
    guard = json.loads((result.model_dir / "clip_ingest.json").read_text())["text_guard"]
    assert guard["images"] == len(split_samples(load_samples(held_out), 0.5, 0)[1]) > 5
    assert guard["floor"] == pytest.approx(guard["start"] - tolerance)
    assert len(guard["epochs"]) == 3
    expected = [p if g >= guard["floor"] else g - guard["floor"] for p, g in guard["epochs"]]
    assert result.fit.val_scores == pytest.approx(expected)
    assert result.fit.best_epoch == expected.index(max(expected)) + 1
    if tolerance == 1.0:  # nothing can break the guard: plain image mAP selection
        primaries = [p for p, _ in guard["epochs"]]
        assert result.fit.best_epoch == primaries.index(max(primaries)) + 1
