"""Write models and training state without pickle.

* :func:`save_local_dir` writes a trained model in open_clip's ``local-dir:`` layout
  (``open_clip_config.json`` + ``open_clip_model.safetensors`` + our ``clip_ingest.json``)
  that :func:`clip_ingest.connectors.factory.load_model` loads.
* :func:`model_config_for_spec` recovers the architecture config of a model spec, which
  ``save_local_dir`` needs because an ``nn.Module`` does not remember it.
* :func:`save_training_state` / :func:`load_training_state` keep what a resumed run needs
  (trainable module, optimizer, counters, RNG states) as safetensors + JSON.
* :func:`save_best_weights` / :func:`load_best_weights` keep the trainable weights of the
  epoch with the best validation score, which a run ends with (model selection).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from clip_ingest.connectors.factory import METADATA_FILE, ModelLoadError, parse_model_spec

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"
STATE_TENSORS = "state.safetensors"
STATE_JSON = "state.json"
BEST_TENSORS = "best-{epoch}.safetensors"


def _tensors_for_safetensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous, unshared copies (safetensors refuses tensors that share memory)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def _write_atomically(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def save_local_dir(
    model: nn.Module,
    model_cfg: dict[str, Any],
    preprocess_cfg: dict[str, Any],
    out_dir: str | os.PathLike,
    metadata: dict[str, Any],
) -> Path:
    """Write ``model`` to ``out_dir`` in open_clip's ``local-dir:`` layout and return the path.

    ``model_cfg`` is the architecture config (see :func:`model_config_for_spec`);
    ``metadata`` (JSON-serialisable: method, base model, data, config...) goes to
    ``clip_ingest.json``. Files are replaced atomically, weights last-but-one so a
    half-written directory is never mistaken for a finished one.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights = _tensors_for_safetensors(model.state_dict())
    _write_atomically(out / WEIGHTS_FILE, lambda p: save_file(weights, str(p)))
    config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}
    _write_atomically(out / CONFIG_FILE, lambda p: p.write_text(json.dumps(config, indent=2), encoding="utf-8"))
    meta = json.dumps(metadata, indent=2, default=str)
    _write_atomically(out / METADATA_FILE, lambda p: p.write_text(meta, encoding="utf-8"))
    return out


def model_config_for_spec(spec: str) -> dict[str, Any]:
    """The open_clip architecture config (``embed_dim``, ``vision_cfg``, ``text_cfg``...) of ``spec``."""
    parsed = parse_model_spec(spec)
    if parsed.kind == "local-dir":
        return json.loads((Path(parsed.source) / CONFIG_FILE).read_text(encoding="utf-8"))["model_cfg"]
    if parsed.kind == "hf-hub":
        from open_clip.factory import _get_hf_config

        return _get_hf_config(parsed.source)["model_cfg"]
    cfg = open_clip.get_model_config(parsed.arch)
    if cfg is None:
        raise ModelLoadError(f"no architecture config for {spec!r}")
    return cfg


def _rng_state() -> dict[str, torch.Tensor]:
    np_state = np.random.get_state()
    states = {
        "rng.torch": torch.get_rng_state(),
        "rng.numpy": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
    }
    if torch.cuda.is_available():
        states["rng.cuda"] = torch.cuda.get_rng_state()
    return states


def _restore_rng(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    keys = tensors["rng.numpy"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, *meta["numpy_rng_rest"]))
    random.setstate((meta["python_rng"][0], tuple(meta["python_rng"][1]), meta["python_rng"][2]))


def save_training_state(
    directory: str | os.PathLike,
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    counters: dict[str, Any],
) -> None:
    """Save a resumable snapshot: module weights, optimizer state, ``counters`` and RNG states."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {f"module.{k}": v for k, v in module.state_dict().items()}
    opt = optimizer.state_dict()
    for index, per_param in opt["state"].items():
        for key, value in per_param.items():
            tensors[f"optim.{index}.{key}"] = torch.as_tensor(value)
    tensors.update(_rng_state())
    np_state = np.random.get_state()
    meta = {
        "counters": counters,
        "param_groups": opt["param_groups"],
        "numpy_rng_rest": [int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python_rng": random.getstate(),
    }
    tensors = _tensors_for_safetensors(tensors)
    # tensors first, then the JSON that marks the snapshot complete
    _write_atomically(out / STATE_TENSORS, lambda p: save_file(tensors, str(p)))
    _write_atomically(out / STATE_JSON, lambda p: p.write_text(json.dumps(meta), encoding="utf-8"))


def load_training_state(
    directory: str | os.PathLike, module: nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any] | None:
    """Restore a snapshot written by :func:`save_training_state`; ``None`` if there is none.

    Returns the saved counters. Weights are loaded strictly: a snapshot of another
    architecture or stage raises instead of being half-applied.
    """
    path = Path(directory)
    if not (path / STATE_JSON).is_file() or not (path / STATE_TENSORS).is_file():
        return None
    meta = json.loads((path / STATE_JSON).read_text(encoding="utf-8"))
    tensors = load_file(str(path / STATE_TENSORS))
    module_state = {k[len("module.") :]: v for k, v in tensors.items() if k.startswith("module.")}
    module.load_state_dict(module_state, strict=True)
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            opt_state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": opt_state, "param_groups": meta["param_groups"]})
    _restore_rng(tensors, meta)
    return meta["counters"]


def _best_path(directory: str | os.PathLike, epoch: int) -> Path:
    return Path(directory) / BEST_TENSORS.format(epoch=epoch)


def save_best_weights(directory: str | os.PathLike, module: nn.Module, epoch: int, score: float) -> None:
    """Keep the trainable parameters of ``module`` as epoch ``epoch``'s (frozen ones never change).

    One file per epoch, so a run killed before the epoch's snapshot cannot leave weights behind
    that the resumed run mistakes for another epoch's; :func:`prune_best_weights` removes the
    files of epochs that are no longer the best.
    """
    Path(directory).mkdir(parents=True, exist_ok=True)
    tensors = _tensors_for_safetensors({n: p for n, p in module.named_parameters() if p.requires_grad})
    meta = {"epoch": str(epoch), "score": repr(float(score))}
    _write_atomically(_best_path(directory, epoch), lambda p: save_file(tensors, str(p), metadata=meta))


def prune_best_weights(directory: str | os.PathLike, keep_epoch: int) -> None:
    """Delete the kept weights of every epoch but ``keep_epoch``."""
    keep = _best_path(directory, keep_epoch)
    for path in Path(directory).glob(BEST_TENSORS.format(epoch="*")):
        if path != keep:
            path.unlink(missing_ok=True)


def load_best_weights(directory: str | os.PathLike, module: nn.Module, epoch: int) -> None:
    """Put the weights kept for ``epoch`` by :func:`save_best_weights` back into ``module``.

    Raises:
        FileNotFoundError: nothing was kept for that epoch.
        KeyError: the kept tensors do not belong to ``module``.
    """
    path = _best_path(directory, epoch)
    with safe_open(str(path), framework="pt") as fh:
        if (fh.metadata() or {}).get("epoch") != str(epoch):
            raise KeyError(f"{path}: holds another epoch's weights")
    unexpected = module.load_state_dict(load_file(str(path)), strict=False).unexpected_keys
    if unexpected:
        raise KeyError(f"{path}: tensors not in the model: {unexpected[:3]}")
