"""Shared fixtures: a tiny real open_clip model and generated images (no downloads, no shared data)."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")

pytest_plugins = ["milvus_server"]

import pytest

from imagegen import make_shape_image, write_shape_folder  # noqa: E402

TINY_ARCH = "clip-ingest-tiny"
TINY_SPEC = f"{TINY_ARCH}:random"  # random weights on purpose: a bare architecture is refused


@pytest.fixture(scope="session")
def tiny_embedder():
    """A real open_clip embedder on a tiny random-weight config (seeded: same weights every run)."""
    from clip_ingest.connectors.openclip_embedder import OpenClipEmbedder

    return OpenClipEmbedder(TINY_SPEC, device="cpu", batch_size=8)


@pytest.fixture
def shape_folder(tmp_path: Path) -> Path:
    """A folder of 12 small generated images: colour x shape, with labels in sidecar JSON."""
    return write_shape_folder(tmp_path / "photos", n=12)


__all__ = ["make_shape_image", "write_shape_folder", "TINY_ARCH", "TINY_SPEC"]


@pytest.fixture(scope="session")
def starter_embedder():
    """The shipped starter model on open_clip (torch, CPU): the model that calibrates (near-duplicate
    and text relevance), loaded once for the session; tests must not change it."""
    from clip_ingest.connectors.openclip_embedder import OpenClipEmbedder

    return OpenClipEmbedder("starter", device="cpu")


@pytest.fixture
def model_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty ``CLIP_INGEST_CACHE`` of this test's own (calibrations are measured afresh)."""
    monkeypatch.setenv("CLIP_INGEST_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"
