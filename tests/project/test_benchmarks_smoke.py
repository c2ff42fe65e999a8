"""Every benchmark runs in ``--smoke`` mode and reports the structure it promises (never timings)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from benchmarks import cli_latency, common, decode, duplicates, duplicates_scale, executors, filtered_recall, ingest, memory, peers, query, rerun, runtimes, serve, text_relevance, training  # importable via pytest's pythonpath


def run(module, tmp_path: Path, *args: str) -> dict:
    """Run one benchmark's ``main`` in smoke mode; check the JSON equals the returned document."""
    out = tmp_path / "result.json"
    result = module.main(["--smoke", "--json", str(out), "--workdir", str(tmp_path / "work"), *args])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result, default=str))
    assert result["environment"]["cpus"] >= 1
    for ratio in result["ratios"]:
        assert math.isfinite(ratio["value"]) and ratio["value"] > 0, ratio
    return result


def only_table(result: dict) -> list[dict]:
    (rows,) = result["tables"].values()
    return rows


def test_ingest_measures_every_stage_and_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = run(ingest, tmp_path, "--n", "16", "--naive-n", "4")
    rows = only_table(result)
    targets = ["qdrant-edge", "qdrant-local", "milvus-lite"]
    if os.environ.get("CLIP_INGEST_TEST_MILVUS_URI"):  # the benchmark adds the server CI runs
        targets.append("milvus-server")
    assert sorted((r["measure"], r["target"]) for r in rows) == sorted(
        [("forward (a)", "-"), ("decode (b)", "-"), ("batch-1 forward (e)", "-")]
        + [(m, t) for t in targets for m in ("ingest (c)", "naive (d)")]
    )
    assert all(r["images_per_s"] > 0 for r in rows)
    assert len(result["ratios"]) == 1 + 3 * len(targets)
    assert all(r["target"] is None for r in result["ratios"] if "(c)/(a)" in r["name"])  # tiny model: no target
    printed = capsys.readouterr().out
    assert "## ratios" in printed and "(c)/(d)" in printed and "images_per_s" in printed


def test_ingest_reports_a_missing_image_folder(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="folder not found"):
        ingest.main(["--smoke", "--images", str(tmp_path / "nowhere")])


def test_ingest_takes_a_real_folder(tmp_path: Path) -> None:
    from imagegen import write_shape_folder

    folder = write_shape_folder(tmp_path / "real", n=6)
    result = run(ingest, tmp_path, "--images", str(folder), "--targets", "qdrant-edge", "--n", "5", "--naive-n", "2")
    assert result["config"]["images"] == 5 and str(folder) in result["config"]["source"]


def test_rerun_skips_unchanged_and_reembeds_changed(tmp_path: Path) -> None:
    result = run(rerun, tmp_path, "--targets", "qdrant-edge", "milvus-lite")
    rows = only_table(result)
    assert [r["target"] for r in rows] == ["qdrant-edge", "milvus-lite"]
    for row in rows:
        assert row["unchanged_skipped"] == row["files"] == 30
        assert row["changed_embedded"] == row["changed_files"] == 1
    assert {r["target"] for r in result["ratios"]} == {0.02, 0.05}


def test_query_reports_percentiles_split_and_recall(tmp_path: Path) -> None:
    result = run(query, tmp_path, "--targets", "qdrant-edge", "qdrant-local", "--sizes", "120", "--queries", "3")
    rows = only_table(result)
    assert len(rows) == 2 * (2 * 2 + 1)  # targets x ((text, image) x (filter, no filter) + the rare filter)
    for row in rows:
        assert row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
        assert 0.0 <= row["recall@10"] <= 1.0
    # small collections are searched exactly by both backends; the rare filter's pages are full and exact
    assert all(row["recall@10"] == 1.0 for row in rows if row["filter"] == "no" or row["filter"].startswith("rare"))
    assert len(result["ratios"]) == 4


def test_training_reports_every_stage(tmp_path: Path) -> None:
    result = run(training, tmp_path)
    stages = [r["stage"] for r in only_table(result)]
    assert stages == ["pretrain", "finetune retrieval", "finetune mcip", "realign (cached images)", "realign (image tower run)"]
    assert all(r["samples"] == 24 for r in only_table(result))
    assert [r["name"] for r in result["ratios"]] == ["realign samples/s: cached / image tower run"]


def test_memory_measures_two_sizes_in_subprocesses(tmp_path: Path) -> None:
    result = run(memory, tmp_path)
    rows = only_table(result)
    assert [r["images"] for r in rows] == [r["embedded"] for r in rows] == [20, 60]
    assert all(r["peak_after_mb"] >= r["peak_before_mb"] > 0 for r in rows)


