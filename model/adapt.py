"""One guided run from a user's labelled folder to a model judged on the user's held-out labels.

:func:`run_adapt` does, in order (every step reuses the stages of :mod:`clip_ingest.model.stages`):

1. split the images by label into training, validation and held-out
   (:mod:`clip_ingest.model.user_data`) and write the three manifests;
2. measure the base on the held-out labels (:mod:`clip_ingest.model.user_eval`);
3. mine pseudo-captions from ``caption_pool`` with the base for the training and validation
   images when the images have no captions (the held-out images keep none: text search is then
   not measured there);
4. fine-tune with 2SFT stage 1 (ArcMargin) and, when captions exist, MCIP, once per learning
   rate of the plan (:mod:`clip_ingest.model.adapt_plan`), each run keeping its best
   validation epoch. With captions, the text guard (validation images' captions must keep
   their score within ``text_guard_tolerance`` of the base's) and WiSE-FT (the image tower moved
   back towards the base's, for the alpha the guarded score rates best) are on by default: on a
   few hundred images fine-tuning easily drifts away from the frozen text tower, and both give
   text search back at a small image cost, chosen on validation;
5. choose among the base and every run on the validation labels: the best image mAP among those
   whose text mAP stays within the tolerance of the base's (the base wins unless beaten);
6. realign the text tower of the choice on the training captions (2SFT stage 2), kept only if
   validation text mAP does not drop;
7. evaluate random init of the base's architecture, the base and the choice on the held-out
   labels, with paired-bootstrap CIs against the base, and state the verdict
   (:mod:`clip_ingest.model.adapt_verdict`);
8. export the choice with its name, base, data summary, held-out table and text calibration
   (fitted on the validation labels) into ``OUT/export``, which ``clip-ingest migrate --model``
   takes as it is.

Nothing on the held-out labels chooses anything. Finished stages are reused and an interrupted
one resumes after its last finished epoch, so rerunning the same command continues. Training
uses a GPU (with mixed precision) when one is present.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import open_clip

from clip_ingest.connectors.factory import DEFAULT_MODEL_SPEC, METADATA_FILE, load_model
from clip_ingest.connectors.runtime import load_embedder

from .adapt_defaults import DEFAULT_TEXT_TOLERANCE, DEFAULT_WISE_FT_ALPHAS
from .adapt_plan import AdaptPlan, expectations, image_tower_size, make_plan
from .adapt_verdict import Verdict, verdict
from .checkpoint import model_config_for_spec
from .data import Sample, load_samples, write_manifest
from .eval_report import EvalReport, compare_to
from .export import export_model
from .mining import MineConfig, run_mine_captions
from .stages import FinetuneConfig, RealignConfig, run_finetune, run_realign
from .tables import render_markdown
from .text_calibration import calibrate_text
from .train import TrainConfig
from .user_data import DEFAULT_HELD_OUT_FRACTION, DEFAULT_VAL_FRACTION, UserSplit, load_user_samples, split_by_label
from .user_eval import IMAGE_MAP, TEXT_MAP, evaluate_on_samples, label_name

log = logging.getLogger(__name__)



MINED_PER_IMAGE = 5
"""Pool captions kept per image when mining, with no similarity threshold: the paper's 0.27 is
calibrated for OpenAI's models, and the research recipes here mine the top 5 the same way."""


@dataclass
class AdaptConfig:
    """Settings of :func:`run_adapt`; every training setting left ``None``/empty comes from the plan."""

    data: str
    base: str = DEFAULT_MODEL_SPEC
    out_dir: str = "runs/adapt"
    name: str | None = None
    """The exported model's name (default: ``<base name>-<folder name>``)."""
    held_out_fraction: float = DEFAULT_HELD_OUT_FRACTION
    val_fraction: float = DEFAULT_VAL_FRACTION
    split_seed: int = 0
    lrs: tuple[float, ...] = ()
    epochs: int | None = None
    batch_size: int | None = None
    caption_pool: str | None = None
    realign: bool = True
    text_guard_tolerance: float = DEFAULT_TEXT_TOLERANCE
    wise_ft_alphas: tuple[float, ...] = DEFAULT_WISE_FT_ALPHAS
    random_baseline: bool = True
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    export: bool = True


