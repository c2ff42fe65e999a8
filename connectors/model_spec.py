"""Model specs: the strings ``--model`` takes, parsed without loading a model (and without torch).

Accepted specs (``--model`` on every command, ``model=`` in Python):

========================================  ==========================================
``starter``                                the small model shipped with the package
``ViT-B-32:laion2b_s34b_b79k``             an open_clip pretrained tag (downloaded once)
``ViT-B-32:random``                        seeded random weights, on purpose (tests, speed)
``hf-hub:org/name``                        an open_clip model on the Hugging Face Hub
``ViT-B-32:/path/weights.safetensors``     architecture + a local checkpoint file
``/path/to/exported-dir`` or               a directory in open_clip's ``local-dir:``
``local-dir:/path/to/exported-dir``        layout, as written by ``clip-model export``
========================================  ==========================================

Architectures are open_clip's plus the small configs in ``model_configs/``
(``clip-ingest-tiny``, ...). Downloads fail fast with an actionable message when
there is no network, instead of waiting through retries.

An architecture without weights (``ViT-B-32`` alone) is refused with
:class:`WeightlessModelError`, for every use of a spec: its vectors are noise, and a user
who meant the OpenAI weights would otherwise get a collection of noise. Random weights are
asked for by the ``random`` tag; they are seeded, so ``ViT-B-32:random`` is always the same
model, and its model id (``ViT-B-32@<weights hash>/...``) is the one the bare name had.

Parsing a directory spec (``starter`` included) needs neither torch nor open_clip, so a
torch-free install runs the bundled model's ONNX towers; only an open_clip architecture name
imports open_clip, which checks it (the ``torch`` extra).
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Literal

PACKAGE_DIR = Path(__file__).resolve().parent
MODEL_CONFIG_DIR = PACKAGE_DIR / "model_configs"
STARTER_DIR = PACKAGE_DIR / "starter"
DEFAULT_MODEL_SPEC = "starter"
METADATA_FILE = "clip_ingest.json"
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")

#: the tag that asks for (seeded) random weights on purpose
RANDOM_TAG = "random"

SpecKind = Literal["random", "pretrained", "hf-hub", "checkpoint", "local-dir"]


class ModelLoadError(Exception):
    """A model spec could not be resolved or its weights could not be loaded."""


class WeightlessModelError(ModelLoadError, ValueError):
    """The spec names an architecture without weights and without ``:random``.

    Also a ``ValueError``: it is a mistake in the input (the command-line tools exit 2)."""


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec: what to build and where its weights come from."""

    kind: SpecKind
    arch: str | None
    source: str | None = None
    raw: str = ""

@lru_cache(maxsize=1)
def open_clip_module() -> ModuleType:
    """open_clip, with this package's small architectures (``model_configs/``) registered;
    :class:`ModelLoadError` with the install command where it is not installed."""
    try:
        import open_clip
    except ImportError as exc:
        raise ModelLoadError("this model needs torch and open_clip, which are not installed: "
                             "pip install 'clip-ingest[torch]' (the bundled starter and ONNX exports run without them)") from exc
    open_clip.add_model_config(MODEL_CONFIG_DIR)
    return open_clip


def _looks_like_path(text: str) -> bool:
    return os.sep in text or "/" in text or text.endswith(CHECKPOINT_SUFFIXES) or text.startswith(".")


