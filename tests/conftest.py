"""Shared fixtures: a tiny real open_clip model, generated images (no downloads, no shared data),
and a real embedded store of every backend in the registry."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")

pytest_plugins = ["milvus_server"]

import pytest

from imagegen import make_shape_image, write_shape_folder  # noqa: E402

from clip_ingest.connectors.backends.base import VectorStore  # noqa: E402
from clip_ingest.connectors.backends.registry import BACKENDS, StoreTarget, open_target  # noqa: E402
from clip_ingest.connectors.config import COMMON_SETTINGS, resolve_settings, store_target  # noqa: E402

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


#: one target per backend: what the ``store`` fixture runs over
ONE_PER_BACKEND = tuple(entry.name for entry in BACKENDS)


def embedded_target(target: str, data_dir: Path) -> StoreTarget:
    """Where the CLI keeps an embedded store of ``target`` with ``--data-dir data_dir`` and no other flag."""
    flags = {"target": target, "data_dir": str(data_dir)}
    return store_target(resolve_settings(flags, COMMON_SETTINGS, section="tests", env={}, cwd=data_dir))


def embedded_options(target: str, data_dir: Path) -> dict[str, object]:
    """The ``open_store`` options of :func:`embedded_target` (unset ones left out)."""
    return {k: v for k, v in embedded_target(target, data_dir).options.items() if v is not None}


def open_embedded(target: str, data_dir: Path, collection: str) -> VectorStore:
    """A real embedded store of ``target`` under ``data_dir``: the same store each time it is called."""
    return open_target(embedded_target(target, data_dir), collection)


@pytest.fixture(params=ONE_PER_BACKEND)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    """A real embedded store of each backend of the registry (collection ``images``)."""
    with open_embedded(request.param, tmp_path / "data", "images") as opened:
        yield opened


__all__ = [
    "ONE_PER_BACKEND", "embedded_options", "embedded_target", "open_embedded","make_shape_image", "write_shape_folder", "TINY_ARCH", "TINY_SPEC"]


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
