"""Training stages of clip-model: one entry function per stage, each taking one config.

==========================================  ============================  ==============================
entry function                              ``clip-model`` subcommand     trains
==========================================  ============================  ==============================
``run_pretrain(PretrainConfig)``            ``pretrain``                  everything, symmetric InfoNCE on
                                                                          image-caption pairs
``run_finetune(FinetuneConfig)``            ``finetune --method           image tower + projection with
(``method="retrieval"``)                    retrieval``                   ArcMargin on class labels (2SFT 1)
``run_finetune(FinetuneConfig)``            ``finetune --method mcip``    image tower + projection with
(``method="mcip"``)                                                       0.75 ArcMargin + 0.25 MC-ArcMargin
``run_realign(RealignConfig)``              ``realign``                   last text blocks + ln_final + text
                                                                          projection + temperature, InfoNCE
                                                                          against cached image embeddings
``mining.run_mine_captions(MineConfig)``    ``mine-captions``             nothing: writes a JSONL manifest
==========================================  ============================  ==============================

Every training config has ``model`` (a model spec to start from: an architecture for
random weights, or an exported/previous stage directory), ``data`` (a class-per-folder
directory or a CSV/JSONL manifest, see :mod:`clip_ingest.model.data`), ``out_dir``,
``train`` (:class:`~clip_ingest.model.train.TrainConfig`: epochs, batch size, lr, seed,
workers, device...) and ``augment``. Each returns a :class:`StageResult`.

The output directory is a model in open_clip's ``local-dir:`` layout that
``clip_ingest.connectors.factory.load_model(out_dir)`` loads and the next stage takes as
its ``model``; ``out_dir/checkpoint/`` holds the resumable training snapshot (rerunning the
same config continues after the last finished epoch) and realignment caches image
embeddings in ``out_dir/image_embeddings.safetensors``. The usual chain is
``finetune (retrieval or mcip) -> realign``. Under ``torchrun`` the stages run DDP.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import torch
from torch import nn
from torch.utils.data import Dataset

from clip_ingest.connectors.factory import LoadedModel, load_model

from .augment import AugmentConfig, train_transform
from .checkpoint import model_config_for_spec, save_local_dir
from .data import (CAPTIONS_ADVICE, DataError, ImageDataset, Sample, class_index, collate_images, load_samples,
                   load_sources, split_samples)
from .distributed import DistInfo, barrier, setup_distributed
from .features import cached_image_embeddings
from .loss_factory import create_loss, losses_for
from .mining import with_template_captions
from .towers import image_parameter_names, realign_parameter_names, set_trainable
from .train import FitResult, TrainConfig, fit, score_on_main, seed_everything
from .trainers import LossInputs
from .validation import CaptionMatchScore, GuardedScore, ImageRetrievalScore, TextRetrievalScore, ValidationScore

log = logging.getLogger(__name__)

CHECKPOINT_SUBDIR = "checkpoint"
IMAGE_CACHE_FILE = "image_embeddings.safetensors"


@dataclass
class StageConfig:
    """What every training stage needs (see the module doc)."""

    model: str
    data: str | tuple[str, ...]
    """A class-per-folder directory or a manifest, or several of them (read in order)."""
    out_dir: str
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    val_fraction: float = 0.0
    split_seed: int = 0
    val_data: str | None = None
    """A validation set of its own (a manifest or folder) instead of a random ``val_fraction`` of
    ``data``: e.g. unseen object instances, when the random split holds out other views of the
    training instances and so cannot see what an unseen-instance test measures. None of its
    images may be in ``data``."""
    templates: tuple[str, ...] = ()
    """Caption templates over class names added to each sample's captions (e.g. "a photo of a {label}.")."""
    name: str | None = None

    def __post_init__(self) -> None:
        if self.val_data and self.val_fraction > 0:
            raise ValueError(f"give val_data or val_fraction, not both (val_fraction={self.val_fraction})")