def _check_arch(arch: str) -> None:
    models = open_clip_module().list_models()
    if arch not in models:
        close = difflib.get_close_matches(arch, models, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ModelLoadError(
            f"unknown model architecture {arch!r}.{hint} "
            "See open_clip.list_models() for all architectures."
        )


def parse_model_spec(spec: str) -> ModelSpec:
    """Parse a spec string (see the module doc); raises :class:`ModelLoadError` if invalid, its
    subclass :class:`WeightlessModelError` for an architecture named without weights."""
    spec = spec.strip()
    if not spec:
        raise ModelLoadError("empty model spec")
    if spec == DEFAULT_MODEL_SPEC:
        return ModelSpec("local-dir", None, str(STARTER_DIR), spec)
    if spec.startswith("hf-hub:"):
        hub_id = spec[len("hf-hub:") :]
        if hub_id.count("/") != 1:
            raise ModelLoadError(f"hf-hub spec must look like hf-hub:org/name, got {spec!r}")
        return ModelSpec("hf-hub", None, hub_id, spec)
    if spec.startswith("local-dir:") or (_looks_like_path(spec) and ":" not in spec):
        path = spec[len("local-dir:") :] if spec.startswith("local-dir:") else spec
        directory = Path(path).expanduser()
        if not directory.is_dir():
            if directory.is_file():
                raise ModelLoadError(
                    f"{path} is a checkpoint file: name its architecture too, e.g. 'ViT-B-32:{path}'"
                )
            raise ModelLoadError(f"model directory not found: {path}")
        if not (directory / "open_clip_config.json").is_file():
            raise ModelLoadError(
                f"{path} has no open_clip_config.json: not an exported model directory "
                "(write one with `clip-model export`)"
            )
        return ModelSpec("local-dir", None, str(directory), spec)
    if ":" not in spec and (Path(spec).expanduser() / "open_clip_config.json").is_file():
        return ModelSpec("local-dir", None, str(Path(spec).expanduser()), spec)  # a model folder named without ./
    arch, _, rest = spec.partition(":")
    _check_arch(arch)
    if rest == RANDOM_TAG:
        return ModelSpec("random", arch, None, spec)
    if not rest:
        raise WeightlessModelError(_weightless_message(spec, arch))
    if _looks_like_path(rest):
        if not Path(rest).expanduser().is_file():
            raise ModelLoadError(f"checkpoint file not found: {rest}")
        return ModelSpec("checkpoint", arch, str(Path(rest).expanduser()), spec)
    tags = open_clip_module().list_pretrained_tags_by_model(arch)
    if rest not in tags:
        listed = ", ".join(tags) if tags else "none"
        raise ModelLoadError(
            f"unknown pretrained tag {rest!r} for {arch}; known tags: {listed}. "
            "For a local file write ARCH:/path/to/weights.safetensors."
        )
    if not _tag_has_weights(arch, rest):
        raise WeightlessModelError(_weightless_message(spec, arch))
    return ModelSpec("pretrained", arch, rest, spec)


def _tag_has_weights(arch: str, tag: str) -> bool:
    """Whether open_clip downloads weights for ``arch:tag`` (a URL or a Hugging Face Hub file)."""
    cfg = open_clip_module().get_pretrained_cfg(arch, tag)
    return bool(cfg.get("url") or cfg.get("hf_hub"))


def _weightless_message(spec: str, arch: str) -> str:
    """Why ``spec`` is refused and the three ways to say what was meant."""
    tags = [t for t in open_clip_module().list_pretrained_tags_by_model(arch) if _tag_has_weights(arch, t)]
    known = (f"open_clip's pretrained tags for {arch}: {', '.join(tags)} (e.g. '{arch}:{tags[0]}')" if tags
             else f"open_clip knows no pretrained weights for {arch}")
    return (
        f"model {spec!r} loads no weights: {arch} alone is an architecture with random weights, whose "
        f"vectors are noise. Name its weights: {known}; or a local checkpoint, "
        f"'{arch}:/path/to/weights.safetensors'. For random weights on purpose (tests, speed "
        f"measurements) write '{arch}:{RANDOM_TAG}'."
    )


def open_clip_name(parsed: ModelSpec) -> str:
    """The name open_clip builds ``parsed``'s tokenizer (and, for directories and hubs, its model) from."""
    if parsed.kind == "local-dir":
        return f"local-dir:{Path(parsed.source).resolve()}"
    if parsed.kind == "hf-hub":
        return f"hf-hub:{parsed.source}"
    return str(parsed.arch)
