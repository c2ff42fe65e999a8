"""ONNX towers behind the Embedder protocol agree with the torch embedder on the tiny config."""

from __future__ import annotations

import numpy as np
import pytest

from clip_ingest.connectors.decode import ImageDecodeError
from clip_ingest.connectors.embedder import Embedder
from clip_ingest.connectors.factory import ModelLoadError
from clip_ingest.connectors.onnx_embedder import OnnxEmbedder
from clip_ingest.connectors.openclip_embedder import OpenClipEmbedder
from clip_ingest.model.export import export_model
from conftest import TINY_SPEC
from imagegen import make_shape_image

TEXTS = ["a red circle", "a photo of a blue square", "", "x " * 100]  # empty and over-long too


@pytest.fixture(scope="module")
def onnx_export(tmp_path_factory):
    return export_model(TINY_SPEC, tmp_path_factory.mktemp("onnx") / "tiny", onnx=True).path


def test_onnx_vectors_match_torch_within_1e4_cosine(onnx_export, shape_folder):
    torch_embedder = OpenClipEmbedder(str(onnx_export), device="cpu", batch_size=5)
    onnx_embedder = OnnxEmbedder(onnx_export, batch_size=5)
    assert isinstance(onnx_embedder, Embedder)
    assert onnx_embedder.model_id == torch_embedder.model_id
    assert onnx_embedder.dim == torch_embedder.dim == 32
    paths = sorted(shape_folder.rglob("*.png"))
    for a, b in [
        (onnx_embedder.embed_images(paths), torch_embedder.embed_images(paths)),
        (onnx_embedder.embed_texts(TEXTS), torch_embedder.embed_texts(TEXTS)),
    ]:
        assert a.dtype == np.float32 and a.shape == b.shape
        np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
        assert (1.0 - (a * b).sum(axis=1)).max() < 1e-4


def test_onnx_results_do_not_depend_on_batch_size(onnx_export):
    images = [make_shape_image("green", "triangle", variant=i) for i in range(5)]
    one = OnnxEmbedder(onnx_export, batch_size=1)
    many = OnnxEmbedder(onnx_export, batch_size=4)
    np.testing.assert_allclose(one.embed_images(images), many.embed_images(images), atol=1e-6)
    assert one.embed_texts([]).shape == (0, 32)


def test_onnx_embedder_reports_bad_input(onnx_export, tmp_path):
    embedder = OnnxEmbedder(onnx_export)
    bad = tmp_path / "fake.jpg"
    bad.write_bytes(b"<html>not an image</html>")
    with pytest.raises(ImageDecodeError) as err:
        embedder.embed_images([bad])
    assert err.value.reason == "not_an_image"
    with pytest.raises(TypeError):
        embedder.embed_texts("a single string")


def test_export_without_onnx_is_refused_with_advice(tmp_path):
    plain = export_model(TINY_SPEC, tmp_path / "plain").path
    with pytest.raises(ModelLoadError, match="--onnx"):
        OnnxEmbedder(plain)
    with pytest.raises(ModelLoadError, match="clip_ingest.json is missing"):
        OnnxEmbedder(tmp_path)