@dataclass
class AdaptResult:
    """What the run chose and measured."""

    split: UserSplit
    plan: AdaptPlan
    chosen: str
    validation: dict[str, dict[str, float]]
    report: EvalReport
    table: str
    verdict: Verdict
    export_dir: Path | None
    seconds: float
    training_seconds: list[float] = field(default_factory=list)
    """Wall time of each training step, in order (near 0 for a finished stage reused)."""


class Progress:
    """Numbered progress lines with the elapsed time and an ETA: the mean time of the training
    steps finished so far times the training steps left (measuring steps take far less)."""

    def __init__(self, steps: int, training_steps: int, echo: Callable[[str], None]) -> None:
        self.steps, self.training_steps, self.echo = steps, training_steps, echo
        self.done = 0
        self.started = time.monotonic()
        self.trained: list[float] = []

    def start(self, what: str) -> float:
        elapsed = time.monotonic() - self.started
        left = self.training_steps - len(self.trained)
        eta = f", ETA ~{sum(self.trained) / len(self.trained) * left:.0f} s" if self.trained else ""
        self.echo(f"[{self.done + 1}/{self.steps}] {what} (elapsed {elapsed:.0f} s{eta})")
        return time.monotonic()

    def finish(self, began: float, training: bool = False) -> float:
        seconds = time.monotonic() - began
        if training:
            self.trained.append(seconds)
        self.done += 1
        return seconds


def _finished(out_dir: Path) -> bool:
    return (out_dir / METADATA_FILE).is_file() and (out_dir / "open_clip_config.json").is_file()


def random_init_spec(base: str) -> str | None:
    """``ARCH:random`` for the registered open_clip architecture whose config is the base's, if any."""
    cfg = model_config_for_spec(base)
    for arch in open_clip.list_models():
        if open_clip.get_model_config(arch) == cfg:
            return f"{arch}:random"
    return None


def _write_split(split: UserSplit, folder: Path) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    return {side: str(write_manifest(getattr(split, side), folder / f"{side}.jsonl"))
            for side in ("train", "val", "held_out")}


def _guard_score(samples: list[Sample]) -> str:
    """``t2i_recall`` when every caption describes one image (and there are enough images for
    R@5), else ``caption_match``: captions shared by several images name kinds of things."""
    captions = [c for s in samples for c in s.captions]
    unique = len(set(captions)) == len(captions)
    return "t2i_recall" if unique and sum(1 for s in samples if s.captions) > 5 else "caption_match"


def _calibration_samples(split: UserSplit) -> list[Sample]:
    """Validation images with their captions, or a caption from their label's name."""
    return [s if s.captions else Sample(s.path, s.label, (f"a photo of a {label_name(s.label or '')}",)) for s in split.val]


def _choose(tuned: dict[str, dict[str, float]], base: dict[str, float], tolerance: float) -> tuple[str, bool]:
    """(the fine-tuned run to keep, whether validation prefers it to the base).

    The run is the one with the best validation image mAP among those whose text mAP stays
    within ``tolerance`` of the base's (all of them without captions; the best text mAP when
    none does). Validation prefers it when it keeps the text guard and beats the base's image mAP."""
    floor = base.get(TEXT_MAP, 0.0) - tolerance
    guarded = [n for n, s in tuned.items() if s.get(TEXT_MAP, floor) >= floor - 1e-9]
    if not guarded:
        best = max(tuned, key=lambda n: tuned[n].get(TEXT_MAP, 0.0))
        return best, False
    best = max(guarded, key=lambda n: tuned[n][IMAGE_MAP])
    return best, tuned[best][IMAGE_MAP] > base[IMAGE_MAP]


