"""clip-search end to end (in-process click runner) on a real embedded Qdrant with the tiny model."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from clip_ingest.connectors.backends import open_store
from clip_ingest.connectors.cli.search import main
from imagegen import write_shape_folder
from search_helpers import plant_shapes

TINY = ["--model", "clip-ingest-tiny:random", "--device", "cpu"]


@pytest.fixture(scope="module")
def store_args(tmp_path_factory, tiny_embedder):
    """CLI options pointing at a planted embedded Qdrant collection, and its points."""
    root = tmp_path_factory.mktemp("cli")
    folder = write_shape_folder(root / "photos", n=12)
    store = open_store("qdrant", "shapes", path=str(root / "qdrant"))
    points = plant_shapes(store, tiny_embedder, folder)
    store.close()
    return ["--target", "qdrant", "--qdrant-path", str(root / "qdrant"), "--collection", "shapes", *TINY], points


def run(args, **kwargs):
    return CliRunner().invoke(main, args, catch_exceptions=False, **kwargs)


def test_json_output_with_filter(store_args):
    args, points = store_args
    result = run([*args, "--text", "red circle", "--filter", 'colour = "red"', "-k", "5", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    expected = {p.id for p in points if p.payload["colour"] == "red"}
    assert {hit["id"] for hit in doc["hits"]} == expected
    assert [hit["rank"] for hit in doc["hits"]] == list(range(1, len(expected) + 1))


def test_like_jsonl_table_and_html(store_args, tmp_path):
    args, points = store_args
    target = points[0]
    result = run([*args, "--like", target.id, "-k", "4", "--offset", "1", "--jsonl", "--html", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 4 and target.id not in {line["id"] for line in lines}
    assert [line["rank"] for line in lines] == [2, 3, 4, 5]
    page = (tmp_path / "r.html").read_text()
    assert all(f'data-id="{line["id"]}"' in page for line in lines) and page.count("data:image/jpeg;base64,") == 4
    assert [f'id="hit-{line["rank"]}" data-id="{line["id"]}"' in page for line in lines] == [True] * 4  # same ranks as the JSON
    table = run([*args, "--image", target.payload["path"], "-k", "2"])
    assert table.exit_code == 0
    header, first, _ = table.stdout.splitlines()
    assert header.split() == ["rank", "score", "id", "path"] and target.id in first
    assert header.index("score") == first.index(first.split()[1])  # columns aligned


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--text", "x", "--filter", 'colour = "red" and'], "expected a field name"),
        (["--text", "x", "--image", __file__, "--html", "x.html"], "single"),
        (["--filter", "a = 1"], "at least one"),
        (["--text", "x", "--json", "--jsonl"], "exclusive"),
        (["--text", "x", "-k", "0"], "-k"),
    ],
)
def test_usage_errors_exit_2(store_args, extra, message):
    args, _ = store_args
    result = CliRunner().invoke(main, [*args, *extra])
    assert result.exit_code == 2
    assert message in result.output


def test_several_queries_load_the_model_once_and_answer_each_in_order(store_args):
    args, points = store_args
    one = {q: json.loads(run([*args, "--text", q, "-k", "3", "--json"]).stdout)["hits"] for q in ("red circle", "blue square")}
    like = json.loads(run([*args, "--like", points[0].id, "-k", "3", "--json"]).stdout)["hits"]
    result = run([*args, "--text", "red circle", "--like", points[0].id, "--text", "blue square", "-k", "3", "--json"])
    assert result.exit_code == 0, result.output
    groups = json.loads(result.stdout)["results"]
    assert [g["query"] for g in groups] == [{"text": "red circle"}, {"text": "blue square"}, {"like": points[0].id}]
    for group, alone in zip(groups, [one["red circle"], one["blue square"], like]):
        assert [h["id"] for h in group["hits"]] == [h["id"] for h in alone]  # batched texts: same answers
        assert [h["score"] for h in group["hits"]] == pytest.approx([h["score"] for h in alone], abs=1e-5)
    table = run([*args, "--text", "red circle", "--text", "blue square", "-k", "2"]).stdout
    assert "== --text red circle" in table and "== --text blue square" in table
    lines = [json.loads(x) for x in run([*args, "--text", "a", "--text", "b", "-k", "2", "--jsonl"]).stdout.splitlines()]
    assert [x["query"] for x in lines] == [{"text": "a"}] * 2 + [{"text": "b"}] * 2


def test_unreachable_database_and_unknown_point_exit_1(store_args):
    args, _ = store_args
    down = CliRunner().invoke(main, ["--target", "qdrant", "--qdrant-url", "http://127.0.0.1:9", *TINY, "--text", "x"])
    assert down.exit_code == 1 and "Error:" in down.output
    missing = CliRunner().invoke(main, [*args, "--like", "00000000-0000-0000-0000-000000000000"])
    assert missing.exit_code == 1 and "no point with id" in missing.output


def test_without_model_the_collections_recorded_model_is_used(tmp_path, shape_folder):
    from clip_ingest.connectors.cli.ingest import main as ingest_main

    where = ["--target", "qdrant", "--qdrant-path", str(tmp_path / "q"), "--collection", "pics"]
    ingested = CliRunner().invoke(ingest_main, [*where, "--model", "clip-ingest-tiny:random", "--data-dir", str(tmp_path), str(shape_folder)])
    assert ingested.exit_code == 0, ingested.output
    result = CliRunner().invoke(main, [*where, "--text", "a red circle", "-k", "3", "--json"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["hits"]) == 3
    wrong = CliRunner().invoke(main, [*where, "--model", "starter", "--text", "x"])  # explicit: still checked
    assert wrong.exit_code == 1 and "pass the same --model" in wrong.output


def test_a_misspelt_filter_field_is_warned_about_not_silently_empty(store_args):
    args, _ = store_args
    result = CliRunner().invoke(main, [*args, "--text", "x", "--filter", 'colur = "red"'])
    assert result.exit_code == 0 and "no results" in result.stdout
    assert "colur" in result.output and "none of" in result.output and "colour" in result.output
    fine = CliRunner().invoke(main, [*args, "--text", "x", "--filter", 'colour = "no-such-colour"'])
    assert fine.exit_code == 0 and "none of" not in fine.output  # a known field that matches nothing


def test_a_filter_the_backend_cannot_run_is_a_filter_error(tmp_path, tiny_embedder, shape_folder):
    """Milvus has no distance predicate: the refusal names --filter, not another option."""
    store = open_store("milvus", "shapes", uri=str(tmp_path / "milvus.db"))
    plant_shapes(store, tiny_embedder, shape_folder)
    store.close()
    result = CliRunner().invoke(main, ["--target", "milvus", "--milvus-uri", str(tmp_path / "milvus.db"), "--collection",
                                       "shapes", *TINY, "--text", "x", "--filter", "gps within 5 km of (48.85, 2.35)"])
    assert result.exit_code == 2
    assert "--filter:" in result.output and "--min-relevance" not in result.output
