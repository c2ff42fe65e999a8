"""Test helper: a collection of generated coloured shapes, embedded with a real model and stored
with the payload fields ingestion writes (path, sha256) plus colour / shape / index."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

from clip_ingest.connectors.backends import CollectionSpec, Point, VectorStore


def plant_shapes(store: VectorStore, embedder, folder: Path) -> list[Point]:
    """Embed every PNG under ``folder`` (from ``write_shape_folder``) into ``store``; returns the points."""
    paths = sorted(folder.rglob("*.png"))
    vectors = embedder.embed_images(paths)
    points = []
    for path, vector in zip(paths, vectors):
        payload: dict[str, Any] = json.loads(Path(f"{path}.json").read_text())
        content = path.read_bytes()
        payload.update(path=str(path), sha256=hashlib.sha256(content).hexdigest())
        points.append(Point(str(uuid.uuid5(uuid.NAMESPACE_URL, str(path))), vector, payload))
    store.ensure_collection(CollectionSpec("shapes", embedder.dim, embedder.model_id))
    store.upsert(points)
    store.flush()
    return points
