"""The open_clip embedder and model-spec resolution, on real (tiny, random-weight) open_clip models."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from badfiles import exif_rotated_jpeg, jpeg_bytes
from clip_ingest.connectors import Embedder, ImageDecodeError, ModelLoadError, parse_model_spec
from clip_ingest.connectors.factory import load_model
from clip_ingest.connectors.openclip_embedder import OpenClipEmbedder
from imagegen import make_shape_image, write_shape_folder


def test_implements_the_embedder_protocol(tiny_embedder):
    assert isinstance(tiny_embedder, Embedder)
    assert tiny_embedder.dim == 32
    assert tiny_embedder.model_id.startswith("clip-ingest-tiny@")


def test_image_and_text_vectors_share_shape_dtype_and_unit_norm(tiny_embedder, shape_folder):
    paths = sorted(shape_folder.rglob("*.png"))
    images = tiny_embedder.embed_images(paths)
    texts = tiny_embedder.embed_texts(["a red circle", "a blue square", ""])
    assert images.shape == (len(paths), tiny_embedder.dim) and images.dtype == np.float32
    assert texts.shape == (3, tiny_embedder.dim) and texts.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(images[0], images[1])


def test_all_input_kinds_give_the_same_vector(tiny_embedder, tmp_path):
    data = jpeg_bytes(make_shape_image("red", "circle"))
    path = tmp_path / "x.jpg"
    path.write_bytes(data)
    import io

    vectors = tiny_embedder.embed_images([path, str(path), data, io.BytesIO(data), Image.open(io.BytesIO(data))])
    for v in vectors[1:]:
        np.testing.assert_allclose(v, vectors[0], atol=1e-6)


def test_determinism_across_instances(tiny_embedder, shape_folder):
    other = OpenClipEmbedder("clip-ingest-tiny:random", device="cpu", batch_size=3)
    paths = sorted(shape_folder.rglob("*.png"))[:5]
    assert other.model_id == tiny_embedder.model_id
    np.testing.assert_allclose(other.embed_images(paths), tiny_embedder.embed_images(paths), atol=1e-6)
    np.testing.assert_allclose(other.embed_texts(["a cat"]), tiny_embedder.embed_texts(["a cat"]), atol=1e-6)


def test_batch_size_invariance_one_vs_sixty_four(tmp_path):
    folder = write_shape_folder(tmp_path / "many", n=64, sidecars=False)
    paths = sorted(folder.rglob("*.png"))
    big = OpenClipEmbedder("clip-ingest-tiny:random", device="cpu", batch_size=64)
    batch = big.embed_images(paths)
    alone = np.concatenate([big.embed_images([p]) for p in paths[:5]])
    np.testing.assert_allclose(alone, batch[:5], atol=1e-5)


def test_empty_inputs_give_empty_arrays(tiny_embedder):
    assert tiny_embedder.embed_images([]).shape == (0, tiny_embedder.dim)
    assert tiny_embedder.embed_texts([]).shape == (0, tiny_embedder.dim)
    with pytest.raises(TypeError):
        tiny_embedder.embed_texts("a single string")


def test_bad_image_raises_decode_error(tiny_embedder):
    with pytest.raises(ImageDecodeError):
        tiny_embedder.embed_images([b"not an image"])


def test_exif_rotated_jpeg_embeds_like_the_upright_image(tiny_embedder):
    embedder = tiny_embedder
    upright = make_shape_image("green", "triangle", size=96)
    rotated, upright_v, unrotated = embedder.embed_images(
        [exif_rotated_jpeg(upright), jpeg_bytes(upright, quality=100, subsampling=0),
         jpeg_bytes(upright.transpose(Image.Transpose.ROTATE_90), quality=100, subsampling=0)]
    )
    assert float(rotated @ upright_v) > 0.999
    assert float(rotated @ upright_v) > float(rotated @ unrotated)


@pytest.mark.parametrize(
    "spec, kind, arch, source",
    [
        ("ViT-B-32:random", "random", "ViT-B-32", None),
        ("ViT-B-32:laion2b_s34b_b79k", "pretrained", "ViT-B-32", "laion2b_s34b_b79k"),
        ("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "hf-hub", None, "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"),
    ],
)
def test_spec_parsing(spec, kind, arch, source):
    parsed = parse_model_spec(spec)
    assert (parsed.kind, parsed.arch, parsed.source) == (kind, arch, source)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("ViT-B-33", "Did you mean"),
        ("NoSuchModel", "unknown model architecture"),
        ("ViT-B-32:no_such_tag", "unknown pretrained tag"),
        ("ViT-B-32:/does/not/exist.safetensors", "checkpoint file not found"),
        ("/does/not/exist", "model directory not found"),
        ("hf-hub:justonename", "hf-hub:org/name"),
        ("", "empty model spec"),
    ],
)
def test_spec_errors_are_clear(spec, message):
    with pytest.raises(ModelLoadError, match=message):
        parse_model_spec(spec)


def test_directory_without_config_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="open_clip_config.json"):
        parse_model_spec(str(tmp_path))


def test_offline_download_fails_fast_with_advice(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(ModelLoadError) as info:
        load_model("ViT-B-32:laion2b_s34b_b79k")
    assert time.monotonic() - start < 30  # a guard against retry loops, not a performance assertion
    message = str(info.value)
    assert "cannot download" in message and "ARCH:/path/to/weights.safetensors" in message


def _write_local_dir(tmp_path, loaded):
    out = tmp_path / "export"
    out.mkdir()
    cfg = {"model_cfg": json.loads((loaded_config_path()).read_text()), "preprocess_cfg": loaded.preprocess_cfg}
    (out / "open_clip_config.json").write_text(json.dumps(cfg))
    save_file({k: v.contiguous() for k, v in loaded.model.state_dict().items()}, str(out / "open_clip_model.safetensors"))
    (out / "clip_ingest.json").write_text(json.dumps({"name": "tiny-export"}))
    return out


def loaded_config_path():
    from clip_ingest.connectors.factory import MODEL_CONFIG_DIR

    return MODEL_CONFIG_DIR / "clip-ingest-tiny.json"


def test_checkpoint_file_and_local_dir_reload_give_identical_vectors(tmp_path, tiny_embedder):
    loaded = load_model("clip-ingest-tiny:random")
    with torch.no_grad():  # make the weights differ from the seeded random init
        for p in loaded.model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    ckpt = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in loaded.model.state_dict().items()}, str(ckpt))
    out = _write_local_dir(tmp_path, loaded)
    reference = OpenClipEmbedder.from_loaded(loaded, device="cpu")
    from_file = OpenClipEmbedder(f"clip-ingest-tiny:{ckpt}", device="cpu")
    from_dir = OpenClipEmbedder(str(out), device="cpu")
    images = [make_shape_image("red", "circle"), make_shape_image("blue", "square")]
    for emb in (from_file, from_dir):
        np.testing.assert_allclose(emb.embed_images(images), reference.embed_images(images), atol=1e-6)
        np.testing.assert_allclose(emb.embed_texts(["a cat"]), reference.embed_texts(["a cat"]), atol=1e-6)
    assert from_dir.name == "tiny-export"
    assert from_file.model_id.split("@")[1] == reference.model_id.split("@")[1]
    assert reference.model_id != tiny_embedder.model_id


def test_vit_b_32_smoke():
    embedder = OpenClipEmbedder("ViT-B-32:random", device="cpu", batch_size=2)
    images = embedder.embed_images([make_shape_image("red", "circle", size=256)] * 3)
    texts = embedder.embed_texts(["a red circle"])
    assert images.shape == (3, 512) and texts.shape == (1, 512)
    np.testing.assert_allclose(images[0], images[2], atol=1e-5)
