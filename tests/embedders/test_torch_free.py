"""The torch-free runtime path: CLIP's tokenizer and the eval preprocessing in plain Python, numpy
and Pillow give open_clip's exact numbers; the starter's ONNX towers are its weights; and a
process that cannot import torch, torchvision or open_clip ingests and searches with the starter."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from open_clip.tokenizer import SimpleTokenizer, default_bpe
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image

from clip_ingest.connectors.calibration import load_text_calibration
from clip_ingest.connectors.clip_tokenizer import VOCAB_FILE, ClipTokenizer
from clip_ingest.connectors.factory import STARTER_DIR
from clip_ingest.connectors.onnx_embedder import OnnxEmbedder
from clip_ingest.connectors.pixels import PillowTransform
from clip_ingest.connectors.runtime import choose_runtime, load_embedder

import httpx

from imagegen import write_shape_folder
from serve_helpers import free_port, serve_process

TRICKY = ["", "   ", "a photo of a cat", "A PHOTO OF A CAT", "it's 5 o'clock, isn't it?", "naïve café — déjà vu",
          "&amp;lt;b&amp;gt; html &quot;escaped&quot;", "emoji 🐱🚀 and ZWJ 👩‍👩‍👧", "日本語のテキスト", "ﬁne ligatures",
          "x" * 500, "1234567890 3.14", "<start_of_text> inside", "tab\tnew\nline", "Ça, c'est «français»"]


@pytest.mark.parametrize("clean", ["lower", "whitespace", "canonicalize"])
@pytest.mark.parametrize("context_length", [77, 32])
def test_tokens_are_open_clips_on_tricky_text(clean: str, context_length: int) -> None:
    ours, theirs = ClipTokenizer(context_length, clean), SimpleTokenizer(context_length=context_length, clean=clean)
    assert np.array_equal(ours(TRICKY), theirs(TRICKY).numpy())


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(max_size=120), min_size=1, max_size=4))
def test_tokens_are_open_clips_on_any_text(texts: list[str]) -> None:
    assert np.array_equal(_TOKENIZER(texts), _REFERENCE(texts).numpy())


_TOKENIZER, _REFERENCE = ClipTokenizer(77), SimpleTokenizer(context_length=77)


def test_the_vocabulary_is_open_clips_file_and_configs_map_to_tokenizers() -> None:
    digest = [hashlib.sha256(Path(path).read_bytes()).hexdigest() for path in (VOCAB_FILE, default_bpe())]
    assert digest[0] == digest[1]
    assert ClipTokenizer.for_text_config({"context_length": 32}).context_length == 32
    assert ClipTokenizer.for_text_config({}).context_length == 77
    assert ClipTokenizer.for_text_config({"hf_tokenizer_name": "bert-base-uncased"}) is None
    assert ClipTokenizer.for_text_config({"tokenizer_kwargs": {"reduction_mask": "simple"}}) is None


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(3)
    shapes = [(97, 151), (203, 64), (64, 64), (65, 64), (300, 299), (17, 40)]
    images = [Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)) for shape in shapes]
    return [*images, images[0].convert("L"), images[1].convert("RGBA"), images[2].convert("P")]


@pytest.mark.parametrize("resize_mode", ["shortest", "squash"])
@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
@pytest.mark.parametrize("size", [32, 64, (48, 48)])
def test_pixels_are_open_clips(resize_mode: str, interpolation: str, size) -> None:
    cfg = PreprocessCfg(size=size, resize_mode=resize_mode, interpolation=interpolation)
    reference = image_transform_v2(cfg, is_train=False)
    ours = PillowTransform.for_preprocess_cfg(cfg.__dict__)
    assert ours is not None
    for image in _images():
        expected, got = reference(image).numpy(), ours(image)
        assert got.dtype == np.float32 and got.shape == expected.shape
        assert float(np.abs(got - expected).max()) <= 1e-5


@pytest.mark.parametrize("cfg", [{"size": (48, 64)}, {"resize_mode": "longest"}, {"interpolation": "lanczos"}])
def test_other_preprocessing_is_left_to_open_clip(cfg) -> None:
    assert PillowTransform.for_preprocess_cfg({**PreprocessCfg().__dict__, **cfg}) is None


def test_the_starters_onnx_towers_are_its_weights(shape_folder: Path, starter_embedder) -> None:
    """A retrained starter must ship re-exported towers: same model id, same vectors."""
    onnx, torch_side = OnnxEmbedder(STARTER_DIR), starter_embedder
    assert onnx.model_id == torch_side.model_id
    paths = sorted(str(p) for p in shape_folder.rglob("*.png"))
    texts = ["a red circle", "a photo of a leopard", TRICKY[7]]
    for a, b in ((onnx.embed_images(paths), torch_side.embed_images(paths)), (onnx.embed_texts(texts), torch_side.embed_texts(texts))):
        assert float((a * b).sum(axis=1).min()) > 1 - 1e-5


def test_the_onnx_starter_carries_its_text_calibration(starter_embedder) -> None:
    """Calibrated text search (--min-relevance) works on the default runtime: the calibration
    shipped in the model folder reaches the ONNX embedder as it reaches the torch one."""
    onnx, torch_side = load_text_calibration(OnnxEmbedder(STARTER_DIR)), load_text_calibration(starter_embedder)
    assert onnx is not None and onnx == torch_side


def test_auto_runs_onnx_where_the_model_has_towers(tmp_path: Path) -> None:
    assert choose_runtime("starter") == "onnx"
    assert choose_runtime("clip-ingest-tiny:random") == "torch"
    assert choose_runtime("clip-ingest-tiny:random", quantize="int8") == "onnx"
    assert choose_runtime("starter", device="cuda") == "torch"
    assert isinstance(load_embedder("starter"), OnnxEmbedder)


#: blocks torch, torchvision and open_clip, then runs a CLI (module:attribute ARGS...)
BLOCKED_RUN = """
import importlib, importlib.abc, sys
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] in ("torch", "torchvision", "open_clip"):
            raise ImportError(f"{name} is not installed")