@dataclass
class _Data:
    """The manifests the stages read: training (with mined captions, if any) and validation."""

    train: str
    val: str
    val_samples: list[Sample]
    captions: bool


def _prepare_data(cfg: AdaptConfig, split: UserSplit, out: Path, echo: Callable[[str], None]) -> _Data:
    """Write the split; mine captions for training and validation from ``caption_pool`` when the
    images have none (validation needs them too: the text guard and the choice read them)."""
    manifests = _write_split(split, out / "split")
    if split.has_captions or not cfg.caption_pool:
        if not split.has_captions:
            echo("no captions (and no --caption-pool): 2SFT only, no text guard; text search is not measured")
        return _Data(manifests["train"], manifests["val"], split.val, split.has_captions)
    mined = {}
    for side in ("train", "val"):
        mined[side] = run_mine_captions(MineConfig(cfg.base, manifests[side], cfg.caption_pool,
                                                   str(out / "split" / f"{side}-mined.jsonl"), k=MINED_PER_IMAGE,
                                                   threshold=-1.0, device=cfg.device))
        echo(f"mined captions for {mined[side].with_captions}/{mined[side].images} {side} images from {cfg.caption_pool}")
    val_samples = load_samples(mined["val"].output)
    captions = mined["train"].with_captions > 0 and mined["val"].with_captions > 0
    return _Data(str(mined["train"].output), str(mined["val"].output), val_samples, captions)


def _fine_tune(cfg: AdaptConfig, plan: AdaptPlan, data: _Data, out: Path, progress: Progress) -> dict[str, str]:
    """One fine-tuning run per method and learning rate (finished runs reused): name -> model folder."""
    runs: dict[str, str] = {}
    guard = _guard_score(data.val_samples) if data.captions else "t2i_recall"
    for method in (["retrieval", "mcip"] if data.captions else ["retrieval"]):
        for lr in plan.lrs:
            label = f"{'2sft' if method == 'retrieval' else 'mcip'}-lr{lr:g}"
            stage_dir = out / "stages" / label
            began = progress.start(f"fine-tuning {label} ({plan.epochs} epochs)")
            if not _finished(stage_dir):
                run_finetune(FinetuneConfig(
                    cfg.base, data.train, str(stage_dir), method=method, val_data=data.val,
                    train=TrainConfig(epochs=plan.epochs, batch_size=plan.batch_size, lr=lr, seed=cfg.seed,
                                      device=cfg.device, num_workers=cfg.num_workers),
                    text_guard_data=data.val if data.captions else None, text_guard_score=guard,
                    text_guard_tolerance=cfg.text_guard_tolerance, wise_ft_alphas=cfg.wise_ft_alphas,
                ))
            progress.finish(began, training=True)
            runs[label] = str(stage_dir)
    return runs


def _realign(cfg: AdaptConfig, plan: AdaptPlan, data: _Data, out: Path, chosen: str, source: str,
             validation: dict[str, dict[str, float]]) -> tuple[str, str] | None:
    """Realign ``chosen``'s text tower; (its name, folder) when validation text mAP does not drop,
    else None. Its validation scores are added to ``validation``."""
    realigned = out / "stages" / f"{chosen}-realign"
    if not _finished(realigned):
        run_realign(RealignConfig(
            source, data.train, str(realigned), val_data=data.val,
            train=TrainConfig(epochs=plan.realign_epochs, batch_size=plan.batch_size, lr=plan.realign_lr,
                              seed=cfg.seed, device=cfg.device, num_workers=cfg.num_workers),
        ))
    name = f"{chosen}-realign"
    validation[name] = evaluate_on_samples([str(realigned)], data.val_samples, names=[name], device=cfg.device).models[0].metrics
    return (name, str(realigned)) if validation[name].get(TEXT_MAP, 0.0) >= validation[chosen].get(TEXT_MAP, 0.0) else None


