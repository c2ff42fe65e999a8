"""``clip-ingest status``: a collection's state and its last run, read without creating anything
(real CLI, real Qdrant Edge and Milvus Lite)."""

from __future__ import annotations

import json

import pytest

from cli_helpers import MODEL, cli, workdir  # noqa: F401 - workdir is a fixture
from clip_ingest.connectors.cli.status import EXIT_MISSING


def status_json(*args: str) -> tuple[int, dict]:
    result = cli("status", "--json", *args)
    return result.exit_code, json.loads(result.output)


@pytest.mark.parametrize("store_args", [("--target", "qdrant"), ("--target", "milvus")], ids=["qdrant-edge", "milvus-lite"])
def test_a_missing_store_is_reported_not_created(workdir, store_args):
    code, report = status_json(*store_args, "--data-dir", "data")
    assert (code, report["health"], report["exists"]) == (EXIT_MISSING, "missing", False)
    assert not (workdir / "data").exists()  # no folder, no Milvus Lite file
    text = cli("status", *store_args, "--data-dir", "data")
    assert text.exit_code == EXIT_MISSING and "missing: no such collection" in text.output
    assert not (workdir / "data").exists()


def test_status_shows_the_collection_the_last_run_and_its_dead_letters(workdir, shape_folder):
    broken = shape_folder / "broken.jpg"
    broken.write_text("not an image")
    assert cli(str(shape_folder), *MODEL, "--workers", "1").exit_code == 3
    code, report = status_json()
    assert code == 3 and report["health"] == "attention"
    assert (report["exists"], report["count"], report["model_spec"]) == (True, 12, "clip-ingest-tiny:random")
    assert report["model_id"].startswith("clip-ingest-tiny@") and report["dim"] > 0
    last = report["last_run"]
    assert (last["outcome"], last["exit_code"], last["new"], last["failed"]) == ("failed_files", 3, 12, 1)
    assert last["started_at"] <= last["finished_at"]
    assert [f["path"] for f in last["failed_files"]] == [str(broken)] and last["failed_files_omitted"] == 0
    assert report["dead_letters"]["count"] == 1 and report["dead_letters"]["first"][0]["reason"] == "not_an_image"
    text = cli("status")
    assert text.exit_code == 3
    for line in ("points: 12", "last run: failed_files (exit 3)", f"{broken}: not_an_image", "health: attention"):
        assert line in text.output, text.output

    broken.unlink()
    assert cli(str(shape_folder), *MODEL, "--workers", "1").exit_code == 0
    code, report = status_json()
    assert (code, report["health"], report["last_run"]["outcome"], report["dead_letters"]["count"]) == (0, "healthy", "ok", 0)


def test_status_help_documents_its_exit_codes():
    result = cli("status", "--help")
    assert result.exit_code == 0
    assert "6 the collection" in " ".join(result.output.split())
