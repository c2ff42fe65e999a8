"""The loss factory names every training loss once, and recipes resolve through the precedence
code every clip-ingest command uses."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from clip_ingest.connectors.factory import load_model
from clip_ingest.model.cli import cli
from clip_ingest.model.data import DataError, Sample
from clip_ingest.model.loss_factory import LOSSES, create_loss, describe, losses_for
from clip_ingest.model.recipe import RecipeError, build_dataclass, resolve
from clip_ingest.model.stages import FinetuneConfig
from clip_ingest.model.trainers import LossInputs
from model_helpers import TINY


def test_finetune_methods_and_their_help_come_from_the_loss_registry():
    assert losses_for("finetune") == ("retrieval", "mcip")
    help_text = " ".join(CliRunner().invoke(cli, ["finetune", "--help"]).output.split())
    assert "[retrieval|mcip]" in help_text and " ".join(describe("finetune").split()) in help_text
    assert all(loss.summary and loss.stage and loss.name == name for name, loss in LOSSES.items())


def test_create_loss_builds_each_finetune_loss_from_the_stage_config():
    loaded = load_model(TINY)
    samples = [Sample(f"{i}.png", "ab"[i % 2], ("a thing",) if i else ()) for i in range(4)]
    inputs = LossInputs(loaded.model, loaded.tokenizer, samples, 32)
    cfg = FinetuneConfig(TINY, "data", "out", arc_scale=20.0, caption_weight=0.4)
    retrieval = create_loss("retrieval", cfg, inputs)
    assert retrieval.mc is None and retrieval.arc.scale == 20.0 and retrieval.arc_weight == 1.0
    assert retrieval.labels.tolist() == [0, 1, 0, 1]
    mcip = create_loss("mcip", cfg, inputs)
    assert mcip.mc is not None and mcip.caption_weight == 0.4 and mcip.arc_weight == cfg.arc_weight
    assert mcip.caption_ids == [[], [0], [0], [0]]
    groups = mcip.param_groups(1e-3, 0.01)
    assert groups[-1]["params"] == [mcip.arc.weight] and groups[-1]["lr"] == pytest.approx(0.1)
    uncaptioned = LossInputs(loaded.model, loaded.tokenizer, [Sample("a.png", "a", ())], 32)
    with pytest.raises(DataError, match="mcip needs captions"):
        create_loss("mcip", cfg, uncaptioned)
    with pytest.raises(ValueError, match="unknown loss"):
        create_loss("triplet", cfg, inputs)


def test_recipe_settings_resolve_flags_over_the_table_over_stages_over_defaults():
    recipe = {"recipe": {"out_root": "/r"}, "stages": {"train": {"epochs": 5, "lr": 0.1}, "templates": ["x {label}"]},
              "finetune": {"model": "m", "data": "d", "train": {"lr": 0.2, "seed": 3}}}
    cfg = resolve(recipe, "finetune", FinetuneConfig, {"train": {"seed": 7, "epochs": None}, "method": "mcip"}, None)
    assert (cfg.train.epochs, cfg.train.lr, cfg.train.seed, cfg.train.batch_size) == (5, 0.2, 7, 64)
    assert cfg.out_dir == "/r/finetune" and cfg.templates == ("x {label}",) and cfg.method == "mcip"
    with pytest.raises(RecipeError, match=r"\[finetune.train\]: unknown setting\(s\) \['lr_typo'\]"):
        resolve(recipe, "finetune", FinetuneConfig, {"train": {"lr_typo": 1}}, None)
    with pytest.raises(RecipeError, match=r"missing required setting\(s\) \['model', 'data'\]"):
        build_dataclass(FinetuneConfig, {"out_dir": "o"}, "finetune")


def test_eval_and_export_tables_resolve_like_the_stages_and_a_typo_is_a_usage_error(tmp_path):
    from clip_ingest.model.cli_eval import EvalSettings
    from clip_ingest.model.cli_export import ExportSettings

    recipe = {"recipe": {"out_root": "/r"}, "eval": {"models": ["{out_root}/a"], "batch_size": 8, "device": "cpu"},
              "export": {"source": "{out_root}/a", "out_dir": "{out_root}/x", "onnx": True}}
    cfg = resolve(recipe, "eval", EvalSettings, {"device": "cuda", "models": None}, None)
    assert (cfg.models, cfg.batch_size, cfg.device, cfg.runtimes) == (("/r/a",), 8, "cuda", ())
    export = resolve(recipe, "export", ExportSettings, {"fp16": None, "metrics": "{out_root}/eval.json"}, None)
    assert (export.source, export.onnx, export.fp16, export.metrics) == ("/r/a", True, False, "/r/eval.json")
    typo = tmp_path / "typo.toml"
    typo.write_text('[eval]\nmodels = ["a"]\nbatchsize = 8\n')
    result = CliRunner().invoke(cli, ["eval", "--recipe", str(typo)])
    assert result.exit_code == 2 and "[eval]: unknown setting(s) ['batchsize']" in result.output