def test_cli_latency_times_every_command_first_and_repeated_beside_the_import_reference(tmp_path: Path) -> None:
    result = run(cli_latency, tmp_path)
    commands = {r["what"]: r for r in result["tables"]["commands, wall end to end (s)"]}
    reference = {r["what"]: r for r in result["tables"]["reference: a fresh interpreter (s)"]}
    assert {"clip-search --help", "clip-ingest --help", "clip-search --text (default runtime)", "clip-search --text (torch)",
            "clip-search --text (onnx)"} <= set(commands)
    assert {"import torch, open_clip", "exit after import torch, open_clip (teardown)"} <= set(reference)
    assert all(r["runs"] == 2 and r["first_s"] > 0 and r["repeated_s"] > 0 for r in commands.values())
    assert all(r["repeated_cpu_s"] > 0 for r in commands.values())
    (first_use,) = result["tables"]["first use of --runtime onnx (s)"]
    assert first_use["wall_s"] > 0
    assert result["ratios"][0]["target"] is None  # the 1.5 s target is the starter's, not the smoke model's


def test_serve_measures_in_process_and_every_concurrency_over_http(tmp_path: Path) -> None:
    result = run(serve, tmp_path, "--concurrency", "1", "4")
    rows = {r["mode"]: r for r in only_table(result)}
    assert set(rows) == {"in-process", "served c=1", "served c=4"}
    assert all(r["queries"] > 0 and r["errors"] == 0 and r["p50_ms"] > 0 for r in rows.values())
    assert rows["served c=4"]["mean_batch"] >= 1.0
    assert [r["name"] for r in result["ratios"]] == ["served c=1 p50 / in-process p50", "queries/s c=4 / c=1"]


def test_decode_compares_the_pipeline_before_and_now(tmp_path: Path) -> None:
    result = run(decode, tmp_path)
    rows = only_table(result)
    assert {r["variant"] for r in rows} == {decode.BEFORE, "pillow + fused tail", decode.NOW, decode.PROCESSES}
    assert {r["measure"] for r in rows if r["variant"] != decode.PROCESSES} == {
        "decode stage", "decode, 1 thread", "preprocess, 1 thread", f"decode stage, {decode.LARGE_SIDE} px JPEG"}
    measures = [r["measure"] for r in rows if r["variant"] == decode.PROCESSES]
    assert measures[:2] == ["decode stage", "decode stage, quarter"] and measures[2].startswith("decode stage, marginal (start-up")
    assert all(r["images_per_s"] > 0 and r["max_abs_diff_vs_before"] <= 1e-5 for r in rows)
    assert any(r["name"].startswith(f"{decode.TINY}: {decode.NOW}") and r["target"] == 1.5 for r in result["ratios"])
    assert any(r["name"].startswith(f"{decode.TINY}: {decode.PROCESSES}, marginal") and r["target"] == 1.5 for r in result["ratios"])


def test_duplicates_scale_finds_the_planted_groups_in_every_target(tmp_path: Path) -> None:
    result = run(duplicates_scale, tmp_path, "--targets", "qdrant-edge", "milvus-lite")
    rows = only_table(result)
    assert [r["target"] for r in rows] == ["qdrant-edge", "milvus-lite"]
    for row in rows:  # planted copies sit at cosine ~0.995, random directions near 0: an exact answer
        assert (row["pair_precision"], row["pair_recall"]) == (1.0, 1.0) and row["groups_found"] == row["planted_groups"]
        assert row["find_s"] > 0 and row["peak_rss_mb"] > 0 and row["rss_after_find_mb"] > 0


def test_duplicates_reports_each_tier_on_a_collection_in_caltechs_layout(tmp_path: Path) -> None:
    result = run(duplicates, tmp_path)
    rows = only_table(result)
    assert [(r["model"], r["tier"]) for r in rows] == [("starter", "duplicates"), ("starter", "similar")]
    assert result["config"]["kinds"]["original"] > 0 and result["config"]["planted"] == 7
    for row in rows:
        assert 0 <= row["pair precision"] <= 1 and 0 <= row["mixed-class groups"] <= 1
        # the Faces pairs (4 photos, 2 files each), the 7 edits, and their originals where not a Faces photo already
        assert 8 + 7 <= row["true images"] <= 8 + 2 * 7
        assert {f"recall {kind}" for kind in (*duplicates.KINDS, "faces")} <= set(row)


def test_text_relevance_reports_precision_per_cut(tmp_path: Path) -> None:
    rows = only_table(run(text_relevance, tmp_path))
    assert [r["cut"] for r in rows] == list(text_relevance.CUTS)
    assert all(r["precision"] == "-" or 0 <= r["precision"] <= 1 for r in rows)
    kept = [r["kept per query"] for r in rows]
    assert kept == sorted(kept, reverse=True)  # a higher cut keeps fewer


