"""Training throughput: samples/s of every clip-model stage on the tiny config, and what caching buys realignment.

Run ``python -m benchmarks.training``. On a generated class-per-folder set (captions from a
template) it runs, in one process: ``pretrain``, ``finetune --method retrieval``, ``finetune
--method mcip`` and ``realign`` (on the fine-tuned model, image embeddings cached), then the same
realignment but running the frozen image tower on decoded pixels every step, as it would
without the cache. Reported: training samples/s of each (from the stage's own ``FitResult``),
wall time of each stage, and the realignment speed-up from the cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from clip_ingest.connectors.factory import load_model
from clip_ingest.model.augment import AugmentConfig, train_transform
from clip_ingest.model.data import ImageDataset, collate_images, load_samples
from clip_ingest.model.distributed import DistInfo
from clip_ingest.model.mining import with_template_captions
from clip_ingest.model.stages import FinetuneConfig, PretrainConfig, RealignConfig, run_finetune, run_pretrain, run_realign
from clip_ingest.model.towers import realign_parameter_names, set_trainable
from clip_ingest.model.train import FitResult, TrainConfig, decay_param_groups, fit
from clip_ingest.model.trainers import ContrastiveTrainer

from . import common
from .ingest import TINY

TEMPLATES = ("a photo of a {label}.",)
CLASSES = ("alpha", "beta", "gamma")


def class_folders(root: Path, n: int, size: int) -> Path:
    """``n`` generated images spread over :data:`CLASSES` sub-folders."""
    for i, label in enumerate(CLASSES):
        common.generate_images(root / label, n // len(CLASSES) + (i < n % len(CLASSES)), size=size, start=i * n)
    return root


def realign_without_cache(model_dir: Path, data: Path, train: TrainConfig, out_dir: Path) -> FitResult:
    """The realignment step with the same trainable parameters, but the frozen image tower run on pixels."""
    loaded = load_model(str(model_dir), device="cpu")
    model = loaded.model.train()
    cfg = RealignConfig(str(model_dir), str(data), str(out_dir))
    set_trainable(model, realign_parameter_names(
        model, last_blocks=cfg.last_blocks, final_norm=cfg.final_norm,
        projection=cfg.projection, logit_scale=cfg.train_temperature,
    ))
    samples = with_template_captions(load_samples(data), TEMPLATES)
    module = ContrastiveTrainer(model, loaded.tokenizer, [s.captions for s in samples])
    groups = decay_param_groups(model.named_parameters(), train.lr, train.weight_decay)
    size = loaded.preprocess_cfg["size"]
    dataset = ImageDataset(
        samples, train_transform(loaded.preprocess_cfg, AugmentConfig()),
        draft_size=int(size[0] if isinstance(size, (list, tuple)) else size),
    )
    return fit(module, groups, dataset, collate_images, train, out_dir / "checkpoint", DistInfo(), torch.device("cpu"))


def fit_row(stage: str, result: FitResult, wall_s: float) -> dict[str, Any]:
    """One table row: what the stage's fit did and how long the whole stage took."""
    return {"stage": stage, "samples": result.samples, "steps": result.steps, "fit_s": result.seconds,
            "samples_per_s": result.samples_per_s, "wall_s": wall_s}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, help="training images [default: 384; smoke: 24]")
    parser.add_argument("--epochs", type=int, help="[default: 2; smoke: 1]")
    parser.add_argument("--batch-size", type=int, help="[default: 32; smoke: 8]")
    parser.add_argument("--size", type=int, default=48, help="side of generated images [default: 48]")
    args = parser.parse_args(argv)
    args.n = args.n or (24 if args.smoke else 384)
    args.epochs = args.epochs or (1 if args.smoke else 2)
    args.batch_size = args.batch_size or (8 if args.smoke else 32)
    train = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=1e-3, warmup_steps=0,
                        device="cpu", resume=False, log_every=0)
    work = common.Workdir.create(args.workdir)
    rows: list[dict[str, Any]] = []
    try:
        data = class_folders(work.path / "data", args.n, args.size)
        out = work.path / "out"
        common_cfg = {"data": str(data), "train": train, "templates": TEMPLATES}
        stages = [
            ("pretrain", run_pretrain, PretrainConfig(TINY, out_dir=str(out / "pretrain"), **common_cfg)),
            ("finetune retrieval", run_finetune, FinetuneConfig(TINY, out_dir=str(out / "retrieval"), **common_cfg)),
            ("finetune mcip", run_finetune, FinetuneConfig(TINY, out_dir=str(out / "mcip"), method="mcip", **common_cfg)),
            ("realign (cached images)", run_realign,
             RealignConfig(str(out / "retrieval"), out_dir=str(out / "realign"), **common_cfg)),
        ]
        for name, run, cfg in stages:
            seconds, result = common.timed(lambda: run(cfg))
            rows.append(fit_row(name, result.fit, seconds))
        seconds, uncached = common.timed(lambda: realign_without_cache(out / "retrieval", data, train, out / "realign-uncached"))
        rows.append(fit_row("realign (image tower run)", uncached, seconds))
    finally:
        work.close()
    rate = {r["stage"]: r["samples_per_s"] for r in rows}
    ratios = [common.Ratio("realign samples/s: cached / image tower run", rate["realign (cached images)"] / rate["realign (image tower run)"])]
    config = {"model": TINY, "images": args.n, "image_size": args.size, "epochs": args.epochs, "batch_size": args.batch_size}
    return common.report("training throughput", config, {"training stages": rows}, ratios, args.json,
                         notes=["wall_s includes model loading, the image-embedding cache build and saving"])


if __name__ == "__main__":
    main()
