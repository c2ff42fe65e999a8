"""Aliases for the authors' published MCIP checkpoints, converted once into our export layout.

The MCIP release ships plain PyTorch state dicts (``.pth``) of two open_clip
architectures. ``fetch_published("mcip-vit-l-14-336")`` downloads the file once,
loads it with ``torch.load(weights_only=True)`` (a pickle that carries anything but
tensors and plain containers is refused, nothing in it is executed), loads it into
the architecture with a *strict* ``load_state_dict`` (a missing or unexpected key is
an error, never silently random weights), and writes a ``local-dir:`` export
(safetensors, no pickle) into the cache. Later calls return the cached directory;
its path is a model spec: ``OpenClipEmbedder(str(fetch_published(alias)))``.

Where the files come from is kept in :data:`PUBLISHED` only. The URLs and checksums
could not be confirmed offline when this table was written: entries with
``verified=False`` must be checked against the authors' release page before use;
``$CLIP_INGEST_PUBLISHED_URL_<ALIAS>`` (alias upper-cased, ``-`` -> ``_``) or the
``url=`` argument replaces a URL without code changes (a local path also works).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.transform import PreprocessCfg, merge_preprocess_dict

from clip_ingest.connectors.openclip_embedder import compute_model_id

from .checkpoint import save_local_dir

CACHE_ENV = "CLIP_INGEST_CACHE"
URL_ENV_PREFIX = "CLIP_INGEST_PUBLISHED_URL_"


class PublishedCheckpointError(Exception):
    """A published checkpoint could not be downloaded, was not a plain state dict, or did not fit."""


@dataclass(frozen=True)
class PublishedCheckpoint:
    """One published checkpoint: the open_clip architecture, the base tag and where the weights are.

    ``base_tag`` is the open_clip pretrained tag the checkpoint was fine-tuned from; it
    fixes preprocessing (mean/std/resize) and QuickGELU, which a bare state dict does
    not record. ``sha256`` (hex) is checked after download when given.
    """

    arch: str
    base_tag: str | None
    url: str
    sha256: str | None = None
    verified: bool = False
    description: str = ""


PUBLISHED: dict[str, PublishedCheckpoint] = {
    "mcip-vit-l-14-336": PublishedCheckpoint(
        arch="ViT-L-14-336",
        base_tag="openai",
        # TO BE VERIFIED against the MCIP authors' release (could not be checked offline)
        url="https://huggingface.co/visual-computing/mcip/resolve/main/mcip-vit-l-14-336.pth",
        description="MCIP fine-tune of OpenAI CLIP ViT-L/14@336px",
    ),
    "mcip-siglip-so400m-384": PublishedCheckpoint(
        arch="ViT-SO400M-14-SigLIP-384",
        base_tag="webli",
        # TO BE VERIFIED against the MCIP authors' release (could not be checked offline)
        url="https://huggingface.co/visual-computing/mcip/resolve/main/mcip-siglip-so400m-14-384.pth",
        description="MCIP fine-tune of SigLIP SO400M/14@384px",
    ),
}


def default_cache_dir() -> Path:
    """``$CLIP_INGEST_CACHE/published``, else ``~/.cache/clip_ingest/published``."""
    base = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "clip_ingest"
    return Path(base).expanduser() / "published"


def resolve_url(alias: str, entry: PublishedCheckpoint, url: str | None = None) -> str:
    """``url`` if given, else the alias's environment override, else the table's URL."""
    return url or os.environ.get(URL_ENV_PREFIX + alias.upper().replace("-", "_")) or entry.url


def _download(source: str, target: Path, sha256: str | None) -> None:
    """Copy ``source`` (URL or local path) to ``target`` via a ``.part`` file, checking ``sha256``."""
    part = target.with_name(target.name + ".part")
    try:
        if Path(source).expanduser().is_file():
            shutil.copyfile(Path(source).expanduser(), part)
        else:
            with urllib.request.urlopen(source, timeout=60) as response, part.open("wb") as f:
                shutil.copyfileobj(response, f, length=1 << 20)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise PublishedCheckpointError(f"cannot download {source}: {exc}") from exc
    if sha256:
        digest = hashlib.sha256()
        with part.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != sha256.lower():
            part.unlink()
            raise PublishedCheckpointError(f"{source}: sha256 {digest.hexdigest()} does not match {sha256}")
    os.replace(part, target)


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A ``.pth`` state dict read with ``weights_only=True`` (``{"state_dict": ...}`` and DDP's
    ``module.`` prefix unwrapped); anything that is not tensors in plain containers is refused."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError...: all mean "not loadable safely"
        raise PublishedCheckpointError(
            f"{path} is not a plain tensor state dict (refused by weights_only loading): {exc}"
        ) from exc
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise PublishedCheckpointError(f"{path} does not hold a state dict of tensors")
    if all(k.startswith("module.") for k in checkpoint):
        checkpoint = {k[len("module.") :]: v for k, v in checkpoint.items()}
    return checkpoint


def _architecture(entry: PublishedCheckpoint) -> tuple[torch.nn.Module, dict[str, Any], dict[str, Any]]:
    """An empty model of ``entry.arch`` with its config and preprocessing (from the base tag)."""
    model_cfg = open_clip.get_model_config(entry.arch)
    if model_cfg is None:
        raise PublishedCheckpointError(f"unknown open_clip architecture {entry.arch!r}")
    tag_cfg = open_clip.get_pretrained_cfg(entry.arch, entry.base_tag) if entry.base_tag else {}
    quick_gelu = bool(tag_cfg.get("quick_gelu", False))
    if quick_gelu:
        model_cfg["quick_gelu"] = True
    model = open_clip.create_model(entry.arch, force_quick_gelu=quick_gelu)
    preprocess_cfg = merge_preprocess_dict(PreprocessCfg(), tag_cfg)
    preprocess_cfg["size"] = model.visual.image_size
    return model, model_cfg, preprocess_cfg


def convert_checkpoint(
    alias: str, entry: PublishedCheckpoint, pth: str | os.PathLike, out_dir: str | os.PathLike, source: str
) -> Path:
    """Strictly load the state dict ``pth`` into ``entry.arch`` and write an export to ``out_dir``."""
    state = load_state_dict_file(pth)
    model, model_cfg, preprocess_cfg = _architecture(entry)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise PublishedCheckpointError(f"{pth} does not fit {entry.arch}: {exc}") from exc
    model.eval()
    metadata = {
        "name": alias,
        "model_id": compute_model_id(alias, model, preprocess_cfg),
        "base_model": f"{entry.arch}:{entry.base_tag}" if entry.base_tag else entry.arch,
        "source": source,
        "url_verified": entry.verified,
        "description": entry.description,
        "weights_dtype": "float32",
    }
    return save_local_dir(model, model_cfg, preprocess_cfg, out_dir, metadata)


def fetch_published(
    alias: str,
    *,
    cache_dir: str | os.PathLike | None = None,
    url: str | None = None,
    entry: PublishedCheckpoint | None = None,
) -> Path:
    """The export directory of a published checkpoint, downloading and converting it on first use.

    Args:
        alias: a key of :data:`PUBLISHED` (or any name when ``entry`` is given).
        cache_dir: where converted checkpoints live (default :func:`default_cache_dir`).
        url: replaces the table's URL (an ``https://`` URL or a local ``.pth`` path).
        entry: a checkpoint description not in the table (e.g. your own release).
    """
    if entry is None:
        if alias not in PUBLISHED:
            raise PublishedCheckpointError(f"unknown published checkpoint {alias!r}; known: {', '.join(PUBLISHED)}")
        entry = PUBLISHED[alias]
    folder = Path(cache_dir or default_cache_dir()).expanduser() / alias
    if (folder / "open_clip_config.json").is_file() and (folder / "clip_ingest.json").is_file():
        return folder
    source = resolve_url(alias, entry, url)
    folder.parent.mkdir(parents=True, exist_ok=True)
    download = folder.parent / f"{alias}.pth"
    _download(source, download, entry.sha256)
    staging = folder.with_name(f".{alias}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        convert_checkpoint(alias, entry, download, staging, source)
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        download.unlink()  # converted (the export replaces it) or rejected (a retry downloads afresh)
    return folder
