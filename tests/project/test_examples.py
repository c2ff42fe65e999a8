"""Every script in examples/ runs offline on the tiny model (in tmp dirs) and prints the expected hits.

The Python examples run in-process through their ``main(argv)`` (a subprocess per script would pay
the torch import each time); one of them, and the cron wrapper with the real ``clip-ingest``, also
run as real subprocesses.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
VENV_BIN = Path(sys.executable).parent
TINY_ARCH = "clip-ingest-tiny"
TINY = f"{TINY_ARCH}:random"
HIT_LINE = re.compile(r"^\s+\d+\. (-?\d+\.\d+)\s+(.+)$", re.M)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def example_env(**extra: str) -> dict[str, str]:
    """Offline, single-threaded, no telemetry; the venv's commands first on PATH."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", HAYSTACK_TELEMETRY_ENABLED="False")
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def run_example(script: str, *args: str, cwd: Path) -> str:
    """Run ``examples/script`` as a subprocess with the tiny model on the CPU; its stdout."""
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--model", TINY, "--device", "cpu", *args],
        cwd=cwd, env=example_env(), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, f"{script} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture
def example(monkeypatch, capsys, tmp_path):
    """``example(script, *args)``: run the script's ``main`` in-process in ``tmp_path``; its stdout."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(EXAMPLES))

    def run(script: str, *args: str) -> str:
        spec = importlib.util.spec_from_file_location(f"example_{Path(script).stem}", EXAMPLES / script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        capsys.readouterr()
        module.main(["--model", TINY, "--device", "cpu", *args])
        return capsys.readouterr().out

    return run


def hit_paths(output: str) -> list[str]:
    return [path for _, path in HIT_LINE.findall(output)]


def planted_and_near_duplicate(folder: Path, target_dir: Path) -> tuple[str, str]:
    """A planted image of ``folder`` and a JPEG re-encoding of it (same picture, other bytes) in ``target_dir``."""
    planted = sorted(folder.rglob("*.png"))[5]
    copy = target_dir / f"{planted.stem}-copy.jpg"
    Image.open(planted).convert("RGB").save(copy, "JPEG", quality=90)
    return str(planted), str(copy)


def test_python_api_ingests_and_filters(shape_folder, tmp_path, example):
    args = ("--photos", str(shape_folder), "--data-dir", str(tmp_path / "data"))
    out = run_example("python_api.py", *args, "--query", "a red circle", "--label", "circle", "-k", "3", cwd=tmp_path)
    assert "ingested: 12 new, 0 unchanged, 0 failed; 12 points" in out
    paths = hit_paths(out)
    assert len(paths) == 3 and all(Path(p).parent.name == "circle" for p in paths), out
    again = example("python_api.py", *args)
    assert "ingested: 0 new, 12 unchanged" in again, "a second run is incremental"


def test_more_like_this_finds_the_near_duplicate(shape_folder, tmp_path, example):
    planted, copy = planted_and_near_duplicate(shape_folder, Path(sorted(shape_folder.rglob("*.png"))[5]).parent)
    out = example("more_like_this.py", "--photos", str(shape_folder), "--data-dir", str(tmp_path / "data"), "--like", planted)
    paths = hit_paths(out)
    assert paths[0] == copy and planted not in paths, out


@pytest.mark.parametrize("script", ["langchain_retrieval.py", "llamaindex_retrieval.py"])
def test_framework_examples_retrieve_the_planted_image(script, shape_folder, tmp_path, example):
    pytest.importorskip({"langchain_retrieval.py": "langchain_core", "llamaindex_retrieval.py": "llama_index.core"}[script])
    planted, copy = planted_and_near_duplicate(shape_folder, tmp_path)
    out = example(script, "--photos", str(shape_folder), "--image", copy)
    assert "indexed 12 images" in out
    assert hit_paths(out)[0] == planted, out
    text = example(script, "--photos", str(shape_folder), "--query", "a red circle", "-k", "2")
    assert len(hit_paths(text)) == 2, text


def test_train_and_swap_replaces_the_collection_model(shape_folder, tmp_path, example):
    data = str(tmp_path / "data")
    example("python_api.py", "--photos", str(shape_folder), "--data-dir", data)
    out = example("train_and_swap.py", "--photos", str(shape_folder), "--data", str(shape_folder),
                  "--data-dir", data, "--out", str(tmp_path / "train"), "--swap", "recreate")
    assert re.search(rf"collection examples: was {TINY_ARCH}@\S+, now realign@\S+", out), out
    assert "swapped: 12 images embedded, 12 points" in out
    assert (tmp_path / "train" / "realign" / "open_clip_config.json").is_file()


# -- cron wrapper
CRON = EXAMPLES / "cron_alert.sh"


def run_cron(*args: str, cwd: Path, path_prefix: Path | None = None) -> tuple[subprocess.CompletedProcess, Path]:
    alerts = cwd / "alerts.log"
    env = example_env(CLIP_INGEST_ALERT_CMD=f'echo "$CLIP_INGEST_EXIT_CODE $CLIP_INGEST_ALERT_MESSAGE" >> {alerts}')
    if path_prefix is not None:
        env["PATH"] = f"{path_prefix}{os.pathsep}{env['PATH']}"
    proc = subprocess.run(["bash", str(CRON), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    return proc, alerts


def test_cron_wrapper_is_valid_bash():
    subprocess.run(["bash", "-n", str(CRON)], check=True)


def test_cron_wrapper_real_run_alerts_on_failed_files(shape_folder, tmp_path):
    """The real clip-ingest: a broken file makes it exit 3, the wrapper alerts and exits 0."""
    (shape_folder / "circle" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    args = ("--model", TINY, "--device", "cpu", "--data-dir", str(tmp_path / "data"), "-q", str(shape_folder))
    proc, alerts = run_cron(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert alerts.read_text().startswith("3 clip-ingest finished but some files failed")
    assert "alert sent" in proc.stdout
    dead_letter = (tmp_path / "data" / "dead-letter").glob("*.jsonl")
    assert any("broken.png" in path.read_text() for path in dead_letter), "the run itself was real"


def test_cron_wrapper_real_run_alerts_when_a_prune_is_refused(shape_folder, tmp_path):
    """The real clip-ingest: an emptied source (an unmounted disk) with --prune exits 5, nothing is
    pruned, the wrapper alerts and exits 0."""
    args = ("--model", TINY, "--device", "cpu", "--data-dir", str(tmp_path / "data"), "-q", "--prune", str(shape_folder))
    assert run_cron(*args, cwd=tmp_path)[0].returncode == 0
    for child in shape_folder.iterdir():
        shutil.rmtree(child)
    proc, alerts = run_cron(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert alerts.read_text().startswith("5 clip-ingest finished but refused to prune")
    assert "is empty" in proc.stderr


def _fake_clip_ingest(tmp_path: Path, code: int) -> Path:
    """A folder holding a ``clip-ingest`` that only exits with ``code`` (for the paths a real run cannot reach cheaply)."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    fake = fake_bin / "clip-ingest"
    fake.write_text(f"#!/bin/sh\nexit {code}\n")
    fake.chmod(0o755)
    return fake_bin


