"""Secrets stay secret, and manifests cannot reach outside their folder, through the real CLI.

Already covered elsewhere (not repeated): filters only ever select what the parsed filter means
(tests/search/test_filter_fuzz.py, 10,000 parser/compiler examples), ``torch.load`` /
pickle use (tests/project/test_packaging.py), secrets never taken from flags (tests/ingest/test_cli_ingest.py).
"""

from __future__ import annotations

import os
import pytest

from clip_ingest.connectors.backends import open_store
from clip_ingest.connectors.ingest.deadletter import read_dead_letter
from reliability_helpers import dead_letter_reasons, numbered_image, read_json, run_cli, write_corpus

SECRET = "s3cr3t-Tok3n-5f2a9c"
UNREACHABLE = "127.0.0.1:9"  # discard port: connection refused at once


@pytest.mark.parametrize(
    "target_args, env",
    [
        (["--qdrant-url", f"http://{UNREACHABLE}"], {"CLIP_INGEST_QDRANT_API_KEY": SECRET}),
        (["--qdrant-url", f"http://user:{SECRET}@{UNREACHABLE}"], {}),
        (["--target", "milvus", "--milvus-uri", f"http://{UNREACHABLE}"], {"CLIP_INGEST_MILVUS_TOKEN": SECRET}),
        (["--target", "milvus", "--milvus-uri", f"http://root:{SECRET}@{UNREACHABLE}"], {}),
    ],
    ids=["qdrant-api-key", "qdrant-url-password", "milvus-token", "milvus-url-password"],
)
def test_secrets_never_reach_output_against_an_unreachable_server(tmp_path, target_args, env):
    root = write_corpus(tmp_path / "photos", 2)
    summary = tmp_path / "s.json"
    result = run_cli([str(root), *target_args, "-v", "--summary", str(summary), "--data-dir", str(tmp_path / "d"),
                      "--retry-for", "2"],
                     tmp_path, env=env)
    assert result.exit_code == 1, result.output[-3000:]
    assert "Error:" in result.stderr
    assert SECRET not in result.output
    assert not summary.exists() or SECRET not in summary.read_text()


def test_secrets_in_env_and_config_stay_out_of_a_successful_runs_output_and_summary(tmp_path):
    root = write_corpus(tmp_path / "photos", 3)
    config = tmp_path / "clip-ingest.toml"
    config.write_text(f'milvus_token = "{SECRET}-config"\n')
    result = run_cli([str(root), "--config", str(config), "-v", "--summary", str(tmp_path / "s.json"),
                      "--data-dir", str(tmp_path / "d")], tmp_path, env={"CLIP_INGEST_QDRANT_API_KEY": SECRET})
    assert result.exit_code == 0, result.output[-3000:]
    text = (tmp_path / "s.json").read_text()
    assert read_json(tmp_path / "s.json")["new"] == 3
    assert SECRET not in result.output + text


def test_manifest_entries_outside_the_manifest_folder_are_refused(tmp_path):
    """``..``, absolute paths and symlinks leading out of the manifest's folder are dead-lettered, not read."""
    outside = tmp_path / "private"
    outside.mkdir()
    numbered_image(90).save(outside / "secret.png")
    root = tmp_path / "set"
    (root / "img").mkdir(parents=True)
    numbered_image(1).save(root / "img" / "ok.png")
    os.symlink(outside / "secret.png", root / "img" / "link.png")
    os.symlink(outside, root / "img" / "linked-dir")
    entries = ["img/ok.png", "../private/secret.png", str(outside / "secret.png"), "img/../../private/secret.png",
               "img/link.png", "img/linked-dir/secret.png"]
    (root / "m.csv").write_text("path,caption\n" + "".join(f'"{e}",x\n' for e in entries))
    dead = tmp_path / "dead.jsonl"
    result = run_cli(["--manifest", str(root / "m.csv"), "--data-dir", str(tmp_path / "d"), "--dead-letter", str(dead)],
                     tmp_path)
    assert result.exit_code == 3, result.output[-3000:]
    reasons = [r["reason"] for r in read_dead_letter(dead)]
    assert reasons == ["outside_root"] * 5
    assert set(dead_letter_reasons(read_dead_letter(dead), root).values()) == {"outside_root"}
    with open_store("qdrant", "images", path=str(tmp_path / "d" / "qdrant")) as store:
        assert [p for point in store.scroll() for p in point.payload["paths"]] == [str(root / "img" / "ok.png")]
