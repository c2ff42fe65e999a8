"""clip-model end to end on generated images: every stage in seconds, exit codes, recipes, evaluation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from clip_ingest.connectors.onnx_embedder import OnnxEmbedder
from clip_ingest.connectors.openclip_embedder import OpenClipEmbedder
from clip_ingest.model.cli import cli
from clip_ingest.model.evaluate import EvalOptions, evaluate_models
from clip_ingest.model.tables import render_markdown
from imagegen import write_shape_folder
from model_evalgen import write_eval_data
from model_helpers import count_image_tower_calls


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def eval_data(tmp_path):
    return write_eval_data(tmp_path / "data")


def test_every_stage_runs_from_the_tiny_recipe(tmp_path, eval_data):
    photos = write_shape_folder(tmp_path / "photos", n=12, sidecars=False)
    pool = tmp_path / "pool.txt"
    pool.write_text("a red circle\na blue square\na green triangle\na yellow thing\n")
    root = tmp_path / "run"
    common = ["--recipe", "tiny-smoke", "--out-root", str(root)]
    for stage in ("pretrain", "finetune", "realign"):
        result = invoke(stage, *common, "--data", str(photos))
        assert result.exit_code == 0, result.output
        assert (root / stage / "open_clip_model.safetensors").is_file()
    assert json.loads((root / "finetune" / "clip_ingest.json").read_text())["method"] == "mcip"

    result = invoke("mine-captions", *common, "--data", str(photos), "--pool", str(pool))
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (root / "mined.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and all(len(r["captions"]) >= 3 for r in rows)

    result = invoke("eval", *common, "--data-root", str(eval_data))
    assert result.exit_code == 0, result.output
    assert "eth80 instance mAP" in result.output and "flickr8k t2i R@10" in result.output
    report = json.loads((root / "eval" / "eval.json").read_text())
    assert [m["spec"] for m in report["models"]] == [str(root / "realign"), "clip-ingest-tiny:random"]

    result = invoke("export", *common, "--metrics", str(root / "eval" / "eval.json"))
    assert result.exit_code == 0, result.output
    meta = json.loads((root / "export" / "clip_ingest.json").read_text())
    assert meta["stage"] == "realign" and meta["recipe"]["recipe"]["name"] == "tiny-smoke"
    assert meta["metrics"] == report["models"][0]["metrics"]
    card = (root / "export" / "MODEL_CARD.md").read_text()
    mAP = report["models"][1]["metrics"]["eth80 instance mAP"], meta["metrics"]["eth80 instance mAP"]
    assert f"| eth80 instance mAP | {100 * mAP[0]:.1f} | {100 * mAP[1]:.1f} |" in card  # beside random init
    torch_embedder = OpenClipEmbedder(str(root / "export"), device="cpu")
    onnx_embedder = OnnxEmbedder(root / "export")
    assert onnx_embedder.model_id == torch_embedder.model_id == meta["model_id"]
    images = sorted(photos.rglob("*.png"))[:3]
    cosine = (onnx_embedder.embed_images(images) * torch_embedder.embed_images(images)).sum(axis=1)
    assert cosine.min() > 1 - 1e-4


def test_rerun_resumes_and_seeded_runs_agree(tmp_path):
    photos = write_shape_folder(tmp_path / "photos", n=12, sidecars=False)
    args = ["finetune", "--recipe", "tiny-smoke", "--model", "clip-ingest-tiny:random", "--data", str(photos),
            "--method", "retrieval", "--seed", "3"]
    assert invoke(*args, "--out", str(tmp_path / "a")).exit_code == 0
    assert invoke(*args, "--out", str(tmp_path / "b")).exit_code == 0
    a = OpenClipEmbedder(str(tmp_path / "a"), device="cpu")
    b = OpenClipEmbedder(str(tmp_path / "b"), device="cpu")
    assert a.model_id.split("@")[1] == b.model_id.split("@")[1]
    # same config again: the checkpoint says the epoch is done, nothing more is trained
    result = invoke(*args, "--out", str(tmp_path / "a"))
    assert result.exit_code == 0 and "resumed after epoch 1" in result.output
    assert OpenClipEmbedder(str(tmp_path / "a"), device="cpu").model_id == a.model_id


def test_exit_codes_usage_2_failure_1(tmp_path):
    assert invoke("finetune", "--method", "nonsense").exit_code == 2
    result = invoke("finetune", "--recipe", "tiny-smoke", "--set", "train.epoch=1", "--data", str(tmp_path))
    assert result.exit_code == 2 and "valid:" in result.output and "epochs" in result.output
    assert invoke("eval").exit_code == 2
    assert invoke("pretrain", "--recipe", "no-such-recipe").exit_code == 2
    result = invoke("pretrain", "--recipe", "tiny-smoke", "--data", str(tmp_path / "nowhere"), "--out-root", str(tmp_path))
    assert result.exit_code == 1 and "nowhere" in result.output
    result = invoke("export", "ViT-Nope-99", str(tmp_path / "x"))
    assert result.exit_code == 1 and "unknown model architecture" in result.output


def test_export_refuses_metrics_of_other_models(tmp_path):
    report = {"models": [{"spec": "a", "metrics": {"x": 1}}, {"spec": "b", "metrics": {"x": 2}}]}
    (tmp_path / "eval.json").write_text(json.dumps(report))
    result = invoke("export", "clip-ingest-tiny:random", str(tmp_path / "out"), "--metrics", str(tmp_path / "eval.json"))
    assert result.exit_code == 2 and "no model 'clip-ingest-tiny:random'" in result.output and "a, b" in result.output
    assert not (tmp_path / "out").exists()
    (tmp_path / "one.json").write_text(json.dumps({"models": report["models"][1:]}))
    result = invoke("export", "clip-ingest-tiny:random", str(tmp_path / "out"), "--metrics", str(tmp_path / "one.json"))
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out" / "clip_ingest.json").read_text())["metrics"] == {"x": 2}


def test_help_documents_every_command():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("pretrain", "finetune", "realign", "mine-captions", "eval", "experiment", "export", "update-doc", "published"):
        assert command in result.output
    assert "Exit codes" in result.output
    assert "retrieval" in invoke("finetune", "--help").output


def test_eval_reports_missing_datasets_and_still_runs_the_rest(tmp_path, eval_data, tiny_embedder):
    shutil.rmtree(eval_data / "flickr8k")
    report = evaluate_models(["clip-ingest-tiny:random"], EvalOptions(data_root=eval_data, device="cpu"))
    assert set(report.missing) == {"flickr8k"} and "flickr8k" in report.missing["flickr8k"]
    scores = report.models[0].metrics
    assert report.models[0].model_id == tiny_embedder.model_id
    assert set(scores) == {"eth80 instance mAP", "eth80 instance R@1", "eth80 category mAP",
                           "eth80 category R@1", "caltech101 kNN acc", "caltech101 prompt acc",
                           "cifar10 zero-shot acc"}
    assert all(0.0 <= v <= 1.0 for v in scores.values())
    table = render_markdown(report)
    assert "**flickr8k missing**" in table and "| eth80 instance mAP |" in table


def test_eval_compares_runtimes_side_by_side(tmp_path, eval_data, tiny_embedder, monkeypatch):
    """The quality cost of a runtime: the same model on torch, ONNX and int8 in one table."""
    monkeypatch.setenv("CLIP_INGEST_CACHE", str(tmp_path / "cache"))
    result = invoke("eval", "--model", "clip-ingest-tiny:random", "--data-root", str(eval_data), "-b", "eth80", "-b", "cifar10",
                    "--runtime", "torch", "--runtime", "onnx", "--runtime", "onnx-int8", "--device", "cpu")
    assert result.exit_code == 0, result.output
    header = next(line for line in result.output.splitlines() if line.startswith("| metric"))
    assert header == "| metric | clip-ingest-tiny | clip-ingest-tiny [onnx] | clip-ingest-tiny [onnx-int8] |"
    row = next(line for line in result.output.splitlines() if line.startswith("| eth80 instance mAP"))
    torch_value, onnx_value, _ = (float(cell) for cell in row.strip("|").split("|")[1:])
    assert abs(torch_value - onnx_value) <= 0.1  # same vectors to 1e-4: the same numbers
    assert f"{tiny_embedder.model_id}+onnx-int8" in result.output


def test_eval_fails_when_every_dataset_is_missing(tmp_path):
    (tmp_path / "empty").mkdir()
    result = invoke("eval", "--model", "clip-ingest-tiny:random", "--data-root", str(tmp_path / "empty"), "--device", "cpu")
    assert result.exit_code == 1
    assert "eth80" in result.output and "no benchmark could run" in result.output


def test_shipped_recipes_build_valid_stage_configs(tmp_path):
    from clip_ingest.model import stages
    from clip_ingest.model.recipe import RECIPE_DIR, load_recipe, resolve
    from clip_ingest.model.mining import MineConfig

    classes = {"pretrain": stages.PretrainConfig, "finetune": stages.FinetuneConfig,
               "realign": stages.RealignConfig, "mine-captions": MineConfig}
    names = sorted(p.stem for p in RECIPE_DIR.glob("*.toml"))
    assert names == ["eth80-mcip", "photo-base", "photo-base-s", "photo-base-ssl", "photo-mcip", "photo-ssl-mcip", "starter",
                     "tiny-smoke"]
    for name in names:
        recipe = load_recipe(name)
        for stage, cls in classes.items():
            if stage in recipe:
                extra = {"pool": "p"} if stage == "mine-captions" else {}
                if name == "tiny-smoke":  # its data is always given with --data
                    extra["data"] = "photos"
                cfg = resolve(recipe, stage, cls, extra, str(tmp_path))
                assert (cfg.output if stage == "mine-captions" else cfg.out_dir).startswith(str(tmp_path))
                if name == "photo-base-ssl":  # the same manifests as photo-base-s, by design
                    assert cfg.data == "runs/photo-base-s/train.jsonl"
                elif name != "tiny-smoke":  # one source, or several read in order (eth80-mcip's realignment)
                    sources = [cfg.data] if isinstance(cfg.data, str) else list(cfg.data)
                    assert sources and all(source.startswith(str(tmp_path)) for source in sources)
        assert recipe["export"]["source"].startswith("{out_root}/")
        if "experiment" in recipe:
            from clip_ingest.model.experiment import ExperimentConfig

            exp = resolve(recipe, "experiment", ExperimentConfig, {}, str(tmp_path))
            assert exp.out_dir.startswith(str(tmp_path)) and len(exp.seeds) >= 3
        if "mine-captions" in recipe and name != "tiny-smoke":  # realignment never on category strings alone
            assert recipe["realign"].get("data") not in (None, recipe["stages"]["data"])


def test_manifest_of_eth80_labels_objects_and_captions_categories(tmp_path, eval_data):
    out = tmp_path / "eth80.jsonl"
    result = invoke("manifest", "eth80", "--data-root", str(eval_data), "--objects", "7-7", "--output", str(out))
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["label"] for r in rows} == {"circle7", "square7"} and len(rows) == 6
    assert {tuple(r["captions"]) for r in rows} == {("a photo of a circle",), ("a photo of a square",)}
    assert invoke("manifest", "eth80", "--data-root", str(eval_data), "--objects", "x", "-o", str(out)).exit_code == 2


EMOJI_TEST_LINES = """# group: Animals & Nature
# subgroup: animal-mammal
1F408                                                  ; fully-qualified     # 🐈 E0.7 cat
# subgroup: component
# group: Travel & Places
# subgroup: transport-ground
1F69A                                                  ; fully-qualified     # 🚚 E0.6 delivery truck
1F3C3 1F3FD                                            ; fully-qualified     # 🏃🏽 E1.0 person running: medium skin tone
263A                                                   ; unqualified         # ☺ E0.6 smiling face
# subgroup: flag
1F1E9 1F1EA                                            ; fully-qualified     # 🇩🇪 E2.0 flag: Germany
# group: Component
1F3FB                                                  ; fully-qualified     # 🏻 E1.0 light skin tone
"""


def test_emoji_rows_draw_each_named_emoji_once_with_its_name_as_captions(tmp_path):
    """Debian's Noto Color Emoji (.ci/run installs it with unicode-data) drawn for the entries of
    an emoji-test.txt: skin tones, components and unqualified forms left out; drawings reused."""
    from PIL import Image

    from clip_ingest.model import sources

    test_file = tmp_path / "emoji-test.txt"
    test_file.write_text(EMOJI_TEST_LINES, encoding="utf-8")
    rows = list(sources.emoji_rows(tmp_path / "drawn", test_file))
    assert [r["label"] for r in rows] == ["emoji/animal-mammal", "emoji/transport-ground", "emoji/flag"]
    assert rows[1]["captions"] == ["delivery truck", "a delivery truck emoji", "an emoji of a delivery truck",
                                   "delivery truck, transport ground"]
    assert rows[2]["captions"][:2] == ["flag, Germany", "a flag emoji, Germany"]
    for row in rows:
        with Image.open(row["path"]) as image:
            assert image.size == (136, 128) and len(image.convert("RGB").getcolors(maxcolors=1 << 16)) > 20  # a colour drawing
    stamps = [Path(r["path"]).stat().st_mtime_ns for r in rows]
    assert [Path(r["path"]).stat().st_mtime_ns for r in sources.emoji_rows(tmp_path / "drawn", test_file)] == stamps


def test_manifest_of_emoji_lists_the_system_emoji_and_needs_an_image_dir(tmp_path):
    out = tmp_path / "emoji.jsonl"
    assert invoke("manifest", "emoji", "-o", str(out)).exit_code == 2 and not out.exists()
    result = invoke("manifest", "emoji", "-o", str(out), "--image-dir", str(tmp_path / "drawn"))
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) > 1800 and len({r["path"] for r in rows}) == len(rows)
    assert all(r["captions"] and r["label"].startswith("emoji/") for r in rows)
    assert "an emoji of a cat" in {c for r in rows for c in r["captions"]}


def test_manifest_of_the_flickr8k_evaluation_set_lists_each_image_with_its_captions(tmp_path, eval_data):
    """What ``calibrate-text --eval`` measures text precision and recall on: one row per image,
    labelled by its own name (a caption matches its image only), every caption kept."""
    import csv

    out = tmp_path / "flickr8k.jsonl"
    assert invoke("manifest", "flickr8k", "--data-root", str(eval_data), "-o", str(out)).exit_code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    with (eval_data / "flickr8k" / "captions.csv").open(newline="") as fh:
        listed = list(csv.DictReader(fh))
    assert len(rows) == len({r["image"] for r in listed}) == len({r["label"] for r in rows})
    assert sum(len(r["captions"]) for r in rows) == len(listed)
    assert all(Path(r["path"]).is_file() and r["label"] == f"flickr/{Path(r['path']).name}" for r in rows)


def test_a_manifest_from_a_relative_data_root_is_readable_from_its_own_folder(tmp_path, eval_data, monkeypatch):
    """Manifest paths are read relative to the manifest's folder, so a relative data root (the
    recipes' ``CLIP_INGEST_DATA=../shared/data``) must be written as absolute paths."""
    from clip_ingest.model.data import read_manifest

    monkeypatch.chdir(eval_data.parent)
    out = tmp_path / "runs" / "x" / "eth80.jsonl"
    out.parent.mkdir(parents=True)
    assert invoke("manifest", "eth80", "--data-root", eval_data.name, "--objects", "7-7", "-o", str(out)).exit_code == 0
    samples = read_manifest(out)
    assert len(samples) == 6 and all(Path(s.path).is_absolute() and Path(s.path).is_file() for s in samples)


