"""Every training command the docs give, run as written: the quickstart of README.md's "Train
your own" section and the chain of docs/training.md.

* The offline block (your own photos, in the README) runs for real, from a folder holding a small generated
  ``./photos``, with the bundled starter as base.
* The online block (the paper's chain on ViT-B-16:openai, docs/training.md) runs offline as far as it can: its
  manifest commands for real, on a generated data root; every other line through the real
  parser and recipe, each reading only files an earlier line wrote; and its first command that
  needs the weights fails at once, saying so, instead of with a missing file.
* The research block's script is run line by line by
  ``test_model_cli.test_the_experiment_script_runs_each_step_once_and_stops_at_a_failure``;
  here it parses, and its ``update-doc`` line goes through the real parser.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from clip_ingest.model.cli import cli
from clip_ingest.model.recipe import expand, load_recipe, out_root_of, table
from imagegen import make_shape_image
from test_adapt import labelled_folder

REPO = Path(__file__).resolve().parents[2]


def bash_blocks(doc: str, heading: str) -> list[list[str]]:
    """The ```bash blocks of ``doc``'s section ``heading``, each as its lines (comments included)."""
    text = (REPO / doc).read_text(encoding="utf-8")
    start = text.index(heading)
    level = heading.split(" ", 1)[0]
    end = text.find(f"\n{level} ", start + 1) % (len(text) + 1)  # the last section runs to the end
    return [block.strip().splitlines() for block in re.findall(r"```bash\n(.*?)```", text[start:end], re.S)]


def training_blocks() -> list[list[str]]:
    """The README's training quickstart, then the blocks of docs/training.md's paper's chain."""
    return [*bash_blocks("README.md", "## Train your own: `clip-model`"),
            *bash_blocks("docs/training.md", "## The paper's chain, step by step")]


def commands(block: list[str]) -> list[list[str]]:
    return [shlex.split(line, comments=True) for line in block if line.strip() and not line.startswith("#")]


def test_the_section_has_three_blocks_each_saying_whether_it_needs_the_network():
    assert [b[0].split(":")[0] for b in bash_blocks("README.md", "## Train your own: `clip-model`")] == ["# offline"]
    blocks = training_blocks()
    assert [b[0].split(":")[0] for b in blocks] == ["# offline", "# ONLINE", "# offline, hours on 2 CPU cores"]
    assert all(cmd[0] in ("clip-model", "CLIP_INGEST_DATA=../shared/data") for b in blocks for cmd in commands(b))


def test_the_offline_block_runs_as_written_on_a_small_folder(tmp_path, monkeypatch):
    photos = labelled_folder(tmp_path / "photos", per_label=2)
    for folder in photos.glob("yellow_*"):  # 9 labels, 18 photos: 5 labels train, 2 validate, 2 held out
        shutil.rmtree(folder)
    monkeypatch.chdir(tmp_path)
    for cmd in commands(training_blocks()[0]):
        result = CliRunner().invoke(cli, cmd[1:])
        assert result.exit_code == 0, f"{' '.join(cmd)}:\n{result.output}"
    assert "Verdict:" in (tmp_path / "runs/adapt/adapt.md").read_text()


def _data_root(root: Path) -> Path:
    """Two ETH-80 objects and a two-image Flickr8k-train in the shared data layout."""
    for n in (1, 2):
        folder = root / "eth80" / "cup" / f"cup{n}"
        folder.mkdir(parents=True)
        make_shape_image("red", "circle", variant=n).save(folder / f"cup{n}-000-000.jpg")
    flickr = root / "flickr8k_train"
    (flickr / "images").mkdir(parents=True)
    lines = ["image,caption"]
    for i in range(2):
        make_shape_image("blue", "square", variant=i).save(flickr / "images" / f"{i}.jpg")
        lines.append(f"{i}.jpg,a blue square number {i}")
    (flickr / "captions.csv").write_text("\n".join(lines) + "\n")
    return root


def _reads(cmd: list[str]) -> list[str]:
    """The files a recipe command reads: its stage's ``data`` and ``val_data``, or mining's ``data`` and ``pool``."""
    ctx = cli.commands[cmd[1]].make_context(cmd[1], cmd[2:])
    recipe = load_recipe(ctx.params.get("recipe"))
    name = "mine-captions" if cmd[1] == "mine-captions" else cmd[1]
    values = expand(table(recipe, name), out_root_of(recipe, None))
    keys = {"mine-captions": ("data", "pool"), "finetune": ("data", "val_data"), "realign": ("data", "val_data")}
    found: list[str] = []
    for key in keys.get(cmd[1], ()):
        value = values.get(key)
        found += [value] if isinstance(value, str) else list(value or [])
    return found


def test_the_online_block_runs_offline_up_to_the_download_and_says_why(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLIP_INGEST_DATA", str(_data_root(tmp_path / "data")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    written: set[str] = set()
    first_online = None
    for cmd in commands(training_blocks()[1]):
        if cmd[1] == "manifest":
            result = CliRunner().invoke(cli, cmd[1:])
            assert result.exit_code == 0, result.output
            written.add(cmd[cmd.index("--output") + 1])
            continue
        missing = [path for path in _reads(cmd) if path not in written]
        assert not missing, f"{' '.join(cmd)} reads {missing}, which no earlier line writes"
        if cmd[1] == "mine-captions":
            recipe = load_recipe("eth80-mcip")
            written.add(expand(table(recipe, "mine-captions"), out_root_of(recipe, None))["output"])
        if first_online is None:
            first_online = CliRunner().invoke(cli, cmd[1:])
    assert first_online is not None and first_online.exit_code == 1
    assert "cannot download the weights for 'ViT-B-16:openai'" in first_online.output


def test_the_research_block_parses(monkeypatch):
    monkeypatch.chdir(REPO)
    block = commands(training_blocks()[2])
    script = REPO / block[0][2]
    assert block[0][1:] == ["bash", "model/recipes/photo-ssl-mcip.sh"] and script.is_file()
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    update = block[1]
    table = update.pop()  # written by the script; README.md stands in for it
    ctx = cli.commands[update[1]].make_context(update[1], [*update[2:], "README.md"])
    assert table == "runs/photo-ssl-mcip/v4/experiment.md"
    assert ctx.params["block"] == "photo-ssl-mcip-v4" and ctx.params["doc"] == "docs/results/photo-ssl-mcip.md"
    assert "<!-- clip-model:photo-ssl-mcip-v4 -->" in (REPO / ctx.params["doc"]).read_text(encoding="utf-8")


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
