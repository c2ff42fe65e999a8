"""The training loop every stage shares.

A stage builds an ``nn.Module`` whose ``forward(batch)`` returns the loss (the model plus
its loss heads), a dataset and a collate function, and calls :func:`fit`, which does the
rest the same way for every method:

* AdamW (no weight decay on biases/norms/scalars), linear warmup then cosine decay,
  gradient clipping (default 1.0) *after* unscaling, AMP only on CUDA (bf16 where
  supported, else fp16 with a gradient scaler);
* seeding, a deterministic shuffled sampler (``DistributedSampler`` with one replica when
  not distributed), ``num_workers`` decoding processes and ``torch_threads``;
* a resumable snapshot after every epoch (safetensors + JSON, no pickle);
* with a validation score (:mod:`clip_ingest.model.validation`): the score after every
  epoch, the weights of the best epoch kept and restored at the end (model selection), and
  optional early stopping after ``patience`` epochs without improvement;
* progress logs with loss, learning rate, samples/s and undecodable images skipped;
* DDP when started by ``torchrun`` (see :mod:`clip_ingest.model.distributed`).

A module may define ``after_step()``, called after every optimiser step (the contrastive
trainer clamps its temperature there). Batches must have ``len()``, ``.skipped`` (images dropped while collating) and
``.to(device)``.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Protocol

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .checkpoint import (
    load_best_weights,
    load_training_state,
    prune_best_weights,
    save_best_weights,
    save_training_state,
)
from .distributed import DistInfo, all_reduce_sum, barrier

log = logging.getLogger(__name__)


class TrainBatch(Protocol):
    """What :func:`fit` needs from a collated batch."""

    skipped: int

    def __len__(self) -> int: ...

    def to(self, device: torch.device) -> "TrainBatch": ...


@dataclass
class TrainConfig:
    """Optimisation settings shared by every stage.

    ``lr`` is the backbone learning rate (the paper uses 1e-6 for large pretrained
    models; tiny random models need ~1e-3). ``warmup_steps`` below 1 is a fraction of
    all steps. ``precision``: ``auto`` uses AMP on CUDA and fp32 elsewhere.
    """

    epochs: int = 3
    batch_size: int = 64
    lr: float = 1e-6
    weight_decay: float = 0.01
    warmup_steps: float = 0.05
    grad_clip: float = 1.0
    seed: int = 0
    num_workers: int = 0
    torch_threads: int | None = None
    device: str = "auto"
    precision: str = "auto"
    log_every: int = 20
    resume: bool = True
    patience: int = 0
    """Stop after this many epochs without a better validation score (0: run every epoch)."""


@dataclass
class FitResult:
    """What a finished :func:`fit` did: optimiser steps, samples, skipped images, time, last loss."""

    steps: int
    epochs: int
    samples: int
    skipped: int
    seconds: float
    samples_per_s: float
    final_loss: float
    resumed_from_epoch: int
    val_scores: list[float] = field(default_factory=list)
    """Validation score after each epoch (empty without a validation split)."""
    best_epoch: int | None = None
    """The epoch (1-based) whose weights the run ended with, when chosen by validation."""


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warmup over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def decay_param_groups(named: Iterable[tuple[str, nn.Parameter]], lr: float, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay on matrices, none on biases, norms and scalars."""
    decay, no_decay = [], []
    for _, param in named:
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    groups = [{"params": decay, "lr": lr, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "lr": lr, "weight_decay": 0.0})
    return groups


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(f"precision must be auto, fp32, bf16 or fp16, not {precision!r}")
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "fp16" or (precision == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


@dataclass
class _Run:
    """One :func:`fit` while it runs: what it built and the counters its snapshot keeps."""

    module: nn.Module
    runner: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    sampler: DistributedSampler
    loader: DataLoader
    trainable: list[nn.Parameter]
    total: int
    warmup: int
    dtype: torch.dtype | None
    cfg: TrainConfig
    checkpoint_dir: Path
    dist_info: DistInfo
    device: torch.device
    counters: dict
    run_samples: int = 0


def fit(
    module: nn.Module,
    param_groups: list[dict],
    dataset: Dataset,
    collate: Callable[[list], TrainBatch],
    cfg: TrainConfig,
    checkpoint_dir: str | Path,
    dist_info: DistInfo,
    device: torch.device,
    on_epoch_end: Callable[[int, float], None] | None = None,
    validate: Callable[[], float] | None = None,
) -> FitResult:
    """Train ``module`` (``forward(batch) -> loss``) on ``dataset`` and return what happened.

    ``param_groups`` are AdamW groups (see :func:`decay_param_groups`; loss heads add
    their own, e.g. ArcMargin proxies at 100x lr). With ``cfg.resume`` a snapshot in
    ``checkpoint_dir`` continues after its last finished epoch with the same weights,
    optimizer moments, schedule and RNG state. ``on_epoch_end(epoch, mean_loss)`` runs on
    every rank after the snapshot of each epoch.

    ``validate()`` (every rank, same weights) scores the model after each epoch; the run
    ends with the weights of the best-scoring epoch and stops early after
    ``cfg.patience`` epochs without improvement.
    """
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    if len(dataset) == 0:
        raise ValueError("no training samples")
    run = _start(module, param_groups, dataset, collate, cfg, Path(checkpoint_dir), dist_info, device)
    start_epoch = run.counters["epoch"]
    started = time.perf_counter()
    for epoch in range(start_epoch, cfg.epochs):
        if _patience_exhausted(run.counters["val"], cfg.patience):
            break
        _train_epoch(run, epoch)
        _end_epoch(run, epoch, validate)
        if on_epoch_end is not None:
            on_epoch_end(epoch, run.counters["loss"])
    return _result(run, validate, start_epoch, time.perf_counter() - started)


def _start(module: nn.Module, param_groups: list[dict], dataset: Dataset, collate: Callable[[list], TrainBatch],
           cfg: TrainConfig, checkpoint_dir: Path, dist_info: DistInfo, device: torch.device) -> _Run:
    """The optimiser, sampler, loader and schedule of a run, seeded, and its snapshot loaded when resuming."""
    module.to(device)
    for group in param_groups:
        group["base_lr"] = group["lr"]
    trainable = [p for g in param_groups for p in g["params"]]
    optimizer = torch.optim.AdamW(param_groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sampler = DistributedSampler(
        dataset, num_replicas=dist_info.world_size, rank=dist_info.rank, shuffle=True, seed=cfg.seed
    )
    loader = DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=cfg.num_workers,
        collate_fn=collate,
        persistent_workers=cfg.num_workers > 0,
        pin_memory=device.type == "cuda",
    )
    total = len(loader) * cfg.epochs
    warmup = int(cfg.warmup_steps * total) if cfg.warmup_steps < 1 else int(cfg.warmup_steps)

    seed_everything(cfg.seed + dist_info.rank)
    counters = {"epoch": 0, "step": 0, "samples": 0, "skipped": 0, "loss": float("nan"), "val": []}
    if cfg.resume:
        loaded = load_training_state(checkpoint_dir, module, optimizer)
        if loaded is not None:
            counters = {"val": [], **loaded}
            log.info("resuming from %s after epoch %d", checkpoint_dir, counters["epoch"])

    dtype = _autocast_dtype(cfg.precision, device)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    runner: nn.Module = module
    if dist_info.enabled:
        runner = DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
    return _Run(module, runner, optimizer, scaler, sampler, loader, trainable, total, warmup, dtype, cfg,
                checkpoint_dir, dist_info, device, counters)


def _train_epoch(run: _Run, epoch: int) -> None:
    """One pass over the loader: an optimiser step per batch, progress logged every ``log_every`` steps."""
    cfg, counters, dist_info = run.cfg, run.counters, run.dist_info
    run.sampler.set_epoch(epoch)
    run.module.train()
    window_start, window_samples, epoch_loss, epoch_steps = time.perf_counter(), 0, 0.0, 0
    for batch in run.loader:
        counters["skipped"] += batch.skipped
        empty = float(len(batch) == 0)
        if all_reduce_sum(empty, dist_info, run.device) > 0:  # every rank must skip together
            continue
        loss = _step(run, batch.to(run.device))
        counters["step"] += 1
        counters["samples"] += len(batch)
        run.run_samples += len(batch)
        window_samples += len(batch)
        epoch_loss += float(loss.detach())
        epoch_steps += 1
        if dist_info.is_main and cfg.log_every and counters["step"] % cfg.log_every == 0:
            rate = window_samples * dist_info.world_size / max(1e-9, time.perf_counter() - window_start)
            log.info(
                "epoch %d step %d/%d loss %.4f lr %.3g %.1f samples/s skipped %d",
                epoch + 1, counters["step"], run.total, float(loss.detach()),
                run.optimizer.param_groups[0]["lr"], rate, counters["skipped"],
            )
            window_start, window_samples = time.perf_counter(), 0
    counters["epoch"] = epoch + 1
    counters["loss"] = epoch_loss / max(1, epoch_steps)


def _step(run: _Run, batch: TrainBatch) -> torch.Tensor:
    """One optimiser step on ``batch`` at the schedule's learning rate; returns the loss."""
    factor = lr_factor(run.counters["step"], run.total, run.warmup)
    for group in run.optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor
    with torch.autocast(run.device.type, dtype=run.dtype or torch.float32, enabled=run.dtype is not None):
        loss = run.runner(batch)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    run.scaler.unscale_(run.optimizer)
    if run.cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(run.trainable, run.cfg.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    if hasattr(run.module, "after_step"):
        run.module.after_step()  # e.g. clamp parameters in place (the temperature)
    return loss


def _end_epoch(run: _Run, epoch: int, validate: Callable[[], float] | None) -> None:
    """Validate the epoch (when scoring), then snapshot it on the main process."""
    counters, dist_info = run.counters, run.dist_info
    if validate is not None:
        _validate_epoch(validate, run.module, counters, run.checkpoint_dir, dist_info, run.device)
    if dist_info.is_main:
        save_training_state(run.checkpoint_dir, run.module, run.optimizer, counters)
        if counters["val"]:
            prune_best_weights(run.checkpoint_dir, _best_epoch(counters["val"]))
        log.info("epoch %d done: mean loss %.4f", epoch + 1, counters["loss"])
    barrier(dist_info)


def _result(run: _Run, validate: Callable[[], float] | None, start_epoch: int, seconds: float) -> FitResult:
    """Restore the best epoch's weights (when scoring) and sum what every rank did."""
    counters, dist_info, device = run.counters, run.dist_info, run.device
    best_epoch = None
    if validate is not None and counters["val"]:
        best_epoch = _best_epoch(counters["val"])
        load_best_weights(run.checkpoint_dir, run.module, best_epoch)
        log.info("model selection: epoch %d of %d (validation scores %s)", best_epoch, counters["epoch"],
                 " ".join(f"{v:.4f}" for v in counters["val"]))
    world_samples = int(all_reduce_sum(run.run_samples, dist_info, device))
    return FitResult(
        steps=counters["step"],
        epochs=counters["epoch"],
        samples=int(all_reduce_sum(counters["samples"], dist_info, device)),
        skipped=int(all_reduce_sum(counters["skipped"], dist_info, device)),
        seconds=seconds,
        samples_per_s=world_samples / seconds if seconds > 0 else 0.0,
        final_loss=float(counters["loss"]),
        resumed_from_epoch=start_epoch,
        val_scores=list(counters["val"]),
        best_epoch=best_epoch,
    )


def _patience_exhausted(scores: list[float], patience: int) -> bool:
    """Whether the last ``patience`` epochs all failed to beat the best score before them."""
    if patience <= 0 or len(scores) <= patience:
        return False
    return max(scores[-patience:]) <= max(scores[:-patience])


def _best_epoch(scores: list[float]) -> int:
    """The 1-based epoch of the first highest score."""
    return scores.index(max(scores)) + 1


def score_on_main(validate: Callable[[], float], module: nn.Module, dist_info: DistInfo, device: torch.device) -> float:
    """``validate()`` of ``module`` in eval mode without gradients, run on the main process and
    shared with every rank (the others contribute 0 to the sum)."""
    score = 0.0
    if dist_info.is_main:
        was_training = module.training
        module.eval()
        with torch.no_grad():
            score = float(validate())
        module.train(was_training)
    return all_reduce_sum(score, dist_info, device)


def _validate_epoch(
    validate: Callable[[], float], module: nn.Module, counters: dict, checkpoint_dir: Path, dist_info: DistInfo,
    device: torch.device,
) -> None:
    """Score the epoch just trained (on the main process, shared with the others so that every
    rank makes the same early-stopping decision); keep its weights when it is the best so far."""
    score = score_on_main(validate, module, dist_info, device)
    previous = counters["val"]
    counters["val"] = [*previous, score]
    best = not previous or score > max(previous)
    if best and dist_info.is_main:
        save_best_weights(checkpoint_dir, module, counters["epoch"], score)
    barrier(dist_info)
    if dist_info.is_main:
        log.info("epoch %d validation: %.4f%s", counters["epoch"], score, " (best so far)" if best else "")