def test_a_manifest_with_max_side_lists_small_copies_made_once(tmp_path, eval_data):
    """``--max-side`` writes decoded copies (so training does not decode huge originals every
    epoch), lists them by absolute path and reuses them on the next run; the flags go together."""
    from PIL import Image

    out, copies = tmp_path / "m.jsonl", tmp_path / "small"
    args = ["manifest", "eth80", "--data-root", str(eval_data), "--objects", "7-7", "-o", str(out)]
    assert invoke(*args, "--max-side", "16").exit_code == 2
    result = invoke(*args, "--max-side", "16", "--image-dir", str(copies))
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6 and {r["label"] for r in rows} == {"circle7", "square7"}
    for row in rows:
        assert Path(row["path"]).parent == copies.resolve()
        assert max(Image.open(row["path"]).size) <= 16
    stamps = {p: p.stat().st_mtime_ns for p in copies.iterdir()}
    assert invoke(*args, "--max-side", "16", "--image-dir", str(copies)).exit_code == 0
    assert {p: p.stat().st_mtime_ns for p in copies.iterdir()} == stamps


def test_eth80_val_scores_objects_1_to_6_only_when_asked(tmp_path, eval_data):
    """``-b eth80-val`` is the ETH-80 retrieval on objects 1-6 (a validation set); the default
    run never scores it, and data without those objects is reported as missing."""
    import shutil

    spec = "clip-ingest-tiny:random"
    out = tmp_path / "only-7-8"
    result = invoke("eval", "-m", spec, "--data-root", str(eval_data), "-b", "eth80-val", "-b", "eth80", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "eth80-val" in json.loads((out / "eval.json").read_text())["missing"]
    for shape in ("circle", "square"):
        shutil.copytree(eval_data / "eth80" / shape / f"{shape}7", eval_data / "eth80" / shape / f"{shape}1")
        shutil.copytree(eval_data / "eth80" / shape / f"{shape}8", eval_data / "eth80" / shape / f"{shape}2")
    out = tmp_path / "val"
    assert invoke("eval", "-m", spec, "--data-root", str(eval_data), "-b", "eth80-val", "-b", "eth80", "-o", str(out)).exit_code == 0
    scores = json.loads((out / "eval.json").read_text())["models"][0]["metrics"]
    assert scores["eth80-val instance mAP"] == pytest.approx(scores["eth80 instance mAP"])  # the same images
    out = tmp_path / "default"
    assert invoke("eval", "-m", spec, "--data-root", str(eval_data), "-o", str(out)).exit_code == 0
    assert not any(k.startswith("eth80-val") for k in json.loads((out / "eval.json").read_text())["models"][0]["metrics"])


def test_published_lists_aliases_and_flags_unverified_urls():
    result = invoke("published")
    assert result.exit_code == 0
    assert "mcip-vit-l-14-336" in result.output and "to be verified" in result.output


def test_experiment_trains_four_rows_per_seed_and_tabulates_them_with_cis(tmp_path, eval_data):
    """The tiny model on generated shapes: wiring and statistics only (its numbers mean nothing)."""
    photos = write_shape_folder(tmp_path / "photos", n=12, sidecars=False)
    recipe = tmp_path / "exp.toml"
    recipe.write_text(f"""
[recipe]
name = "exp"
out_root = "{tmp_path / 'run'}"
[stages]
data = "{photos}"
templates = ["a photo of a {{label}}."]
[stages.train]
epochs = 1
batch_size = 6
lr = 1e-3
warmup_steps = 0
device = "cpu"
[stages.augment]
enabled = false
[finetune]
model = "clip-ingest-tiny:random"
[realign]
model = "unused"
[experiment]
base = "clip-ingest-tiny:random"
random_init = "clip-ingest-tiny:random"
out_dir = "{{out_root}}"
seeds = [0, 1]
[experiment.row_settings.mcip]
caption_weight = 0.5
train = {{lr = 3e-3}}
""")
    result = invoke("experiment", "--recipe", str(recipe), "--data-root", str(eval_data))
    assert result.exit_code == 0, result.output
    lrs = {row: json.loads((tmp_path / "run" / "seed1" / row / "clip_ingest.json").read_text())["config"]
           for row in ("2sft-stage1", "mcip", "mcip-realign")}
    # the mcip row's own settings apply to its stage only, over the recipe's [finetune] table
    assert {row: (c["train"]["lr"], c["train"]["seed"]) for row, c in lrs.items()} == {
        "2sft-stage1": (1e-3, 1), "mcip": (3e-3, 1), "mcip-realign": (1e-3, 1)}
    assert lrs["mcip"]["caption_weight"] == 0.5 and lrs["2sft-stage1"]["caption_weight"] == 0.25
    table = json.loads((tmp_path / "run" / "experiment.json").read_text())
    assert list(table["rows"]) == ["2sft-stage1", "2sft", "mcip", "mcip-realign"]
    for seed in (0, 1):
        meta = json.loads((tmp_path / "run" / f"seed{seed}" / "mcip-realign" / "clip_ingest.json").read_text())
        assert meta["stage"] == "realign" and meta["base_model"] == str(tmp_path / "run" / f"seed{seed}" / "mcip")
        assert meta["config"]["train"]["seed"] == seed
    entry = table["rows"]["mcip"]["eth80 instance mAP"]
    assert len(entry["seeds"]) == 2 and entry["ci"][0] <= entry["diff"] <= entry["ci"][1]
    assert entry["mean"] == pytest.approx(sum(entry["seeds"]) / 2)
    # 2SFT stage 1 leaves the text tower alone and realignment leaves the image tower alone
    assert table["rows"]["2sft"]["eth80 instance mAP"]["seeds"] == table["rows"]["2sft-stage1"]["eth80 instance mAP"]["seeds"]
    assert "| eth80 instance mAP |" in (tmp_path / "run" / "experiment.md").read_text()
    readme = tmp_path / "README.md"
    readme.write_text("# Results\n<!-- clip-model:exp -->\nold table\n<!-- /clip-model:exp -->\nmore text\n")
    published = invoke("update-doc", str(readme), "exp", str(tmp_path / "run" / "experiment.md"))
    assert published.exit_code == 0, published.output
    text = readme.read_text()
    assert "old table" not in text and text.startswith("# Results\n") and text.endswith("-->\nmore text\n")
    assert (tmp_path / "run" / "experiment.md").read_text().strip() in text
    exported = invoke("export", str(tmp_path / "run" / "seed0" / "mcip-realign"), str(tmp_path / "model"),
                      "--experiment", str(tmp_path / "run" / "experiment.md"))
    assert exported.exit_code == 0, exported.output
    assert (tmp_path / "run" / "experiment.md").read_text().strip() in (tmp_path / "model" / "MODEL_CARD.md").read_text()
    missing = invoke("export", "clip-ingest-tiny:random", str(tmp_path / "other"), "--experiment", str(tmp_path / "nope.md"))
    assert missing.exit_code == 2 and "nope.md" in missing.output and not (tmp_path / "other").exists()
    again = invoke("experiment", "--recipe", str(recipe), "--data-root", str(eval_data), "--eval-only")
    retabled = json.loads((tmp_path / "run" / "experiment.json").read_text())
    assert again.exit_code == 0 and retabled["rows"] == table["rows"]
    assert retabled["stage_seconds"] == table["stage_seconds"] and len(table["stage_seconds"]) == 8  # kept
    assert table["row_settings"] == {"mcip": {"caption_weight": 0.5, "train": {"lr": 3e-3}}}
    assert "`mcip` trains with its own settings over the recipe's: caption_weight = 0.5, train.lr = 0.003." in (
        tmp_path / "run" / "experiment.md").read_text()
    typo = invoke("experiment", "--recipe", str(recipe), "--eval-only", "--set", "row_settings.mcp.train.lr=1e-3")
    assert typo.exit_code == 2 and "unknown row(s) ['mcp']" in typo.output


SHIM = '''
import json, sys
import click
from pathlib import Path
from clip_ingest.model.cli import cli
from clip_ingest.model.cli_options import from_recipe
from clip_ingest.model.recipe import load_recipe

args = [a for a in sys.argv[1:] if a != "-v"]
with open("calls.jsonl", "a") as log:
    log.write(json.dumps(args) + "\\n")
if args[0] == Path("fail-at").read_text():
    sys.exit(1)
try:  # the real CLI's parser and recipe loader: a bad option or an unknown recipe exits 2
    ctx = cli.commands[args[0]].make_context(args[0], args[1:])
    recipe = from_recipe(lambda: load_recipe(ctx.params.get("recipe")))
except click.ClickException as exc:
    exc.show()
    sys.exit(exc.exit_code)
out = ctx.params.get("output") or recipe.get(args[0], {}).get("output")
if out:
    out = out.replace("{out_root}", recipe.get("recipe", {}).get("out_root", ""))
    Path(out).write_text(json.dumps({"path": args[0] + ".png"}) + "\\n")
'''


def test_the_experiment_script_runs_each_step_once_and_stops_at_a_failure(tmp_path):
    """``model/recipes/photo-ssl-mcip.sh``, with clip-model replaced by a shim that checks every
    call against the real CLI's parser and recipes and writes the outputs they name: the calls
    come in order, finished manifests are not rebuilt on a re-run (training, the experiment and
    the export are re-entered: the first two resume by themselves, the export overwrites), and a
    failing step stops the script."""
    import subprocess
    import sys

    from clip_ingest.model.recipe import RECIPE_DIR

    (tmp_path / "shim.py").write_text(SHIM)
    (tmp_path / "fail-at").write_text("")
    env = {**__import__("os").environ, "CLIP_INGEST_DATA": str(tmp_path), "CLIP_MODEL": f"{sys.executable} shim.py"}

    def run() -> tuple[int, list[str]]:
        (tmp_path / "calls.jsonl").unlink(missing_ok=True)
        done = subprocess.run(["bash", str(RECIPE_DIR / "photo-ssl-mcip.sh")], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        calls = (tmp_path / "calls.jsonl").read_text().splitlines() if (tmp_path / "calls.jsonl").exists() else []
        return done.returncode, [" ".join(json.loads(c)[:2]) for c in calls]

    (tmp_path / "fail-at").write_text("mine-captions")
    code, calls = run()
    assert code == 1 and calls[-1] == "mine-captions --recipe" and "experiment --recipe" not in calls
    (tmp_path / "fail-at").write_text("")
    code, calls = run()
    assert code == 0, calls
    assert calls == ["pretrain --recipe", "mine-captions --recipe", "experiment --recipe", "export --recipe"]
    runs = tmp_path / "runs"
    assert len((runs / "photo-base-s" / "train.jsonl").read_text().splitlines()) == 3
    assert [json.loads(line)["path"] for line in (runs / "photo-ssl-mcip" / "realign.jsonl").read_text().splitlines()] \
        == ["manifest.png", "mine-captions.png"]
    code, calls = run()
    assert code == 0 and calls == ["pretrain --recipe", "experiment --recipe", "export --recipe"]



def _saved_variant(out_dir: Path, tower: str) -> str:
    """The seeded random ``clip-ingest-tiny`` with one tower's weights changed, saved as a model directory."""
    import torch

    from clip_ingest.connectors.factory import load_model
    from clip_ingest.model.checkpoint import model_config_for_spec, save_local_dir

    loaded = load_model("clip-ingest-tiny:random")
    with torch.no_grad():
        params = loaded.model.visual.parameters() if tower == "image" else loaded.model.token_embedding.parameters()
        for param in params:
            param.add_(0.5)
    save_local_dir(loaded.model, model_config_for_spec("clip-ingest-tiny:random"), loaded.preprocess_cfg, out_dir, {"stage": tower})
    return str(out_dir)


def test_models_with_one_image_tower_share_its_image_vectors(tmp_path, eval_data, monkeypatch):
    """A realigned model (new text tower, same image tower) is not embedded again; another image tower is."""
    options = EvalOptions(data_root=eval_data, benchmarks=("eth80",), device="cpu")
    realigned, finetuned = _saved_variant(tmp_path / "realigned", "text"), _saved_variant(tmp_path / "finetuned", "image")
    calls = count_image_tower_calls(monkeypatch)
    alone = evaluate_models(["clip-ingest-tiny:random"], options)
    one_model = calls["n"]
    assert one_model > 0
    calls["n"] = 0
    report = evaluate_models(["clip-ingest-tiny:random", realigned, finetuned], options)
    assert calls["n"] == 2 * one_model  # the base's image tower once, the fine-tuned one once
    base, same_tower, other_tower = report.models
    assert len({base.model_id, same_tower.model_id, other_tower.model_id}) == 3
    for metric, values in alone.models[0].per_query.items():
        assert np.array_equal(base.per_query[metric], values)
        assert np.array_equal(same_tower.per_query[metric], values)
    assert not np.array_equal(other_tower.per_query["eth80 instance mAP"], base.per_query["eth80 instance mAP"])


def test_eval_against_a_model_gives_each_other_column_its_paired_difference_and_ci(tmp_path, eval_data):
    """``--against``: a text-only variant differs from the reference by exactly 0 on image metrics
    (same image tower, same queries), a changed image tower by the difference of the means, each
    inside its CI; the reference column shows no difference, and an --against model not among
    --model is evaluated too."""
    from clip_ingest.model.eval_report import compare_to

    options = EvalOptions(data_root=eval_data, benchmarks=("eth80",), device="cpu")
    realigned, finetuned = _saved_variant(tmp_path / "realigned", "text"), _saved_variant(tmp_path / "finetuned", "image")
    report = compare_to(evaluate_models(["clip-ingest-tiny:random", realigned, finetuned], options), "clip-ingest-tiny:random")
    base, same_tower, other_tower = report.models
    assert base.differences == {} and report.against == base.name
    assert same_tower.differences["eth80 instance mAP"] == {"diff": 0.0, "ci": [0.0, 0.0]}
    entry = other_tower.differences["eth80 instance mAP"]
    assert entry["diff"] == pytest.approx(other_tower.metrics["eth80 instance mAP"] - base.metrics["eth80 instance mAP"])
    assert entry["ci"][0] <= entry["diff"] <= entry["ci"][1] and entry["ci"][0] < entry["ci"][1]
    row = next(line for line in render_markdown(report).splitlines() if line.startswith("| eth80 instance mAP"))
    cells = [cell.strip() for cell in row.strip("|").split("|")[1:]]
    assert "(" not in cells[0] and cells[1].endswith("(+0.0 [+0.0, +0.0])") and "[" in cells[2]
    with pytest.raises(ValueError, match="not evaluated"):
        compare_to(report, "ViT-B-32")

    result = invoke("eval", "--model", finetuned, "--against", "clip-ingest-tiny:random", "--data-root", str(eval_data),
                    "-b", "eth80", "--device", "cpu", "-o", str(tmp_path / "eval"))
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert [m["spec"] for m in written["models"]] == ["clip-ingest-tiny:random", finetuned]
    assert written["against"] == "clip-ingest-tiny" and written["models"][0]["differences"] == {}
    again = written["models"][1]["differences"]["eth80 instance mAP"]
    assert again["diff"] == pytest.approx(entry["diff"]) and again["ci"] == pytest.approx(entry["ci"])
    assert "paired-bootstrap 95 % CI" in result.output