def test_cron_wrapper_is_quiet_on_success(tmp_path):
    proc, alerts = run_cron("/images", cwd=tmp_path, path_prefix=_fake_clip_ingest(tmp_path, 0))
    assert proc.returncode == 0 and not alerts.exists() and not proc.stderr


@pytest.mark.parametrize("code", [1, 2, 4])
def test_cron_wrapper_fails_loudly(code, tmp_path):
    proc, alerts = run_cron("/images", cwd=tmp_path, path_prefix=_fake_clip_ingest(tmp_path, code))
    assert proc.returncode == code
    assert f"clip-ingest FAILED with exit {code}" in proc.stderr
    assert alerts.read_text().startswith(f"{code} clip-ingest FAILED")


def test_the_readme_framework_snippet_runs_as_written(tmp_path):
    """The README's adapters block, run from the checkout root with the bundled starter model:
    each query finds the picture it names."""
    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if b.startswith("# LangChain"))
    script = tmp_path / "snippet.py"
    script.write_text(block)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HAYSTACK_TELEMETRY_ENABLED": "False"}
    done = subprocess.run([sys.executable, str(script)], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = done.stdout.split()
    assert len(printed) == 3 and all(Path(root, p).is_file() for p in printed)
    assert ["penguin" in printed[0], "apple" in printed[1], "penguin" in printed[2]] == [True] * 3
