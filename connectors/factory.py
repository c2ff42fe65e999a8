"""Load a model spec (:mod:`.model_spec`) as an open_clip model in torch, in one place.

Downloads fail fast with an actionable message when there is no network, instead of waiting
through retries. This module is the torch side: importing it imports torch and open_clip (the
``torch`` extra); parsing a spec does not.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

import open_clip
import torch

from .model_spec import (  # re-exported: loading code and its callers import one module
    CHECKPOINT_SUFFIXES,
    DEFAULT_MODEL_SPEC,
    METADATA_FILE,
    MODEL_CONFIG_DIR,
    STARTER_DIR,
    ModelLoadError,
    ModelSpec,
    WeightlessModelError,
    open_clip_module,
    open_clip_name,
    parse_model_spec,
)
from .preprocess import fast_transform

open_clip_module()  # registers model_configs/ with open_clip

__all__ = ["CHECKPOINT_SUFFIXES", "DEFAULT_MODEL_SPEC", "METADATA_FILE", "MODEL_CONFIG_DIR", "STARTER_DIR", "LoadedModel",
           "ModelLoadError", "ModelSpec", "WeightlessModelError", "load_model", "open_clip_name", "parse_model_spec"]


@dataclass
class LoadedModel:
    """An open_clip model ready for inference, with what is needed to use it."""

    model: torch.nn.Module
    preprocess: Callable[[Any], torch.Tensor]
    tokenizer: Callable[..., torch.Tensor]
    name: str
    preprocess_cfg: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)


def _offline_message(spec: str, why: str) -> str:
    return (
        f"cannot download the weights for {spec!r}: {why}. "
        "Either run once where the network is reachable (the weights are cached), or use local "
        "weights: '--model ARCH:/path/to/weights.safetensors', an exported directory "
        "('--model /path/to/dir'), or the bundled '--model starter'."
    )


def _host_reachable(host: str, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _hf_cached(repo_id: str, filenames: list[str]) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(repo_id, f), str) for f in filenames)


def _ensure_downloadable(spec: ModelSpec) -> None:
    """Fail within seconds, with advice, when weights are neither cached nor reachable."""
    if spec.kind == "hf-hub":
        repo, files, host = spec.source, ["open_clip_config.json"], "huggingface.co"
    else:
        cfg = open_clip.get_pretrained_cfg(spec.arch, spec.source)
        hub = cfg.get("hf_hub", "")
        if hub:
            repo, name = os.path.split(hub)
            files, host = [name or "open_clip_pytorch_model.bin", "open_clip_model.safetensors"], "huggingface.co"
        else:
            url = cfg.get("url", "")
            cached = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
            if cached.is_file():
                return
            repo, files, host = None, [], urlparse(url).hostname or ""
    if repo and _hf_cached(repo, files):
        return
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes") and host == "huggingface.co":
        raise ModelLoadError(_offline_message(spec.raw, "HF_HUB_OFFLINE is set and they are not cached"))
    if not _host_reachable(host):
        raise ModelLoadError(_offline_message(spec.raw, f"{host} is not reachable (no network?)"))


def _read_metadata(directory: Path) -> dict[str, Any]:
    meta_path = directory / METADATA_FILE
    if meta_path.is_file():
        return json.loads(meta_path.read_text(encoding="utf-8"))
    return {}


def load_model(spec: str | ModelSpec, *, device: str | torch.device = "cpu") -> LoadedModel:
    """Build the model named by ``spec`` in eval mode on ``device`` (fp32 weights)."""
    parsed = parse_model_spec(spec) if isinstance(spec, str) else spec
    metadata: dict[str, Any] = {}
    if parsed.kind in ("pretrained", "hf-hub"):
        _ensure_downloadable(parsed)
    try:
        if parsed.kind in ("local-dir", "hf-hub"):
            name = open_clip_name(parsed)
            metadata = _read_metadata(Path(parsed.source)) if parsed.kind == "local-dir" else {}
            model, _, preprocess = open_clip.create_model_and_transforms(name, device=device)
            tokenizer = open_clip.get_tokenizer(name)
            display = (metadata.get("name") or Path(parsed.source).name) if parsed.kind == "local-dir" else parsed.source
        else:
            # random weights are seeded so that "ViT-B-32:random" always means the same model
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model, _, preprocess = open_clip.create_model_and_transforms(
                    parsed.arch, pretrained=parsed.source, device=device, weights_only=True
                )
            tokenizer = open_clip.get_tokenizer(open_clip_name(parsed))
            display = parsed.arch
    except ModelLoadError:
        raise
    except Exception as exc:  # open_clip raises RuntimeError/ValueError/OSError/KeyError
        raise ModelLoadError(f"could not load model {parsed.raw!r}: {exc}") from exc
    model.eval()
    pp_cfg = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
    return LoadedModel(model, fast_transform(preprocess), tokenizer, display, pp_cfg, metadata)
