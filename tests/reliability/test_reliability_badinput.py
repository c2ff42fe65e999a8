"""Hostile and awkward files through the real ``clip-ingest`` command.

One run of the installed script over a folder mixing good images with every kind of bad file:
each bad one must be in the dead-letter file with its reason, every good one in the collection,
the exit code 3, and the process's peak memory bounded although a 30000x30000 PNG is among them.
A second, forked run deletes a file between the scan and the read.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from badfiles import write_awkward_but_valid, write_bad_corpus
from clip_ingest.connectors.backends import open_store
from clip_ingest.connectors.ingest.deadletter import read_dead_letter
from clip_ingest.connectors.ingest.scan import path_key
from reliability_helpers import (
    DeleteBeforeRead,
    dead_letter_reasons,
    numbered_image,
    run_cli,
    run_executable,
    write_png_bomb,
)

MAX_EXTRA_RSS_KIB = 500_000
"""Peak memory over a run on good files only: decoding the bomb alone would take 900 MB+."""
DROP_ROOT_POWERS = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
"""As root, permission bits only apply without these capabilities (the process stays uid 0)."""


def can_make_unreadable() -> bool:
    return os.geteuid() != 0 or shutil.which("setpriv") is not None


def write_hostile_folder(root: Path) -> tuple[dict[str, str], set[str]]:
    """Returns ``({relative path: expected dead-letter reason}, {relative paths that must be ingested})``."""
    bad = {name: reason for name, reason in write_bad_corpus(root).items() if name != "folder.jpg"}
    good = set(write_awkward_but_valid(root / "awkward"))
    good = {f"awkward/{name}" for name in good}
    # a folder named like an image is a folder: walked, and what it holds is ingested
    numbered_image(1).save(root / "folder.jpg" / "inside.png")
    good.add("folder.jpg/inside.png")
    write_png_bomb(root / "bomb.png")
    bad["bomb.png"] = "too_large"
    os.symlink("loop_b.jpg", root / "loop_a.jpg")
    os.symlink("loop_a.jpg", root / "loop_b.jpg")
    bad.update({"loop_a.jpg": "unreadable", "loop_b.jpg": "unreadable"})
    os.symlink(".", root / "awkward" / "self")  # a folder loop: walked once, nothing reported
    os.mkfifo(root / "pipe.jpg")  # opening it for reading would block the run forever
    bad["pipe.jpg"] = "not_a_regular_file"
    numbered_image(6).save(root / "piped-sidecar.png")
    os.mkfifo(root / "piped-sidecar.png.json")
    bad["piped-sidecar.png"] = "bad_metadata"
    quoted = "it's a \"quoted\" name.png"
    numbered_image(2).save(root / quoted)
    good.add(quoted)
    numbered_image(3).save(root / os.fsdecode(b"caf\xe9-latin1.png"))  # not UTF-8: ingested, stored losslessly
    good.add(path_key(os.fsdecode(b"caf\xe9-latin1.png")))
    if can_make_unreadable():
        numbered_image(4).save(root / "locked.png")
        os.chmod(root / "locked.png", 0)
        bad["locked.png"] = "unreadable"
        (root / "closed").mkdir()
        numbered_image(5).save(root / "closed" / "hidden-by-mode.png")
        os.chmod(root / "closed", 0)
        bad["closed"] = "unreadable"
    return bad, good


@pytest.fixture
def hostile(tmp_path):
    root = tmp_path / "hostile"
    expected = write_hostile_folder(root)
    yield root, expected
    for folder in (root / "closed",):  # let pytest clean up
        if folder.exists():
            os.chmod(folder, 0o755)


def test_every_bad_file_is_dead_lettered_good_ones_ingested_memory_bounded(hostile, tmp_path):
    root, (bad, good) = hostile
    dead = tmp_path / "dead.jsonl"
    prefix = DROP_ROOT_POWERS if os.geteuid() == 0 else []
    clean = tmp_path / "clean"
    clean.mkdir()
    numbered_image(1).save(clean / "one.png")
    baseline = run_executable([str(clean), "--data-dir", str(tmp_path / "baseline")], tmp_path, prefix=prefix)
    assert baseline.exit_code == 0, baseline.output[-3000:]
    result = run_executable([str(root), "--data-dir", str(tmp_path / "data"), "--dead-letter", str(dead),
                             "--lock-file", str(tmp_path / "run.lock")], tmp_path, prefix=prefix)
    assert result.exit_code == 3, result.output[-3000:]
    records = read_dead_letter(dead)
    assert dead_letter_reasons(records, root) == bad
    assert all(r["detail"] for r in records)
    with open_store("qdrant", "images", path=str(tmp_path / "data" / "qdrant")) as store:
        stored = sorted(os.path.relpath(p, root) for point in store.scroll() for p in point.payload["paths"])
    assert stored == sorted(good)
    assert 0 < result.max_rss_kib < baseline.max_rss_kib + MAX_EXTRA_RSS_KIB
    assert "Traceback" not in result.output


def test_file_deleted_between_scan_and_read_is_reported_missing(tmp_path):
    """The scan saw the file; it is gone when the decode stage opens it (deleted by a hook there)."""
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(6):
        numbered_image(i).save(root / f"img_{i}.png")
    dead = tmp_path / "dead.jsonl"
    result = run_cli([str(root), "--data-dir", str(tmp_path / "data"), "--dead-letter", str(dead)], tmp_path,
                     hook=DeleteBeforeRead(3))
    assert result.exit_code == 3, result.output[-3000:]
    assert dead_letter_reasons(read_dead_letter(dead), root) == {"img_2.png": "missing"}
    with open_store("qdrant", "images", path=str(tmp_path / "data" / "qdrant")) as store:
        assert store.count() == 5
