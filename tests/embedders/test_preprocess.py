"""The fused preprocessing tail gives open_clip's numbers, in every resize mode, for every image mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image
from torchvision.transforms import Compose, ToTensor

from clip_ingest.connectors.factory import load_model
from clip_ingest.connectors.preprocess import FusedToNormalisedTensor, fast_transform


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (97, 151, 3), dtype=np.uint8))
    tall = Image.fromarray(rng.integers(0, 256, (203, 64, 3), dtype=np.uint8))
    grey = Image.fromarray(rng.integers(0, 256, (80, 80), dtype=np.uint8), mode="L")
    rgba = Image.fromarray(rng.integers(0, 256, (50, 70, 4), dtype=np.uint8), mode="RGBA")
    return [rgb, tall, grey, rgba, rgb.convert("P")]


@pytest.mark.parametrize("resize_mode", ["shortest", "longest", "squash"])
@pytest.mark.parametrize("size", [32, 64, (48, 64)])
def test_fused_tail_matches_open_clip(resize_mode: str, size) -> None:
    reference = image_transform_v2(PreprocessCfg(size=size, resize_mode=resize_mode), is_train=False)
    fast = fast_transform(reference)
    assert isinstance(fast.transforms[-1], FusedToNormalisedTensor)  # the fast path was taken
    for image in _images():
        expected, got = reference(image), fast(image)
        assert got.dtype == torch.float32 and got.shape == expected.shape and got.is_contiguous()
        assert float((got - expected).abs().max()) <= 1e-5


def test_unrecognised_transforms_are_returned_unchanged() -> None:
    odd = Compose([ToTensor()])
    assert fast_transform(odd) is odd
    plain = lambda image: torch.zeros(3)  # noqa: E731 - any callable
    assert fast_transform(plain) is plain


def test_loaded_models_use_the_fused_tail_and_keep_their_vectors() -> None:
    loaded = load_model("clip-ingest-tiny:random")
    assert isinstance(loaded.preprocess.transforms[-1], FusedToNormalisedTensor)
    reference = image_transform_v2(PreprocessCfg(**loaded.preprocess_cfg), is_train=False)
    images = _images()
    with torch.no_grad():
        a = loaded.model.encode_image(torch.stack([loaded.preprocess(i) for i in images]), normalize=True)
        b = loaded.model.encode_image(torch.stack([reference(i) for i in images]), normalize=True)
    assert float((a * b).sum(dim=1).min()) > 1 - 1e-6


def test_fused_tail_is_bit_identical_to_normalising_the_floats() -> None:
    """Transposing the uint8 pixels first changes no bit: per element it is the same float32
    subtraction and multiplication as converting, normalising and then transposing."""
    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    fused = FusedToNormalisedTensor(mean, std)
    for image in _images():
        floats = np.asarray(image.convert("RGB"), dtype=np.float32)
        floats -= (np.asarray(mean, dtype=np.float32) * 255.0).reshape(1, 1, 3)
        floats *= (1.0 / (np.asarray(std, dtype=np.float32) * 255.0)).reshape(1, 1, 3)
        got = fused(image)
        assert got.is_contiguous() and np.array_equal(got.numpy(), floats.transpose(2, 0, 1))
