"""``clip-ingest quarantine``: a file that will never decode, once acknowledged, stops failing runs
while it stays the same, stays listed, and is read again once it changes (real CLI, real Qdrant Edge)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from badfiles import jpeg_bytes
from cli_helpers import MODEL, cli, workdir  # noqa: F401 - workdir is a fixture
from clip_ingest.connectors.ingest.deadletter import read_dead_letter
from clip_ingest.connectors.ingest.quarantine import Quarantine
from imagegen import make_shape_image
from ingest_helpers import all_paths, open_test_store


def ingest(folder: Path, *args: str) -> tuple[int, dict]:
    result = cli(str(folder), *MODEL, "--workers", "1", "--summary", "s.json", *args)
    return result.exit_code, json.loads(Path("s.json").read_text())


def truncated_jpeg(path: Path) -> None:
    good = jpeg_bytes(make_shape_image("red", "circle", size=128))
    path.write_bytes(good[: len(good) // 2])


DATA = Path("clip-ingest-data") / "dead-letter"


def test_a_quarantined_file_is_skipped_unread_until_it_changes(workdir, shape_folder):
    broken = shape_folder / "broken.jpg"
    truncated_jpeg(broken)
    code, summary = ingest(shape_folder)
    assert code == 3 and summary["failed"] == 1 and summary["exit_code"] == 3
    assert summary["failed_files"] == [{"path": str(broken), "reason": "truncated", "detail": summary["failed_files"][0]["detail"]}]

    result = cli("quarantine", "--failed")
    assert result.exit_code == 0, result.output
    assert f"quarantined: {broken}" in result.output
    entry = Quarantine.load(DATA / "qdrant-images.quarantine.jsonl").entries[str(broken)]
    assert (entry.size, entry.mtime_ns, entry.reason) == (broken.stat().st_size, broken.stat().st_mtime_ns, "truncated")

    code, summary = ingest(shape_folder)  # skipped unread: no dead letter, exit 0
    assert (code, summary["outcome"], summary["failed"], summary["quarantined"], summary["unchanged"]) == (0, "ok", 0, 1, 12)
    assert read_dead_letter(DATA / "qdrant-images.jsonl") == []
    status = cli("status", "--json")
    assert status.exit_code == 0, status.output
    report = json.loads(status.output)
    assert report["health"] == "healthy" and report["dead_letters"]["count"] == 0
    assert [(q["path"], q["changed_on_disk"]) for q in report["quarantine"]["files"]] == [(str(broken), False)]

    os.utime(broken, ns=(entry.mtime_ns + 10**9, entry.mtime_ns + 10**9))  # changed: read again, fails again
    code, summary = ingest(shape_folder)
    assert (code, summary["failed"], summary["quarantined"]) == (3, 1, 0)

    make_shape_image("green", "square", size=64).save(broken, "JPEG")  # replaced by a good copy: ingested
    code, summary = ingest(shape_folder)
    assert (code, summary["new"], summary["failed"], summary["quarantined"]) == (0, 1, 0, 0)


def test_release_makes_the_next_run_read_the_file_again(workdir, shape_folder):
    broken = shape_folder / "broken.jpg"
    truncated_jpeg(broken)
    assert cli("quarantine", str(broken)).exit_code == 0
    code, summary = ingest(shape_folder)
    assert (code, summary["quarantined"]) == (0, 1)
    result = cli("quarantine", "--release", str(broken))
    assert result.exit_code == 0 and f"released: {broken}" in result.output, result.output
    code, summary = ingest(shape_folder)
    assert (code, summary["failed"], summary["quarantined"]) == (3, 1, 0)
    listing = cli("quarantine")
    assert listing.exit_code == 0 and "0 file(s) quarantined" in listing.output


def test_a_quarantined_path_is_never_pruned(workdir, shape_folder):
    """A stored image that went bad, once quarantined, keeps its point: --prune only removes files that are gone."""
    victim = sorted(shape_folder.rglob("*.png"))[0]
    assert ingest(shape_folder)[0] == 0
    truncated_jpeg(victim)
    assert ingest(shape_folder)[0] == 3
    assert cli("quarantine", "--failed").exit_code == 0
    code, summary = ingest(shape_folder, "--prune")
    assert (code, summary["pruned"], summary["quarantined"]) == (0, 0, 1)
    with open_test_store("qdrant", workdir / "clip-ingest-data") as store:
        assert str(victim) in all_paths(store)


@pytest.mark.parametrize("args, message", [
    (("quarantine", "no-such.jpg"), "No such file"),
    (("quarantine", "s3://bucket/a.jpg"), "only local files"),
    (("quarantine", "--failed"), "no dead letters"),
    (("quarantine", "--release"), "--release takes the PATHS"),
])
def test_usage_errors(workdir, args, message):
    result = cli(*args)
    assert result.exit_code == 2 and message in result.output, result.output
