"""CLI latency: wall time of ``clip-search`` / ``clip-ingest`` commands end to end, first call and repeated.

Run ``python -m benchmarks.cli_latency``. Each command runs as a user runs it, in a fresh
process (the venv's console script), on a small Qdrant Edge collection ingested first with the
model asked for (default: the shipped starter): ``--help`` of the tools, and ``clip-search
--text`` on the default runtime (``auto``: ONNX Runtime without torch for a model with ONNX
towers, like the starter), ``--runtime torch`` and ``--runtime onnx``, each ``--repeats``
times, interleaved.
"first" is each command's first run here, "repeated" the median of the others; the ONNX cache
(``CLIP_INGEST_CACHE``) is built by the ingestion, as a user's ``clip-ingest --runtime onnx``
builds it, and one more ONNX query on an empty cache shows the one-off export of a first use.

Before/after cannot be measured in one run, so the report puts beside the wall times what
a search pays for imports in a fresh interpreter: the CLI module alone, and torch + open_clip
(what the torch runtime, and ONNX on a model without towers, loads), and what the
interpreter's exit costs once they are loaded (its wall time less startup and import: the
teardown of ~2,800 modules). Their ratios are the reference: how much of a search they are.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

from . import common

STARTER = "starter"
TINY = "clip-ingest-tiny:random"
#: the aim for ``clip-search --text`` with the starter on a quiet 2-core machine: a shell tool answers in about a second
TARGET_S = 1.5
#: the reference rows: what a fresh interpreter pays to start, to import the search CLI and
#: torch + open_clip (timed inside it), and to exit once those are loaded
STARTUP = "python startup and exit (-c pass)"
CLI_IMPORT = "import clip_ingest.connectors.cli.search"
TORCH_IMPORT = "import torch, open_clip"
TEARDOWN = "exit after import torch, open_clip (teardown)"


def tool(name: str) -> list[str]:
    """The console script ``name`` of this interpreter's environment (what a user runs), else its module's main."""
    script = Path(sys.executable).parent / name
    if script.is_file():
        return [str(script)]
    module = {"clip-search": "search", "clip-ingest": "clip_ingest"}[name]
    return [sys.executable, "-c", f"from clip_ingest.connectors.cli.{module} import main; main()"]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wall(command: Sequence[str], env: dict[str, str]) -> tuple[float, float]:
    """``(wall seconds from start to exit, CPU seconds)`` of ``command`` (its output discarded; CPU
    time is less sensitive to a busy machine); a failure stops the benchmark."""
    cpu, start = children_cpu(), common.clock()
    done = subprocess.run(list(command), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = common.clock() - start
    if done.returncode != 0:
        raise SystemExit(f"error: {' '.join(command)} exited {done.returncode}: {done.stderr[-2000:]}")
    return seconds, children_cpu() - cpu


def import_seconds(statement: str, env: dict[str, str]) -> tuple[float, float]:
    """``(seconds of statement timed inside a fresh interpreter, wall seconds of that interpreter)``."""
    code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    start = common.clock()
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1]), common.clock() - start


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--model", help=f"model of the collection and the queries [default: {STARTER}; smoke: {TINY}]")
    parser.add_argument("--n", type=int, help="images in the collection [default: 24; smoke: 6]")
    parser.add_argument("--repeats", type=int, help="runs of each command [default: 3; smoke: 2]")
    parser.add_argument("--text", default="a red car", help="the query text [default: 'a red car']")
    args = parser.parse_args(argv)
    model = args.model or (TINY if args.smoke else STARTER)
    n = args.n or (6 if args.smoke else 24)
    repeats = max(2, args.repeats or (2 if args.smoke else 3))
    work = common.Workdir.create(args.workdir)
    try:
        env = {**os.environ, "CLIP_INGEST_CACHE": str(work.path / "cache")}
        for key in [k for k in env if k.startswith("CLIP_INGEST_") and k != "CLIP_INGEST_CACHE"]:
            env.pop(key)  # the user's settings would change what is measured
        store = ["--target", "qdrant-edge", "--data-dir", str(work.path / "data"), "--model", model]
        common.generate_images(work.path / "images", n, size=128)
        ingest_s, _ = wall([*tool("clip-ingest"), str(work.path / "images"), *store, "--runtime", "onnx", "-q"], env)
        query = [*tool("clip-search"), "query", "--text", args.text, *store, "-k", "5"]
        commands = {
            "clip-search --help": [*tool("clip-search"), "--help"],
            "clip-search query --help": [*tool("clip-search"), "query", "--help"],
            "clip-ingest --help": [*tool("clip-ingest"), "--help"],
            "clip-search --text (default runtime)": query,
            "clip-search --text (torch)": [*query, "--runtime", "torch"],
            "clip-search --text (onnx)": [*query, "--runtime", "onnx"],
        }
        runs: dict[str, list[float]] = {name: [] for name in [*commands, STARTUP, CLI_IMPORT, TORCH_IMPORT, TEARDOWN]}
        cpu: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(repeats):  # interleaved: a change of load touches every command alike
            for name, command in commands.items():
                seconds, cpu_seconds = wall(command, env)
                runs[name].append(seconds)
                cpu[name].append(cpu_seconds)
            runs[STARTUP].append(wall([sys.executable, "-c", "pass"], env)[0])
            runs[CLI_IMPORT].append(import_seconds(CLI_IMPORT, env)[0])
            inside, whole = import_seconds(TORCH_IMPORT, env)
            runs[TORCH_IMPORT].append(inside)
            runs[TEARDOWN].append(max(0.0, whole - inside - runs[STARTUP][-1]))
        fresh = {**env, "CLIP_INGEST_CACHE": str(work.path / "cache-empty")}
        first_use_s, _ = wall([*query, "--runtime", "onnx"], fresh)
        shutil.rmtree(work.path / "cache-empty", ignore_errors=True)
    finally:
        work.close()

    def row(name: str) -> dict[str, Any]:
        first, *rest = runs[name]
        return {"what": name, "first_s": first, "repeated_s": common.median(rest), "repeated_min_s": min(rest),
                "runs": len(runs[name])}

    rows = [{**row(name), "repeated_cpu_s": common.median(cpu[name][1:])} for name in commands]
    reference = [row(name) for name in (STARTUP, CLI_IMPORT, TORCH_IMPORT, TEARDOWN)]
    first_use = [{"what": "clip-search --text (onnx), empty ONNX cache: exports the model once", "wall_s": first_use_s}]
    by_name = {r["what"]: r for r in rows + reference}
    torch_import = by_name[TORCH_IMPORT]["repeated_s"]
    onnx_query = by_name["clip-search --text (onnx)"]["repeated_s"]
    torch_query = by_name["clip-search --text (torch)"]["repeated_s"]
    default_query = by_name["clip-search --text (default runtime)"]["repeated_s"]
    ratios = [
        common.Ratio("clip-search --text default runtime, repeated, seconds", default_query,
                     TARGET_S if model == STARTER else None, at_most=True),
        common.Ratio("clip-search --text onnx, repeated, seconds", onnx_query),
        common.Ratio("clip-search --text torch, repeated, seconds", torch_query),
        common.Ratio("torch query wall / default query wall", torch_query / default_query),
        common.Ratio("import torch + open_clip / onnx query wall", torch_import / onnx_query),
        common.Ratio("import torch + open_clip / torch query wall", torch_import / torch_query),
        common.Ratio("exit after torch + open_clip / onnx query wall", by_name[TEARDOWN]["repeated_s"] / onnx_query),
        common.Ratio("clip-search --help / onnx query wall", by_name["clip-search --help"]["repeated_s"] / onnx_query),
    ]
    config = {"model": model, "images": n, "repeats": repeats, "target": "qdrant-edge", "text": args.text,
              "ingest_s": round(ingest_s, 2)}
    notes = ["first = each command's first run in this benchmark (files already in the OS page cache are not evicted)"]
    tables = {"commands, wall end to end (s)": rows, "reference: a fresh interpreter (s)": reference,
              "first use of --runtime onnx (s)": first_use}
    return common.report("CLI latency", config, tables, ratios, args.json, notes)


if __name__ == "__main__":
    main()