sys.meta_path.insert(0, Blocked())
module, _, attribute = sys.argv[1].partition(":")
getattr(importlib.import_module(module), attribute)(sys.argv[2:])
"""


def test_ingest_search_and_serve_run_without_torch(tmp_path: Path) -> None:
    photos = write_shape_folder(tmp_path / "photos", n=12)
    store = ["--target", "qdrant-edge", "--data-dir", str(tmp_path / "data")]
    env = {**os.environ, "CLIP_INGEST_CACHE": str(tmp_path / "cache")}

    def run(entry: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", BLOCKED_RUN, entry, *args], capture_output=True, text=True, env=env,
                              timeout=300)

    ingest = run("clip_ingest.connectors.cli.clip_ingest:main", str(photos), *store, "-q")
    assert ingest.returncode == 0, ingest.stderr
    query = run("clip_ingest.connectors.cli.search:main", "query", "--text", "a red circle", *store, "-k", "3", "--jsonl")
    assert query.returncode == 0, query.stderr
    hits = [json.loads(line) for line in query.stdout.splitlines()]
    assert len(hits) == 3 and all(hit["payload"]["path"].endswith(".png") for hit in hits)
    refused = run("clip_ingest.connectors.cli.search:main", "query", "--text", "x", *store, "--runtime", "torch")
    assert refused.returncode != 0 and "clip-ingest[torch]" in refused.stderr + refused.stdout
    training = run("clip_ingest.model.cli:main", "eval", "-m", "starter")
    assert training.returncode == 1 and "pip install 'clip-ingest[torch]'" in training.stderr, training.stderr
    port = free_port()
    serve = [sys.executable, "-c", BLOCKED_RUN, "clip_ingest.connectors.cli.search:main", "serve", *store, "--port", str(port)]
    with serve_process(serve, port):
        answer = httpx.get(f"http://127.0.0.1:{port}/v1/search", params={"text": "a red circle", "k": 3}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert [hit["id"] for hit in answer.json()["hits"]] == [hit["id"] for hit in hits]