def _held_out_report(cfg: AdaptConfig, split: UserSplit, base: EvalReport, chosen: str, source: str) -> EvalReport:
    """Random init (when the base's architecture is a registered one), base and ``chosen`` on the
    held-out labels, every column compared with the base."""
    random_spec = random_init_spec(cfg.base) if cfg.random_baseline else None
    if random_spec == cfg.base:
        random_spec = None  # the base is that random initialisation
    specs, names = ([random_spec], ["random init"]) if random_spec else ([], [])
    others = evaluate_on_samples(specs + [source], split.held_out, names=names + [chosen], device=cfg.device)
    models = others.models[:-1] + base.models + others.models[-1:]
    report = EvalReport(models, {}, {**base.options, "held_out_labels": sorted({s.label for s in split.held_out})})
    return compare_to(report, cfg.base)


def run_adapt(cfg: AdaptConfig, echo: Callable[[str], None] = print) -> AdaptResult:
    """Run the guided adaptation (see the module doc); ``echo`` receives the progress and the table."""
    started = time.monotonic()
    out = Path(cfg.out_dir)
    split = split_by_label(load_user_samples(cfg.data), cfg.held_out_fraction, cfg.val_fraction, cfg.split_seed)
    summary = split.summary()
    echo(f"split by label: {json.dumps({k: v for k, v in summary.items() if k != 'split'})}")
    base_loaded = load_model(cfg.base)
    plan = make_plan(image_tower_size(base_loaded.model), len(split.train), lrs=cfg.lrs, epochs=cfg.epochs,
                     batch_size=cfg.batch_size)
    base_name = base_loaded.name
    del base_loaded
    echo(expectations(len(split.train), summary["train"]["labels"], len(split.held_out)))
    echo(f"plan: {plan.describe()}")
    data = _prepare_data(cfg, split, out, echo)
    training_steps = (2 if data.captions else 1) * len(plan.lrs) + (1 if data.captions and cfg.realign else 0)
    progress = Progress(2 + training_steps, training_steps, echo)

    began = progress.start(f"measuring the base ({cfg.base}) on {len(split.held_out)} held-out images")
    base_report = evaluate_on_samples([cfg.base], split.held_out, names=["base"], device=cfg.device)
    progress.finish(began)
    echo("base on held-out: " + ", ".join(f"{k} {100 * v:.1f}" for k, v in base_report.models[0].metrics.items()))

    candidates, validation, chosen, preferred = _train_and_choose(cfg, plan, data, out, progress, echo)

    began = progress.start("measuring on the held-out labels")
    report = _held_out_report(cfg, split, base_report, chosen, candidates[chosen])
    progress.finish(began)
    table = render_markdown(report)
    text_metric = TEXT_MAP if TEXT_MAP in report.models[-1].metrics else None  # held-out images with captions
    decision = verdict(report.models[-1], IMAGE_MAP, text_metric, validation_prefers_base=not preferred)

    name = cfg.name or f"{base_name}-{Path(cfg.data).name or 'adapted'}"
    export_dir = _export(cfg, name, candidates[chosen], split, plan, report, table, decision, validation, chosen) \
        if cfg.export else None
    seconds = time.monotonic() - started
    result = AdaptResult(split, plan, chosen, validation, report, table, decision, export_dir, seconds,
                         progress.trained)
    _write_summary(out, result, cfg)
    echo(table)
    echo(decision.line)
    if export_dir is not None:
        hint = "switch with" if decision.recommend_switch else "to switch anyway"
        echo(f"{hint}: clip-ingest migrate --model {export_dir} --collection YOUR_COLLECTION YOUR_SOURCES")
    echo(f"done in {seconds:.0f} s; report in {out / 'adapt.md'}")
    return result


