"""The ``clip-ingest`` command: CliRunner runs end to end, config precedence, exit codes, a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli_helpers import workdir  # noqa: F401 - a fixture
from clip_ingest.connectors.backends.base import CollectionSpec
from clip_ingest.connectors.cli.ingest import INGEST_SETTINGS, main
from clip_ingest.connectors.config import COMMON_SETTINGS, ConfigError, resolve_settings, store_target
from clip_ingest.connectors.ingest.deadletter import read_dead_letter
from clip_ingest.connectors.ingest.lock import RunLock
from ingest_helpers import all_paths, open_test_store

SETTINGS = COMMON_SETTINGS + INGEST_SETTINGS


def run(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, ["--model", "clip-ingest-tiny:random", "--workers", "2", *args], env=env)


def read_summary(path: Path) -> dict:
    return json.loads(path.read_text())


def test_ingest_end_to_end_then_incremental(workdir, shape_folder):
    result = run(str(shape_folder), "--summary", "s.json", "--index-field", "colour:keyword")
    assert result.exit_code == 0, result.output
    summary = read_summary(workdir / "s.json")
    assert (summary["new"], summary["failed"], summary["target"], summary["collection"]) == (12, 0, "qdrant", "images")
    assert summary["model_id"].startswith("clip-ingest-tiny@")
    assert summary["location"] == str(workdir / "clip-ingest-data" / "qdrant")
    result = run(str(shape_folder), "--summary", "s.json")
    assert result.exit_code == 0, result.output
    assert (read_summary(workdir / "s.json")["unchanged"], read_summary(workdir / "s.json")["new"]) == (12, 0)
    with open_test_store("qdrant", workdir / "clip-ingest-data") as store:
        assert store.count() == 12


def test_failed_files_exit_3_with_default_dead_letter(workdir, shape_folder):
    (shape_folder / "empty.jpg").write_bytes(b"")
    (shape_folder / "text.jpg").write_text("hello")
    result = run(str(shape_folder), "--summary", "s.json")
    assert result.exit_code == 3, result.output
    records = read_dead_letter(workdir / "clip-ingest-data" / "dead-letter" / "qdrant-images.jsonl")
    assert sorted((Path(r["path"]).name, r["reason"]) for r in records) == [("empty.jpg", "empty"), ("text.jpg", "not_an_image")]
    assert read_summary(workdir / "s.json")["new"] == 12


def test_shard_workers_keep_their_own_dead_letter_and_lock(workdir, shape_folder):
    from clip_ingest.connectors.ingest.lock import default_lock_path

    (shape_folder / "empty.jpg").write_bytes(b"")
    (shape_folder / "text.jpg").write_text("hello")
    codes = [run(str(shape_folder), "--shard", f"{i}/2").exit_code for i in range(2)]
    assert codes == [3, 3]  # empty.jpg and text.jpg hash to different shards
    folder = workdir / "clip-ingest-data" / "dead-letter"
    names = sorted(p.name for p in folder.glob("*.jsonl"))  # beside each one: its worker's last-run summary
    assert names == ["qdrant-images-shard-0-of-2.jsonl", "qdrant-images-shard-1-of-2.jsonl"]
    failed = sorted(Path(r["path"]).name for name in names for r in read_dead_letter(folder / name))
    assert failed == ["empty.jpg", "text.jpg"]  # each worker's records survive the other's run
    locks = {default_lock_path("milvus", "http://m:19530", "images", label) for label in ("", "shard-0-of-2", "shard-1-of-2")}
    assert len(locks) == 3  # server shards lock apart; an embedded store keeps one lock (one process at a time)
    embedded = default_lock_path("qdrant", str(workdir / "clip-ingest-data" / "qdrant"), "images")
    with RunLock(embedded):
        assert run(str(shape_folder), "--shard", "0/2").exit_code == 4


def test_dry_run_prints_changes_and_writes_nothing(workdir, shape_folder):
    result = run(str(shape_folder), "--dry-run", "--summary", "s.json")
    assert result.exit_code == 0, result.output
    assert result.output.count("would add:") == 12
    assert read_summary(workdir / "s.json")["new"] == 12
    assert not (workdir / "clip-ingest-data" / "dead-letter").exists()
    with open_test_store("qdrant", workdir / "clip-ingest-data") as store:
        assert store.collection_model() is None


def test_model_mismatch_exits_1_and_recreate_fixes_it(workdir, shape_folder, tiny_embedder):
    with open_test_store("qdrant", workdir / "clip-ingest-data") as store:
        store.ensure_collection(CollectionSpec("images", tiny_embedder.dim, "some-other-model@0/0"))
    result = run(str(shape_folder))
    assert result.exit_code == 1
    assert "some-other-model" in result.output and "--recreate" in result.output
    result = run(str(shape_folder), "--recreate", "--summary", "s.json")
    assert result.exit_code == 0, result.output
    assert read_summary(workdir / "s.json")["new"] == 12


def test_locked_collection_exits_4(workdir, shape_folder):
    with RunLock(workdir / "run.lock"):
        result = run(str(shape_folder), "--lock-file", "run.lock")
    assert result.exit_code == 4
    assert f"pid {os.getpid()}" in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        ((), "at least one folder"),
        (("{src}", "--index-field", "colour"), "NAME:TYPE"),
        (("{src}", "--shard", "3/2"), "shard"),
        (("{src}", "--qdrant-api-key", "s3cret"), "No such option"),
        (("{src}", "--target", "sqlite"), "sqlite"),
        (("{src}", "--collection", "a/b"), "collection name"),
        (("{src}", "--target", "milvus", "--index-field", "id:keyword"), "cannot be payload fields"),
    ],
)
def test_usage_errors_exit_2(workdir, args, message):
    result = run(*(a.format(src=workdir) for a in args))
    assert result.exit_code == 2 and message in result.output


def test_missing_source_folder_exits_2_before_the_model_loads(workdir):
    result = run(str(workdir / "nope"))
    assert result.exit_code == 2 and "not found" in result.output
    # a model that cannot load would exit 1: the folder is checked first
    result = CliRunner().invoke(main, ["--model", str(workdir / "no-model"), str(workdir / "nope")])
    assert result.exit_code == 2 and f"not found: {workdir / 'nope'}" in result.output


def test_a_run_ends_by_saying_where_the_data_went_and_how_to_search_it(workdir, shape_folder):
    result = run("--collection", "pics", str(shape_folder))
    assert result.exit_code == 0, result.output
    assert "search it with: clip-search --target qdrant --collection pics --model clip-ingest-tiny:random --text" in result.output


def test_settings_precedence_flags_config_env_defaults(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('collection = "from-config"\nworkers = 3\n[ingest]\nprune = true\n[search]\nworkers = 9\n')
    env = {"CLIP_INGEST_COLLECTION": "from-env", "CLIP_INGEST_MODEL": "from-env-model", "CLIP_INGEST_WORKERS": "7",
           "CLIP_INGEST_QDRANT_API_KEY": "s3cret"}
    s = resolve_settings({"workers": 5}, SETTINGS, section="ingest", config_file=config, env=env)
    assert (s.workers, s.collection, s.model, s.prune, s.target) == (5, "from-config", "from-env-model", True, "qdrant")
    assert s.origins["workers"] == "flag" and s.origins["target"] == "default"
    assert s.qdrant_api_key == "s3cret" and "s3cret" not in repr(s) and "qdrant_api_key" not in s.public()
    s = resolve_settings({"qdrant_api_key": "from-flag"}, SETTINGS, section="ingest", env={})
    assert s.qdrant_api_key is None  # secrets are never taken from flags
    bad = tmp_path / "bad.toml"
    bad.write_text("colection = 'typo'\n")
    with pytest.raises(ConfigError, match="colection"):
        resolve_settings({}, SETTINGS, section="ingest", config_file=bad, env={})
    with pytest.raises(ConfigError, match="CLIP_INGEST_WORKERS"):
        resolve_settings({}, SETTINGS, section="ingest", env={"CLIP_INGEST_WORKERS": "many"})


def test_store_target_defaults_and_credentials_kept_out_of_location(tmp_path):
    s = resolve_settings({"target": "milvus", "data_dir": str(tmp_path)}, SETTINGS, section="ingest", env={})
    t = store_target(s)
    assert t.options["uri"] == str(tmp_path / "milvus.db") and t.embedded
    assert t.options["search_consistency"] == "Strong"
    s = resolve_settings({"target": "milvus", "data_dir": str(tmp_path)}, SETTINGS, section="ingest",
                         env={"CLIP_INGEST_MILVUS_CONSISTENCY": "Bounded"})
    assert store_target(s).options["search_consistency"] == "Bounded"
    s = resolve_settings({"qdrant_url": "https://user:pw@qdrant.example:6333/"}, SETTINGS, section="ingest",
                         env={"CLIP_INGEST_QDRANT_API_KEY": "k"})
    t = store_target(s)
    assert t.location == "https://qdrant.example:6333/" and t.options["api_key"] == "k" and not t.embedded


def test_cli_uses_config_file_then_env(workdir, shape_folder):
    (workdir / "clip-ingest.toml").write_text('collection = "cfg"\n')
    env = {"CLIP_INGEST_COLLECTION": "envcoll"}
    assert run(str(shape_folder), "--dry-run", "--summary", "a.json", env=env).exit_code == 0
    assert read_summary(workdir / "a.json")["collection"] == "cfg"
    assert run(str(shape_folder), "--dry-run", "--summary", "b.json", "--collection", "flag", env=env).exit_code == 0
    assert read_summary(workdir / "b.json")["collection"] == "flag"
    (workdir / "clip-ingest.toml").unlink()
    assert run(str(shape_folder), "--dry-run", "--summary", "c.json", env=env).exit_code == 0
    assert read_summary(workdir / "c.json")["collection"] == "envcoll"


def test_entry_point_subprocess_concurrent_with_an_in_process_run_makes_no_duplicates(workdir, shape_folder):
    """One real ``clip-ingest`` process and one CliRunner run at the same time, on the same collection."""
    exe = Path(sys.executable).with_name("clip-ingest")
    cmd = [str(exe), str(shape_folder), "--model", "clip-ingest-tiny:random", "--lock-timeout", "300", "--workers", "1",
           "-q", "--summary", "s0.json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        result = run(str(shape_folder), "--lock-timeout", "300", "--summary", "s1.json")
    finally:
        output = proc.communicate(timeout=300)[0]
    assert (proc.returncode, result.exit_code) == (0, 0), (output, result.output)
    news = sorted(read_summary(workdir / f"s{i}.json")["new"] for i in range(2))
    assert news == [0, 12]  # serialised by the lock: the later run found everything done
    with open_test_store("qdrant", workdir / "clip-ingest-data") as store:
        assert store.count() == 12
        assert len(all_paths(store)) == len(set(all_paths(store))) == 12


@pytest.mark.parametrize("target, flag", [("milvus", "--milvus-uri"), ("qdrant", "--qdrant-url")])
def test_a_wrong_server_address_fails_at_once_and_says_which_option(workdir, shape_folder, target, flag):
    import socket

    with socket.socket() as sock:  # a local port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = run("--target", target, flag, f"http://127.0.0.1:{port}", "--retry-for", "600", str(shape_folder))
    assert result.exit_code == 1
    assert "cannot reach the database" in result.output and flag in result.output
    assert "retrying" not in result.output  # no retry budget spent on an address that never answered


def test_the_suggested_search_command_never_echoes_url_credentials():
    from types import SimpleNamespace

    from clip_ingest.connectors.cli.ingest import search_command

    settings = SimpleNamespace(target="milvus", collection="images", data_dir="clip-ingest-data", qdrant_url=None,
                               qdrant_path=None, milvus_uri="http://root:s3cret@db:19530", model="starter")
    command = search_command(settings)
    assert "s3cret" not in command and "--milvus-uri" in command and "db:19530" in command
    settings.milvus_consistency = "Bounded"  # every backend setting that says where or how to search
    settings.milvus_token = "t0ken"  # but no secret
    command = search_command(settings)
    assert "--milvus-consistency Bounded" in command and "t0ken" not in command


def test_cpus_sizes_the_decode_workers_unless_workers_is_given(tmp_path):
    from clip_ingest.connectors.ingest.job import job_from_settings
    from clip_ingest.connectors.ingest.plan import Shard

    def options(flags: dict, env: dict):
        settings = resolve_settings({"sources": (str(tmp_path),), **flags}, SETTINGS, section="ingest", env=env, cwd=tmp_path)
        return job_from_settings(settings, Shard(), {}).options

    assert options({}, {"CLIP_INGEST_CPUS": "6"}).workers == 3
    assert options({"cpus": 4}, {"CLIP_INGEST_CPUS": "6"}).workers == 2
    assert options({"cpus": 4, "workers": 5}, {}).workers == 5
    assert options({}, {"CLIP_INGEST_CPUS": "1"}).workers == 1