@dataclass
class PretrainConfig(StageConfig):
    """Contrastive (pre)training of both towers on image-caption pairs (random weights or a checkpoint).

    ``label_smoothing`` of the InfoNCE targets and ``word_dropout`` of the captions are the
    small-data regularisers of Fini et al. (2023); both are off by default.
    """

    label_smoothing: float = 0.0
    word_dropout: float = 0.0
    image_ssl_weight: float = 0.0
    """Weight of an image-image InfoNCE between two augmented views of each image (SLIP-style
    self-supervision, Mu et al. 2022), added to the image-text loss; 0 turns it (and the
    second view) off. Departs from SLIP: the term lives in the joint embedding space, not on
    a separate MLP head, since that space is the one image search uses."""
    image_ssl_temperature: float = 0.1


@dataclass
class FinetuneConfig(StageConfig):
    """Image-tower fine-tuning: ``retrieval`` (ArcMargin) or ``mcip`` (+ MC-ArcMargin on captions).

    ``caption_weight`` is only used by ``mcip``; ``same_class_negatives=False`` stops
    captions of other images of the same class from counting as negatives.
    """

    method: str = "retrieval"
    """A ``finetune`` loss of :mod:`clip_ingest.model.loss_factory`: ``retrieval`` or ``mcip``."""
    arc_scale: float = 30.0
    arc_margin: float = 0.1
    proxy_lr_multiplier: float = 100.0
    arc_weight: float = 0.75
    caption_weight: float = 0.25
    caption_scale: float = 30.0
    caption_margin: float = 0.1
    caption_loss: str = "paper"
    """MC-ArcMargin as the paper writes it (``paper``) or as the authors' code computes it
    (``reference``); see :class:`~clip_ingest.model.losses.MultiCaptionArcMarginLoss`."""
    same_class_negatives: bool = True
    patch_dropout: float = 0.0
    text_guard_data: str | None = None
    """Held-out captioned images (a manifest or folder): with it, model selection keeps the best
    validation image mAP among the epochs whose text->image R@5 on these images stays within
    ``text_guard_tolerance`` of the starting model's (:class:`~clip_ingest.model.validation.GuardedScore`).
    Fine-tuning moves the image tower away from the frozen text tower; this bounds how far."""
    text_guard_fraction: float = 1.0
    """Use only the part of ``text_guard_data`` that ``split_samples(fraction, text_guard_seed)``
    holds out: with the base's ``val_fraction`` and ``split_seed`` on one of its manifests, the
    images the base never trained on."""
    text_guard_seed: int = 0
    text_guard_tolerance: float = 0.01
    text_guard_score: Literal["t2i_recall", "caption_match"] = "t2i_recall"
    """What the guard measures on ``text_guard_data``: text->image R@5 of each caption's own image
    (``t2i_recall``: captions that describe one image, Flickr-style), or image->caption R@1 among
    the distinct captions (``caption_match``: captions that many images share, a kind of thing,
    where one owner image does not exist; this is zero-shot classification by those captions)."""
    wise_ft_alphas: tuple[float, ...] = ()
    """WiSE-FT (Wortsman et al., 2022): after training, replace the image tower by
    ``(1 - a) * start + a * trained`` for the ``a`` of this grid (values in (0, 1]; 1 = the
    trained weights) that the validation score, guarded if a text guard is set, rates best. The
    guard then judges only these interpolations: the epoch is chosen by image mAP alone.
    Interpolating back towards the starting model gives back text alignment and zero-shot
    accuracy at a smaller image cost than stopping early or a lower learning rate. Not in the
    paper, whose MCIP keeps the trained weights; empty (the default) does the same."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.text_guard_score not in ("t2i_recall", "caption_match"):
            raise ValueError(f"text_guard_score must be 't2i_recall' or 'caption_match', not {self.text_guard_score!r}")
        if any(not 0.0 < a <= 1.0 for a in self.wise_ft_alphas):
            raise ValueError(f"wise_ft_alphas must lie in (0, 1], not {list(self.wise_ft_alphas)}")


@dataclass
class RealignConfig(StageConfig):
    """Text-tower realignment to a frozen (fine-tuned) image tower: the last ``last_blocks``
    text transformer blocks, optionally ``final_norm``, ``projection`` and the temperature."""

    last_blocks: int = 2
    final_norm: bool = True
    projection: bool = True
    train_temperature: bool = True


@dataclass
class StageResult:
    """A finished stage: the model directory it wrote, what training did, and the trained
    model still in memory (e.g. to evaluate it without loading it again)."""

    model_dir: Path
    fit: FitResult
    metadata: dict[str, Any]
    model: nn.Module = field(repr=False)


@dataclass
class IndexBatch:
    """A batch of dataset positions only (realignment needs no pixels)."""

    indices: torch.Tensor
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.indices)

    def to(self, device: torch.device) -> "IndexBatch":
        return IndexBatch(self.indices.to(device), self.skipped)


class _Positions(Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        return index


def _collate_positions(items: list[int]) -> IndexBatch:
    return IndexBatch(torch.tensor(items, dtype=torch.long))


@dataclass
class _Prepared:
    dist: DistInfo
    device: torch.device
    loaded: LoadedModel
    model_cfg: dict[str, Any]
    samples: list[Sample]
    val: list[Sample]


def _prepare(cfg: StageConfig) -> _Prepared:
    dist_info, device = setup_distributed(cfg.train.device)
    seed_everything(cfg.train.seed)  # same initial loss heads on every rank
    samples = load_sources(cfg.data)
    if cfg.templates:
        samples = with_template_captions(samples, cfg.templates)
    train, val = _split(cfg, samples)
    if not train:
        raise DataError(f"{cfg.data}: no training images")
    loaded = load_model(cfg.model, device=device)
    loaded.model.train()
    return _Prepared(dist_info, device, loaded, model_config_for_spec(cfg.model), train, val)


def _split(cfg: StageConfig, samples: list[Sample]) -> tuple[list[Sample], list[Sample]]:
    """(training, validation) samples: ``val_data`` beside all of ``samples``, or a ``val_fraction`` split."""
    if not cfg.val_data:
        return split_samples(samples, cfg.val_fraction, cfg.split_seed)
    val = load_samples(cfg.val_data)
    if cfg.templates:
        val = with_template_captions(val, cfg.templates)
    leaked = sorted({s.path for s in samples} & {s.path for s in val})
    if leaked:
        raise DataError(f"{cfg.val_data}: {len(leaked)} validation images are also in {cfg.data}, e.g. {leaked[0]}")
    return samples, val


def _image_dataset(cfg: StageConfig, prep: _Prepared, samples: Sequence[Sample], views: int = 1) -> ImageDataset:
    transform = train_transform(prep.loaded.preprocess_cfg, cfg.augment)
    size = prep.loaded.preprocess_cfg.get("size")
    draft = int(size[0] if isinstance(size, (list, tuple)) else size) if size else None
    return ImageDataset(samples, transform, draft_size=draft, views=views)


def _captioned_val(prep: _Prepared) -> list[Sample]:
    """The validation images with captions: the ones an image-caption score can use."""
    return [s for s in prep.val if s.captions]


def _captioned(samples: Sequence[Sample], stage: str) -> list[Sample]:
    kept = [s for s in samples if s.captions]
    if len(kept) < len(samples):
        log.warning("%s: %d of %d images have no captions and are left out", stage, len(samples) - len(kept), len(samples))
    if not kept:
        raise DataError(f"{stage} needs captions: {CAPTIONS_ADVICE}")
    return kept


def _finish(cfg: StageConfig, prep: _Prepared, result: FitResult, stage: str, extra: dict[str, Any]) -> StageResult:
    metadata = {
        "name": cfg.name or Path(cfg.out_dir).name,
        "stage": stage,
        "base_model": cfg.model,
        "data": cfg.data,
        "train_images": len(prep.samples),
        "val_images": len(prep.val),
        "val_data": cfg.val_data,
        "config": dataclasses.asdict(cfg),
        "fit": dataclasses.asdict(result),
        **extra,
    }
    if prep.dist.is_main:
        save_local_dir(prep.loaded.model, prep.model_cfg, prep.loaded.preprocess_cfg, cfg.out_dir, metadata)
        log.info("%s: wrote %s (%.1f samples/s)", stage, cfg.out_dir, result.samples_per_s)
    barrier(prep.dist)
    return StageResult(Path(cfg.out_dir), result, metadata, prep.loaded.model)


def _fit(
    cfg: StageConfig, prep: _Prepared, module: nn.Module, groups: list[dict], dataset: Dataset, collate,
    validate: ValidationScore | None = None,
) -> FitResult:
    if validate is not None:
        log.info("model selection on %d validation images by %s", len(prep.val), validate.name)
    return fit(
        module, groups, dataset, collate, cfg.train, Path(cfg.out_dir) / CHECKPOINT_SUBDIR, prep.dist, prep.device,
        validate=validate,
    )



def run_pretrain(cfg: PretrainConfig) -> StageResult:
    """Train both towers (and the temperature) with symmetric InfoNCE on image-caption pairs."""
    prep = _prepare(cfg)
    samples = _captioned(prep.samples, "pretrain")
    model = prep.loaded.model
    for param in model.parameters():
        param.requires_grad_(True)
    module = create_loss("contrastive", cfg, _loss_inputs(prep, samples))
    groups = module.param_groups(cfg.train.lr, cfg.train.weight_decay)
    val = _captioned_val(prep)
    validate = (
        CaptionMatchScore(model, prep.loaded.tokenizer, val, prep.device, preprocess=prep.loaded.preprocess)
        if val else None
    )
    views = 2 if cfg.image_ssl_weight > 0 else 1
    result = _fit(cfg, prep, module, groups, _image_dataset(cfg, prep, samples, views), collate_images, validate)
    return _finish(cfg, prep, result, "pretrain", {})


def _loss_inputs(prep: _Prepared, samples: Sequence[Sample], image_bank: torch.Tensor | None = None) -> LossInputs:
    return LossInputs(prep.loaded.model, prep.loaded.tokenizer, samples, int(prep.model_cfg["embed_dim"]), prep.device,
                      image_bank)


def run_finetune(cfg: FinetuneConfig) -> StageResult:
    """2SFT stage 1 (``retrieval``) or MCIP (``mcip``): train the image tower + projection only."""
    methods = losses_for("finetune")
    if cfg.method not in methods:
        raise ValueError(f"method must be {' or '.join(map(repr, methods))}, not {cfg.method!r}")
    prep = _prepare(cfg)
    model = prep.loaded.model
    classes = class_index(prep.samples)
    set_trainable(model, image_parameter_names(model))
    module = create_loss(cfg.method, cfg, _loss_inputs(prep, prep.samples))
    groups = module.param_groups(cfg.train.lr, cfg.train.weight_decay)
    image_map = ImageRetrievalScore.build(model, prep.val, prep.loaded.preprocess, prep.device)
    extra: dict[str, Any] = {"method": cfg.method, "classes": list(classes)}
    if cfg.wise_ft_alphas and image_map is None:
        raise DataError("wise_ft_alphas need a validation score to choose by: set val_fraction or val_data")
    final: ValidationScore | None = image_map  # what the kept model is chosen by
    if cfg.text_guard_data and image_map is None:
        log.warning("text guard: no validation image mAP to guard (val_fraction %s, val_data %s); "
                    "model selection is off", cfg.val_fraction, cfg.val_data)
    elif cfg.text_guard_data:
        final = _text_guarded(cfg, prep, image_map)
    # With WiSE-FT the guard judges the interpolated models, so epochs are chosen by image mAP alone.
    by_epoch = image_map if cfg.wise_ft_alphas else final
    start = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    patch_dropout = _enable_patch_dropout(model, cfg.patch_dropout)
    try:
        result = _fit(cfg, prep, module, groups, _image_dataset(cfg, prep, prep.samples), collate_images, by_epoch)
    finally:
        model.visual.patch_dropout = patch_dropout
    if cfg.wise_ft_alphas:
        extra["wise_ft"] = _interpolate_towards(model, start, cfg.wise_ft_alphas, final, prep)
    if isinstance(final, GuardedScore):
        extra["text_guard"] = {"images": len(final.guard.samples), "start": final.start, "floor": final.floor,
                               "alphas" if cfg.wise_ft_alphas else "epochs": final.history}
    return _finish(cfg, prep, result, f"finetune-{cfg.method}", extra)


def _interpolate_towards(model: nn.Module, start: dict[str, torch.Tensor], alphas: Sequence[float],
                         validate: ValidationScore, prep: _Prepared) -> dict[str, Any]:
    """WiSE-FT: set each trained parameter to ``start + a * (trained - start)`` for the ``a`` in
    ``alphas`` that ``validate`` scores best (the largest ``a`` on a tie), and leave it there.
    Scored on the main process and shared, as epochs are."""
    params = dict(model.named_parameters())
    trained = {n: params[n].detach().clone() for n in start}

    def move_to(alpha: float) -> None:
        with torch.no_grad():
            for n, begin in start.items():
                params[n].copy_(begin + alpha * (trained[n] - begin))

    scores: list[float] = []
    for alpha in alphas:
        move_to(alpha)
        scores.append(score_on_main(validate, model, prep.dist, prep.device))
        log.info("WiSE-FT alpha %.2f: validation %.4f", alpha, scores[-1])
    best = max(range(len(alphas)), key=lambda i: (scores[i], alphas[i]))
    move_to(alphas[best])
    log.info("WiSE-FT: alpha %.2f kept", alphas[best])
    return {"alphas": list(alphas), "scores": scores, "alpha": alphas[best]}


def _text_guarded(cfg: FinetuneConfig, prep: _Prepared, primary: ValidationScore) -> GuardedScore:
    """``primary`` guarded by text->image R@5 on the held-out part of ``text_guard_data``."""
    held_out = load_samples(cfg.text_guard_data)
    if cfg.text_guard_fraction < 1.0:
        held_out = split_samples(held_out, cfg.text_guard_fraction, cfg.text_guard_seed)[1]
    guard: ValidationScore
    if cfg.text_guard_score == "caption_match":
        guard = CaptionMatchScore(prep.loaded.model, prep.loaded.tokenizer, [s for s in held_out if s.captions],
                                  prep.device, preprocess=prep.loaded.preprocess)
    else:
        guard = TextRetrievalScore(prep.loaded.model, prep.loaded.tokenizer, held_out, prep.loaded.preprocess,
                                   prep.device, k=5)
    score = GuardedScore(primary, guard, cfg.text_guard_tolerance)
    log.info("text guard: %d held-out images of %s, %s", len(guard.samples), cfg.text_guard_data, score.name)
    return score


def _enable_patch_dropout(model: nn.Module, rate: float) -> nn.Module:
    """Turn on patch dropout for training; returns the module to put back afterwards."""
    previous = getattr(model.visual, "patch_dropout", None)
    if rate > 0:
        if previous is None:
            raise ValueError("patch_dropout needs an open_clip VisionTransformer image tower")
        from open_clip.transformer import PatchDropout

        model.visual.patch_dropout = PatchDropout(rate)
    return previous


def run_realign(cfg: RealignConfig) -> StageResult:
    """2SFT stage 2: realign the text tower to the frozen image tower, which never runs in training.

    Image embeddings of the training and validation images are computed once (eval
    preprocessing) and cached in ``out_dir/image_embeddings.safetensors``; the output keeps
    the input model's image tower and the realigned text tower.
    """
    prep = _prepare(cfg)
    samples = _captioned(prep.samples, "realign")
    embedded = samples + _captioned_val(prep)
    model = prep.loaded.model
    cache = Path(cfg.out_dir) / IMAGE_CACHE_FILE
    if prep.dist.is_main:
        cached_image_embeddings(
            cache, model, embedded, prep.loaded.preprocess, device=prep.device,
            batch_size=cfg.train.batch_size, num_workers=cfg.train.num_workers,
        )
    barrier(prep.dist)
    all_rows, all_indices = cached_image_embeddings(cache, model, embedded, prep.loaded.preprocess, device=prep.device)
    is_train = all_indices < len(samples)
    bank, indices = all_rows[is_train], all_indices[is_train]
    val_rows = all_rows[~is_train]
    validate = None
    if len(val_rows):
        val = [embedded[i] for i in all_indices[~is_train].tolist()]
        validate = CaptionMatchScore(model, prep.loaded.tokenizer, val, prep.device, image_embeddings=val_rows)
    names = realign_parameter_names(
        model, last_blocks=cfg.last_blocks, final_norm=cfg.final_norm,
        projection=cfg.projection, logit_scale=cfg.train_temperature,
    )
    set_trainable(model, names)
    trained = [samples[i] for i in indices.tolist()]
    module = create_loss("contrastive", cfg, _loss_inputs(prep, trained, bank.to(prep.device)))
    groups = module.param_groups(cfg.train.lr, cfg.train.weight_decay)
    result = _fit(cfg, prep, module, groups, _Positions(len(indices)), _collate_positions, validate)
    return _finish(cfg, prep, result, "realign", {"trained_parameters": names})
