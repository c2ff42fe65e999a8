"""Pseudo-captions: top-k mining on a planted pool, templates, and the mine-captions stage."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clip_ingest.model.data import Sample, read_manifest
from clip_ingest.model.mining import MineConfig, dedupe, run_mine_captions, top_k_captions, with_template_captions
from model_helpers import TINY, labelled_images


def test_top_k_keeps_planted_captions_above_threshold_best_first():
    images = torch.eye(4)[:3]
    planted = F.normalize(torch.tensor([[1.0, 0, 0, 0], [0.9, 0.1, 0, 0], [0, 0, 1.0, 0]]), dim=-1)
    others = F.normalize(torch.tensor([[0.2, 0.2, 0.2, 1.0]]).repeat(5, 1), dim=-1)  # cos ~0.19 to every image
    pool = torch.cat([planted, others])
    texts = ["img0 a", "img0 b", "img2"] + [f"other {i}" for i in range(5)]
    mined = top_k_captions(images, pool, texts, k=20, threshold=0.27)
    assert mined == [["img0 a", "img0 b"], [], ["img2"]]
    assert top_k_captions(images, pool, texts, k=1, threshold=0.27)[0] == ["img0 a"]
    assert len(top_k_captions(images, pool, texts, k=3, threshold=0.0)[1]) == 3  # no threshold: k captions


def test_templates_and_dedupe():
    out = with_template_captions([Sample("a.png", "golden_retriever", ("a dog",)), Sample("b.png")], ("a photo of a {label}.",))
    assert out[0].captions == ("a dog", "a photo of a golden retriever.") and out[1].captions == ()
    assert dedupe([" x", "y", "x", ""]) == ["x", "y"]


def test_mine_captions_stage_writes_a_manifest(tmp_path):
    images = labelled_images(tmp_path / "imgs")
    pool = tmp_path / "pool.txt"
    pool.write_text("a red circle\na blue square\na red circle\n\na yellow triangle\n")
    result = run_mine_captions(
        MineConfig(TINY, str(images), str(pool), str(tmp_path / "mined.jsonl"), k=2, threshold=-1.0, device="cpu")
    )
    assert result.pool_size == 3 and result.images == 12 and result.with_captions == 12
    samples = read_manifest(result.output)
    assert all(len(s.captions) == 2 and s.label for s in samples)
    high = run_mine_captions(
        MineConfig(TINY, str(images), str(pool), str(tmp_path / "none.jsonl"), threshold=1.01, device="cpu")
    )
    assert high.with_captions == 0
