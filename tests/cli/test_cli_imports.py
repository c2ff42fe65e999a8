"""What each command path imports: ``--help`` of every command loads none of the heavy
libraries, a store loads only its own backend's client, and a text search only the runtime it
runs on (each probe in a fresh interpreter: a clean ``sys.modules``). Speed itself is measured
by ``benchmarks/cli_latency.py``, not here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from clip_ingest.connectors.cli.clip_ingest import main as ingest_main
from clip_ingest.connectors.targets import TARGETS

from conftest import TINY_SPEC

#: what no --help may import: seconds of imports each (torch + open_clip alone ~4 s on 2 CPUs)
HEAVY = ("torch", "open_clip", "ray", "fastapi", "pymilvus", "qdrant_client")
#: each backend's client library: a store imports its own and no other
CLIENTS = ("qdrant_client", "qdrant_edge", "pymilvus", "pyarrow")
OWN_CLIENT = {"qdrant": {"qdrant_edge"}, "qdrant-edge": {"qdrant_edge"}, "milvus": {"pymilvus", "pyarrow"}, "parquet": {"pyarrow"}}  # pymilvus loads pyarrow

#: runs ``--help`` of every command of the three tools, one after another, and prints which of
#: HEAVY each one added to sys.modules
HELP_PROBE = """
import contextlib, io, json, sys
from clip_ingest.connectors.cli.clip_ingest import main as clip_ingest
from clip_ingest.connectors.cli.search import main as clip_search
from clip_ingest.model.cli import cli as clip_model

heavy = %r
loaded = {}
for tool, group in (("clip-ingest", clip_ingest), ("clip-search", clip_search), ("clip-model", clip_model)):
    for args in [["--help"], *([name, "--help"] for name in sorted(group.commands))]:
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                group.main(args, prog_name=tool, standalone_mode=False)
            except SystemExit:
                pass
        loaded[" ".join([tool, *args])] = sorted(m for m in heavy if m in sys.modules)
print(json.dumps(loaded))
"""

#: runs one command (``module:attribute`` ARGS...) and prints, as its last line, its exit code
#: and which of the named modules it imported
RUN_PROBE = """
import importlib, json, sys
module, _, attribute = sys.argv[1].partition(":")
watched = sys.argv[2].split(",")
code = 0
try:
    getattr(importlib.import_module(module), attribute)(sys.argv[3:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "imported": sorted(m for m in watched if m in sys.modules)}))
"""


def probe(*args: str, env: dict[str, str] | None = None) -> tuple[dict, str]:
    """Run RUN_PROBE with ``args``; returns its report and everything printed before it."""
    done = subprocess.run([sys.executable, "-c", RUN_PROBE, *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)
    *output, last = done.stdout.strip().splitlines() or [""]
    assert last.startswith("{"), done.stdout + done.stderr
    return json.loads(last), "\n".join(output)


def test_help_of_every_command_imports_no_heavy_library():
    done = subprocess.run([sys.executable, "-c", HELP_PROBE % (HEAVY,)], capture_output=True, text=True, check=True,
                          timeout=300)
    loaded = json.loads(done.stdout)
    assert {"clip-search --help", "clip-search serve --help", "clip-ingest migrate --help", "clip-model export --help"} <= set(loaded)
    assert {command: heavy for command, heavy in loaded.items() if heavy} == {}


@pytest.mark.parametrize("target", sorted(OWN_CLIENT))
def test_a_store_imports_its_own_client_only(target):
    assert set(OWN_CLIENT) == set(TARGETS)
    code = (f"import json, sys, tempfile\n"
            "from clip_ingest.connectors.config import COMMON_SETTINGS, resolve_settings, store_target\n"
            "from clip_ingest.connectors.targets import open_sink\n"
            f"d = tempfile.mkdtemp()\nflags = {{'target': {target!r}, 'data_dir': d}}\n"
            "open_sink(store_target(resolve_settings(flags, COMMON_SETTINGS, section='t', env={}, cwd=d)), 'c')\n"
            f"print(json.dumps([m for m in {CLIENTS!r} if m in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    assert set(json.loads(done.stdout)) <= OWN_CLIENT[target]


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A Qdrant Edge collection of 12 shapes by the tiny model, and an ONNX cache that holds its export."""
    from imagegen import write_shape_folder

    root = tmp_path_factory.mktemp("cli-imports")
    env = {"CLIP_INGEST_CACHE": str(root / "cache")}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLIP_INGEST_CACHE", env["CLIP_INGEST_CACHE"])
        result = CliRunner().invoke(ingest_main, [str(write_shape_folder(root / "photos", n=12)), "--target", "qdrant-edge",
                                                  "--data-dir", str(root / "data"), "--model", TINY_SPEC, "--runtime", "onnx", "-q"])
    assert result.exit_code == 0, result.output
    return root / "data", env


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_a_text_search_imports_only_its_backend_and_runtime(collection, runtime):
    data_dir, env = collection
    # the exporter (onnx) is needed to build a cache entry, not to run one; onnxruntime only by onnx
    # (torch and open_clip are loaded on the onnx path of a model without ONNX towers, like this
    # one: its cache entry is found by the hash of its torch weights; test_torch_free runs the
    # starter, which carries its towers, with neither)
    absent = ["ray", "fastapi", "pymilvus", "qdrant_client", "onnx"] + (["onnxruntime"] if runtime == "torch" else [])
    report, output = probe("clip_ingest.connectors.cli.search:main", ",".join(absent), "query", "--text", "a red circle",
                           "--target", "qdrant-edge", "--data-dir", str(data_dir), "--model", TINY_SPEC,
                           "--runtime", runtime, "-k", "3", "--jsonl", env=env)
    assert report == {"code": 0, "imported": []}, output
    assert len(output.splitlines()) == 3


def test_the_status_of_a_collection_imports_no_heavy_library(collection):
    data_dir, env = collection
    report, output = probe("clip_ingest.connectors.cli.clip_ingest:main", ",".join(HEAVY), "status", "--target", "qdrant-edge",
                           "--data-dir", str(data_dir), env=env)
    assert report == {"code": 0, "imported": []}, output
