"""Generated blocks of a README or model card: replaced exactly, or the document is left untouched."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from clip_ingest.model.cli import cli
from clip_ingest.model.doc_blocks import DocBlockError, replace_block, replace_text

DOC = "intro\n<!-- clip-model:exp -->\n| old | 1 |\n<!-- /clip-model:exp -->\n\noutro, <!-- clip-model:other -->\n"


def test_only_the_named_block_changes():
    out = replace_text(DOC, "exp", "| new | 2 |\n\n")
    assert out == "intro\n<!-- clip-model:exp -->\n| new | 2 |\n<!-- /clip-model:exp -->\n\noutro, <!-- clip-model:other -->\n"
    assert replace_text(out, "exp", "| new | 2 |") == out  # idempotent


@pytest.mark.parametrize("doc, why", [
    ("no markers at all\n", "found 0 and 0"),
    (DOC + "<!-- clip-model:exp -->\n", "found 2 and 1"),
    ("<!-- /clip-model:exp -->\nx\n<!-- clip-model:exp -->\n", "comes before"),
])
def test_missing_repeated_or_reversed_markers_are_refused(doc, why):
    with pytest.raises(DocBlockError, match=why):
        replace_text(doc, "exp", "table")


def test_block_names_cannot_carry_markup():
    with pytest.raises(DocBlockError, match="block name"):
        replace_text(DOC, "exp --> <script>", "table")


def test_the_file_is_rewritten_only_when_its_block_changes(tmp_path):
    doc, table = tmp_path / "README.md", tmp_path / "experiment.md"
    doc.write_text(DOC)
    table.write_text("| new | 2 |\n")
    assert replace_block(doc, "exp", table) is True
    assert "| new | 2 |" in doc.read_text() and "| old | 1 |" not in doc.read_text()
    assert replace_block(doc, "exp", table) is False
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "experiment.md"]  # no temporary left


def test_the_command_exits_1_and_keeps_the_document_when_markers_are_missing(tmp_path):
    doc, table = tmp_path / "MODEL_CARD.md", tmp_path / "eval.md"
    doc.write_text("a card without markers\n")
    table.write_text("| metric | a |\n")
    result = CliRunner().invoke(cli, ["update-doc", str(doc), "starter", str(table)])
    assert result.exit_code == 1
    assert "<!-- clip-model:starter -->" in result.output
    assert doc.read_text() == "a card without markers\n"


@pytest.mark.parametrize("doc, block", [
    ("docs/results/photo-ssl-mcip.md", "photo-ssl-mcip-v4"), ("docs/results/photo-ssl-mcip.md", "photo-ssl-mcip-v2"),
    ("docs/experiments.md", "photo-ssl-mcip-v3"), ("docs/experiments.md", "photo-ssl-mcip"),
    ("docs/experiments.md", "photo-mcip"),
])
def test_the_blocks_of_the_experiments_can_be_regenerated(doc, block):
    """The commands the docs and the recipes give (``clip-model update-doc DOC BLOCK ...``) find their block."""
    text = (Path(__file__).resolve().parents[2] / doc).read_text(encoding="utf-8")
    assert "| regenerated |" in replace_text(text, block, "| regenerated |")


def test_every_update_doc_command_the_docs_give_finds_its_block():
    """Each ``clip-model update-doc DOC BLOCK TABLE`` written in the docs, the recipes or the
    command's help names a document of the checkout that holds that block exactly once."""
    import re

    repo = Path(__file__).resolve().parents[2]
    sources = [repo / "README.md", *sorted((repo / "docs").rglob("*.md")), *sorted((repo / "model" / "recipes").glob("*")),
               repo / "model" / "cli.py"]
    found = {(doc, block) for path in sources
             for doc, block in re.findall(r"clip-model update-doc\s+([\w./-]+\.md)\s+([\w.-]+)\s", path.read_text(encoding="utf-8"))}
    assert ("docs/results/photo-ssl-mcip.md", "photo-ssl-mcip-v4") in found
    for doc, block in found:
        assert "| regenerated |" in replace_text((repo / doc).read_text(encoding="utf-8"), block, "| regenerated |")
