"""The guided run from a labelled folder (`clip-model adapt`) and measuring on one's own folder
(`clip-model eval --data`): split by label, choices on validation only, a verdict that claims
only what the held-out CI supports, an export that `clip-ingest migrate` takes as it is."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from clip_ingest.connectors.cli.clip_ingest import main as clip_ingest
from clip_ingest.connectors.factory import parse_model_spec
from clip_ingest.model import metrics
from clip_ingest.model.adapt import _choose
from clip_ingest.model.adapt_plan import default_lrs, make_plan
from clip_ingest.model.adapt_verdict import verdict
from clip_ingest.model.cli import cli
from clip_ingest.model.data import DataError, Sample
from clip_ingest.model.eval_report import ModelResult
from clip_ingest.model.user_data import load_user_samples, split_by_label
from clip_ingest.model.user_eval import label_name
from conftest import TINY_SPEC
from imagegen import COLOURS, SHAPES, make_shape_image


def labelled_folder(root: Path, per_label: int = 3, captions: bool = True) -> Path:
    """One folder per colour+shape (12 labels), ``per_label`` shifted images each, each with an
    ``IMAGE.txt`` caption naming its shape (a caption several images share)."""
    for colour in COLOURS:
        for shape in SHAPES:
            folder = root / f"{colour}_{shape}"
            folder.mkdir(parents=True, exist_ok=True)
            for v in range(per_label):
                make_shape_image(colour, shape, variant=v).save(folder / f"{v}.png")
                if captions:
                    (folder / f"{v}.txt").write_text(f"a {shape}\n")
    return root


def _samples(labels: int, per_label: int = 2) -> list[Sample]:
    return [Sample(f"/x/{i}_{j}.png", f"label{i}") for i in range(labels) for j in range(per_label)]


def test_the_split_is_by_label_deterministic_and_refuses_too_few_labels():
    samples = _samples(20)
    split = split_by_label(samples, 0.25, 0.2, seed=0)
    sides = [{s.label for s in side} for side in (split.train, split.val, split.held_out)]
    assert not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])
    assert [len(x) for x in sides] == [11, 4, 5] and sum(len(x) for x in sides) == 20
    assert split_by_label(list(reversed(samples)), 0.25, 0.2, seed=0).held_out[0].label in sides[2]
    assert {s.label for s in split_by_label(samples, 0.25, 0.2, seed=1).held_out} != sides[2]
    with pytest.raises(DataError, match="too few to hold some out"):
        split_by_label(_samples(5))


def test_folder_captions_come_from_text_sidecars(tmp_path):
    samples = load_user_samples(labelled_folder(tmp_path / "photos", per_label=1))
    assert len(samples) == 12 and all(s.captions == (f"a {s.label.split('_')[1]}",) for s in samples)
    assert label_name("apple3") == "apple" and label_name("golden_retriever") == "golden retriever"


def test_learning_rates_scale_with_the_image_tower():
    assert default_lrs(5_000_000)[0] == (3e-4, 1e-3)
    assert default_lrs(90_000_000)[0] == (3e-6, 1e-5)
    assert default_lrs(300_000_000)[0] == (1e-6, 3e-6)
    assert make_plan(5_000_000, 300, lrs=(0.1,)).lrs == (0.1,) and make_plan(5_000_000, 300).epochs == 6


def _result(diff: float, low: float, high: float, text: tuple[float, float, float] | None = None) -> ModelResult:
    model = ModelResult("x", "x", "id")
    model.differences = {"image mAP": {"diff": diff, "ci": [low, high]}}
    if text:
        model.differences["text mAP"] = {"diff": text[0], "ci": [text[1], text[2]]}
    return model


def test_the_verdict_claims_only_what_the_ci_supports():
    unproven = verdict(_result(0.03, -0.01, 0.07, (0.0, -0.01, 0.01)), "image mAP", "text mAP")
    assert "no measurable change for image search" in unproven.line and not unproven.recommend_switch
    better = verdict(_result(0.05, 0.02, 0.08, (-0.005, -0.02, 0.01)), "image mAP", "text mAP")
    assert "better for image search by +5.0 points [+2.0, +8.0]" in better.line and "text search kept" in better.line
    assert better.recommend_switch
    lost = verdict(_result(0.05, 0.02, 0.08, (-0.05, -0.08, -0.02)), "image mAP", "text mAP")
    assert "text search lost" in lost.line and not lost.recommend_switch
    assert "not measured" in verdict(_result(0.05, 0.02, 0.08), "image mAP", None).line


def test_validation_chooses_the_best_image_map_within_the_text_tolerance():
    base = {"image mAP": 0.5, "text mAP": 0.4}
    tuned = {"a": {"image mAP": 0.7, "text mAP": 0.3}, "b": {"image mAP": 0.6, "text mAP": 0.39}}
    assert _choose(tuned, base, 0.02) == ("b", True)
    assert _choose({"a": {"image mAP": 0.5}}, {"image mAP": 0.5}, 0.02) == ("a", False)
    assert _choose({"a": {"image mAP": 0.9, "text mAP": 0.1}}, base, 0.02) == ("a", False)
    kept = verdict(_result(0.05, 0.02, 0.08), "image mAP", None, validation_prefers_base=True)
    assert "better for image search" in kept.line and "validation preferred the base" in kept.line
    assert not kept.recommend_switch


def test_user_metrics_for_shared_captions_and_leave_one_out_knn():
    images = np.eye(4, dtype=np.float32)
    texts = np.array([[1, 1, 0, 0], [0, 0, 0, 1]], dtype=np.float32) / np.sqrt([[2], [1]])
    relevant = np.array([[1, 1, 0, 0], [0, 0, 1, 0]], dtype=bool)
    ap, hit = metrics.text_query_hits(texts, images, relevant, k=1)
    assert ap[0] == 1.0 and hit.tolist() == [1.0, 0.0] and 0 < ap[1] < 1
    points = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    assert metrics.knn_correct_leave_one_out(points, ["a", "a", "b", "b"], k=1).tolist() == [1.0] * 4


def test_adapt_on_a_tiny_folder_ends_with_a_table_a_verdict_and_an_export_migrate_takes(tmp_path, monkeypatch):
    photos = labelled_folder(tmp_path / "photos")
    monkeypatch.chdir(tmp_path)
    args = ["adapt", "photos", "--base", TINY_SPEC, "--out", "work", "--epochs", "1", "--lr", "1e-3",
            "--name", "shapes-v1", "--device", "cpu"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "split by label" in out and "[1/" in out and "ETA" in out
    assert "| image mAP |" in out and "| text mAP |" in out and "paired-bootstrap 95 % CI" in out
    assert "On your held-out labels:" in out and "Verdict:" in out
    assert "clip-ingest migrate --model" in out and str(Path("work/export").resolve()) in out
    meta = json.loads((tmp_path / "work/export/clip_ingest.json").read_text())
    assert meta["name"] == "shapes-v1" and meta["base_model"] == TINY_SPEC
    assert meta["data"]["held_out"]["labels"] == 3 and "| image mAP |" in meta["held_out"]["table"]
    assert "text_calibration" in meta
    summary = json.loads((tmp_path / "work/adapt.json").read_text())
    held_out = set(json.loads(line)["label"] for line in (tmp_path / "work/split/held_out.jsonl").read_text().splitlines())
    trained = set(json.loads(line)["label"] for line in (tmp_path / "work/split/train.jsonl").read_text().splitlines())
    assert held_out and not held_out & trained and set(summary["validation"]) >= {"base", "2sft-lr0.001", "mcip-lr0.001"}

    again = CliRunner().invoke(cli, args)  # finished stages are reused
    assert again.exit_code == 0 and again.output.count("validation chose") == 1

    # the export, named as a folder without ./, measured on the same held-out labels
    assert parse_model_spec("work/export").kind == "local-dir"
    (tmp_path / "exported").symlink_to(tmp_path / "work/export")
    evaluated = CliRunner().invoke(cli, ["eval", "--data", "photos", "-m", TINY_SPEC, "-m", "exported",
                                         "--against", TINY_SPEC, "--device", "cpu"])
    assert evaluated.exit_code == 0, evaluated.output
    assert "| label zero-shot acc |" in evaluated.output and "shapes-v1" in evaluated.output

    store = ["--target", "qdrant", "--data-dir", str(tmp_path / "db"), "--collection", "shapes", "-q"]
    assert CliRunner().invoke(clip_ingest, ["photos", "--model", TINY_SPEC, *store]).exit_code == 0
    migrated = CliRunner().invoke(clip_ingest, ["migrate", "photos", "--model", "work/export", *store])
    assert migrated.exit_code == 0, migrated.output


def test_a_stage_reads_several_sources_in_order(tmp_path):
    from clip_ingest.model.data import load_sources, write_manifest

    first = write_manifest([Sample(str(tmp_path / "a.png"), "x", ("one",))], tmp_path / "a.jsonl")
    second = write_manifest([Sample(str(tmp_path / "b.png"), "y", ("two",))], tmp_path / "b.jsonl")
    assert [s.label for s in load_sources((str(first), str(second)))] == ["x", "y"]
    assert [s.label for s in load_sources(str(second))] == ["y"]


def test_without_captions_a_caption_pool_gives_mcip_and_a_guard_on_validation(tmp_path):
    photos = labelled_folder(tmp_path / "photos", per_label=2, captions=False)
    pool = tmp_path / "pool.txt"
    pool.write_text("".join(f"a {colour} {shape}\n" for colour in COLOURS for shape in SHAPES))
    result = CliRunner().invoke(cli, ["adapt", str(photos), "--base", TINY_SPEC, "--out", str(tmp_path / "work"),
                                      "--epochs", "1", "--lr", "1e-3", "--caption-pool", str(pool), "--no-export",
                                      "--no-realign", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "mined captions for" in result.output and "mcip-lr0.001" in result.output
    assert "text search not measured" in result.output  # the held-out photos have no captions of their own
    guard = json.loads((tmp_path / "work/stages/mcip-lr0.001/clip_ingest.json").read_text())["text_guard"]
    assert guard["images"] > 0