def test_runtimes_measures_each_runtime_and_its_agreement_with_torch(tmp_path: Path) -> None:
    result = run(runtimes, tmp_path)
    agreement, threads = result["tables"].values()
    rows = {r["runtime"]: r for r in agreement}
    assert set(rows) == {"torch", "onnx", "onnx-int8"}
    assert rows["onnx"]["model_id"] == rows["torch"]["model_id"] and rows["onnx-int8"]["model_id"].endswith("+onnx-int8")
    assert rows["onnx"]["cos_distance_to_torch_max"] < 1e-4 and rows["torch"]["cos_distance_to_torch_max"] < 1e-6
    assert all(r["forward_images_per_s"] > 0 and r["ingest_images_per_s"] > 0 for r in rows.values())
    assert "onnx / torch, end to end (c)" in [r["name"] for r in result["ratios"]]
    # the threads as they were and sized, each quiet and beside a competing load (one runtime in smoke mode)
    assert {(r["threads"].split(":")[0], r["load"]) for r in threads} == {
        (variant, load) for variant in runtimes.THREADS for load in runtimes.LOADS}
    assert all(r["images_per_s"] > 0 and r["cpu_ms_per_image"] > 0 for r in threads)
    assert {"torch, competing load: sized / before", "torch, quiet: sized / before"} <= {r["name"] for r in result["ratios"]}


def test_peers_races_every_contender_on_the_same_weights(tmp_path: Path) -> None:
    result = run(peers, tmp_path)
    rows = {r["contender"]: r for r in only_table(result)}
    for runtime in ("torch", "onnx", "onnx-int8"):
        assert rows[f"clip-ingest {runtime}"]["images_per_s"] > 0 and f"clip-ingest {runtime} forward bound" in rows
    assert rows["fastembed"]["images_per_s"] > 0 and rows[peers.PROCESSES]["images_per_s"] > 0
    assert rows["clip-ingest onnx"]["cos_min"] >= 0.9999  # same weights, same preprocessing
    assert rows["fastembed"]["cos_mean"] > 0.99  # same ONNX file; its crop may shift a pixel
    assert any("clip-retrieval" in note for note in result["notes"])  # said, not silently dropped


def test_executors_benchmark_measures_every_executor_in_a_fresh_process_and_the_parquet_path(tmp_path: Path) -> None:
    result = run(executors, tmp_path)
    rows = result["tables"]["runs (fresh process each)"]
    assert [r["executor"] for r in rows] == ["local", "processes", "ray"]
    assert all(r["images_per_s"] > 0 and r["startup_s"] > 0 and r["wall_s"] >= r["startup_s"] for r in rows)
    fits = {r["executor"]: r for r in result["tables"]["fit: wall = fixed + n / steady"]}
    assert set(fits) == {"local", "processes", "ray"} and fits["local"]["crossover_n"] == "-"
    assert [r["name"] for r in result["ratios"]] == [
        "processes / local throughput, generated 24", "ray / local throughput, generated 24", "parquet load rate / embed rate"]
    assert executors.crossover((5.0, 20.0), (1.0, 10.0)) == pytest.approx(80.0)  # 5 + n / 20 = 1 + n / 10
    assert executors.crossover((5.0, 10.0), (1.0, 10.0)) is None  # no faster: never
    assert common.fixed_and_marginal((10, 2.0), (50, 6.0)) == (1.0, 10.0)  # seconds(n) = 1 + n / 10


def test_filtered_recall_compares_every_target_with_exact_search(tmp_path: Path) -> None:
    from imagegen import write_shape_folder

    folder = write_shape_folder(tmp_path / "labelled", n=24)
    result = run(filtered_recall, tmp_path, "--images", str(folder), "--n", "24", "--targets", "qdrant-edge", "milvus-lite",
                 "--cache-dir", str(tmp_path / "cache"))
    rows = result["tables"]["filtered recall@10 and database p50 (ms)"]
    assert {row["target"] for row in rows} == {"qdrant-edge", "milvus-lite"}
    assert all(row["recall@10"] == 1.0 for row in rows), rows  # exact on both embedded stores


def test_filtered_search_benchmark_compares_every_filter_with_unfiltered_and_exact_search(tmp_path: Path) -> None:
    from benchmarks import filtered

    result = run(filtered, tmp_path, "--backends", "qdrant-edge", "milvus-lite")
    rows = result["tables"]["filtered vs unfiltered (ms) and recall"]
    names = ["unfiltered", *(name for name, _, _ in filtered.FILTERS)]
    assert sorted((r["backend"], r["filter"]) for r in rows) == sorted(
        [(backend, name) for backend in ("qdrant-edge", "milvus-lite") for name in names] + [("milvus-lite", filtered.WIDE)])
    assert all(r["recall"] == 1.0 and r["least_recall"] == 1.0 for r in rows), rows  # both are exact
    assert all(r["p50_ms"] > 0 and r["p95_ms"] >= r["p50_ms"] for r in rows)
    assert {r["filter"]: r["matches"] for r in rows if r["backend"] == "milvus-lite"}["unfiltered"] == 200
    assert len(result["ratios"]) == 2 * 2 * len(filtered.FILTERS)  # latency and recall per filter and backend
    side = result["tables"]["p50 / unfiltered p50, side by side"]
    assert [(r["backend"], r["least_recall"]) for r in side] == [("qdrant-edge", 1.0), ("milvus-lite", 1.0)]
    assert all(r[name] > 0 for r in side for name, _, _ in filtered.FILTERS)
    assert "unfiltered_at_filtered_ef" in side[1] and "unfiltered_at_filtered_ef" not in side[0]
