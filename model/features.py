"""Embeddings computed once, outside training: image embeddings cached on disk for
realignment and mining, and text embeddings of a frozen text tower (MCIP, mining).

Realignment trains only the text tower, so the image tower's outputs never change:
they are computed once with the model's own eval preprocessing and stored as
safetensors next to the stage output. The cache is keyed by a hash of the image
tower's weights and of the image paths, so a changed model or data set recomputes it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader

from .data import ImageDataset, Sample, collate_images

log = logging.getLogger(__name__)


def image_cache_key(model: nn.Module, samples: Sequence[Sample]) -> str:
    """sha256 over the image tower's weights and the sample paths."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.visual.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    for s in samples:
        digest.update(s.path.encode() + b"\0")
    return digest.hexdigest()


@torch.no_grad()
def embed_samples(
    model: nn.Module,
    samples: Sequence[Sample],
    preprocess: Callable[[Any], torch.Tensor],
    *,
    device: torch.device,
    batch_size: int = 64,
    num_workers: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """L2-normalised image embeddings of the decodable samples (raises if there are none).

    Returns ``(embeddings (n, D) float32 on CPU, indices (n,) of the samples they
    belong to, number of undecodable images skipped)``.
    """
    loader = DataLoader(
        ImageDataset(samples, preprocess), batch_size=batch_size, num_workers=num_workers, collate_fn=collate_images
    )
    was_training = model.training
    model.eval()
    rows, indices, skipped = [], [], 0
    for batch in loader:
        skipped += batch.skipped
        if len(batch):
            emb = model.encode_image(batch.pixels.to(device), normalize=True)
            rows.append(emb.float().cpu())
            indices.append(batch.indices)
    model.train(was_training)
    if not rows:
        raise ValueError(f"none of the {len(samples)} images could be decoded")
    return torch.cat(rows), torch.cat(indices), skipped


def cached_image_embeddings(
    cache_file: str | Path,
    model: nn.Module,
    samples: Sequence[Sample],
    preprocess: Callable[[Any], torch.Tensor],
    *,
    device: torch.device,
    batch_size: int = 64,
    num_workers: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(embeddings, sample indices)`` from ``cache_file`` when its key matches, else computed and saved."""
    path = Path(cache_file)
    key = image_cache_key(model, samples)
    if path.is_file():
        with safe_open(str(path), framework="pt") as fh:
            if (fh.metadata() or {}).get("key") == key:
                log.info("image embeddings: using cache %s", path)
                return fh.get_tensor("embeddings"), fh.get_tensor("indices")
        log.info("image embedding cache %s is stale (model or images changed): recomputing", path)
    embeddings, indices, skipped = embed_samples(
        model, samples, preprocess, device=device, batch_size=batch_size, num_workers=num_workers
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"key": key, "skipped": json.dumps(skipped)}
    save_file({"embeddings": embeddings.contiguous(), "indices": indices.contiguous()}, str(path), metadata=meta)
    return embeddings, indices


@torch.no_grad()
def embed_texts(
    model: nn.Module,
    tokenizer: Callable[..., torch.Tensor],
    texts: Sequence[str],
    *,
    device: torch.device,
    batch_size: int = 256,
) -> torch.Tensor:
    """L2-normalised text embeddings ``(len(texts), D)`` float32 on ``device`` (no autograd)."""
    was_training = model.training
    model.eval()
    rows = [
        model.encode_text(tokenizer(list(texts[i : i + batch_size])).to(device), normalize=True).float()
        for i in range(0, len(texts), batch_size)
    ]
    model.train(was_training)
    if not rows:
        raise ValueError("no texts to embed")
    return torch.cat(rows)
