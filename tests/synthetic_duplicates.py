"""Test helper: a collection of planted near-duplicate clusters built straight through the
``VectorStore`` API, at any size and in seconds (no model run): synthetic unit vectors, clusters
of 2-5 almost identical ones among single points, and a tiny real image file at every payload
path, so that the server's thumbnails and the page's requests are real."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clip_ingest.connectors.backends import CollectionSpec, Point, VectorStore

from imagegen import image_bytes, texture

#: a raw cosine between the planted clusters (members >= 0.995 to each other) and everything else
#: (unrelated unit vectors in 32 dimensions: below 0.9)
THRESHOLD = 0.99
#: the image sizes a cluster's members have, in order (an original, then smaller re-encodes)
SIZES = ((48, 36), (40, 30), (32, 24), (24, 18), (16, 12))
#: distinct pictures the clusters cycle through (photo-like textures)
PICTURES = 24


@dataclass
class Planted:
    points: list[Point]
    clusters: list[set[str]]
    """The point ids of each planted cluster."""


def plant_clusters(store: VectorStore, embedder, folder: Path, n: int, *, seed: int = 0, share: float = 0.7) -> Planted:
    """``n`` points in ``store`` (created for ``embedder``'s model): about ``share`` of them in
    clusters of 2-5 near-identical vectors, the rest single; ids are seeded (the same every run)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    pictures = [texture(seed, size=SIZES[0][0]) for seed in range(PICTURES)]
    blobs = {(c, s, fmt): image_bytes(pictures[c].resize(SIZES[s]), fmt) for c in range(PICTURES) for s in range(len(SIZES))
             for fmt in ("PNG", "JPEG")}
    points: list[Point] = []
    clusters: list[set[str]] = []
    cluster_odds = share / (3.5 - 2.5 * share)  # clusters average 3.5 points: about `share` of all points are in one
    while len(points) < n:
        size = int(rng.integers(2, 6)) if rng.random() < cluster_odds else 1
        size = min(size, n - len(points))
        base = rng.normal(size=embedder.dim)
        picture = len(clusters) % PICTURES
        members = set()
        for member in range(size):
            vector = base + rng.normal(scale=0.01, size=embedder.dim) if size > 1 else base
            fmt = "PNG" if member % 2 == 0 else "JPEG"
            data = blobs[(picture, member, fmt)]
            point_id = str(uuid.UUID(bytes=rng.bytes(16), version=4))
            path = folder / f"{len(points):05d}.{fmt.lower()}"
            path.write_bytes(data)
            width, height = SIZES[member]
            points.append(Point(point_id, vector / np.linalg.norm(vector), {
                "path": str(path), "paths": [str(path)], "size": len(data), "width": width, "height": height, "format": fmt}))
            members.add(point_id)
        if size > 1:
            clusters.append(members)
    store.ensure_collection(CollectionSpec(store.collection, embedder.dim, embedder.model_id))
    for start in range(0, len(points), 2000):
        store.upsert(points[start : start + 2000])
    store.flush()
    return Planted(points, clusters)


__all__ = ["Planted", "THRESHOLD", "plant_clusters"]