def _train_and_choose(cfg: AdaptConfig, plan: AdaptPlan, data: _Data, out: Path, progress: Progress,
                      echo: Callable[[str], None]) -> tuple[dict[str, str], dict[str, dict[str, float]], str, bool]:
    """Fine-tune at every planned rate, choose on the validation labels (realigning the choice's
    text tower when there are captions); returns the candidates (name -> spec), their validation
    metrics, the choice and whether validation prefers it to the base."""
    candidates = {"base": cfg.base, **_fine_tune(cfg, plan, data, out, progress)}
    val_report = evaluate_on_samples(list(candidates.values()), data.val_samples, names=list(candidates), device=cfg.device)
    validation = {m.name: m.metrics for m in val_report.models}
    chosen, preferred = _choose({n: v for n, v in validation.items() if n != "base"}, validation["base"],
                                cfg.text_guard_tolerance)
    echo(f"validation chose {chosen}{'' if preferred else ', but prefers the base'}: " + "; ".join(
        f"{n} image mAP {100 * s[IMAGE_MAP]:.1f}" + (f", text mAP {100 * s[TEXT_MAP]:.1f}" if TEXT_MAP in s else "")
        for n, s in validation.items()))
    if data.captions and cfg.realign:
        began = progress.start(f"realigning the text tower of {chosen}")
        kept = _realign(cfg, plan, data, out, chosen, candidates[chosen], validation)
        echo(f"realignment: validation text mAP {100 * validation[f'{chosen}-realign'].get(TEXT_MAP, 0.0):.1f} "
             f"({'kept' if kept else 'not kept'})")
        if kept:
            chosen, candidates[kept[0]] = kept
            chosen, preferred = _choose({chosen: validation[chosen]}, validation["base"], cfg.text_guard_tolerance)
        progress.finish(began, training=True)
    return candidates, validation, chosen, preferred


def _export(cfg: AdaptConfig, name: str, source: str, split: UserSplit, plan: AdaptPlan, report: EvalReport,
            table: str, decision: Verdict, validation: dict[str, dict[str, float]], chosen: str) -> Path:
    """Export the chosen model with its name, base, data, held-out table and text calibration."""
    chosen_model = report.models[-1]
    data = {"folder": str(Path(cfg.data).resolve()), **split.summary()}
    training = {"chosen": chosen, "plan": vars(plan), "validation": validation,
                "text_guard_tolerance": cfg.text_guard_tolerance, "wise_ft_alphas": list(cfg.wise_ft_alphas)}
    compared = [{"name": m.name, "spec": m.spec, "model_id": m.model_id, "metrics": m.metrics}
                for m in report.models if m is not chosen_model]
    held_out = f"### Held-out labels of the training folder\n\n{table}\n{decision.line}\n"
    result = export_model(source, Path(cfg.out_dir) / "export", name=name, recipe={"adapt": training, "base": cfg.base},
                          data=data, metrics=chosen_model.metrics, compared_with=compared, experiment=held_out,
                          extra={"base_model": cfg.base, "held_out": {"table": table, "verdict": decision.line}},
                          overwrite=True)
    calibrate_text(load_embedder(str(result.path), runtime="torch", device=cfg.device), _calibration_samples(split), None,
                   model_folder=result.path)
    return result.path


def _write_summary(out: Path, result: AdaptResult, cfg: AdaptConfig) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "adapt.md").write_text(f"{result.table}\n{result.verdict.line}\n", encoding="utf-8")
    payload: dict[str, Any] = {
        "data": cfg.data, "base": cfg.base, "chosen": result.chosen, "plan": vars(result.plan),
        "split": result.split.summary(), "validation": result.validation, "held_out": result.report.to_json(),
        "verdict": result.verdict.line, "recommend_switch": result.verdict.recommend_switch,
        "export": str(result.export_dir) if result.export_dir else None, "seconds": result.seconds,
        "training_seconds": result.training_seconds,
    }
    (out / "adapt.json").write_text(json.dumps(payload, indent=2), encoding="utf-8")
