"""Shared helpers of the clip_ingest.model tests: tiny configs of both open_clip model classes,
small labelled/captioned image sets, weight snapshots and the DDP worker."""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import open_clip
import torch

from imagegen import write_shape_folder

TINY_ARCH = "clip-ingest-tiny"
TINY = f"{TINY_ARCH}:random"
TINY_CUSTOM = "clip-ingest-tiny-custom-text"
FAST = dict(epochs=1, batch_size=6, lr=1e-3, log_every=1, warmup_steps=0)


def register_custom_text_config(directory: Path) -> str:
    """Register a tiny ``CustomTextCLIP`` config (text tower under ``.text``) with open_clip."""
    if TINY_CUSTOM not in open_clip.list_models():
        base = open_clip.get_model_config(TINY_ARCH)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"{TINY_CUSTOM}.json").write_text(json.dumps({**base, "custom_text": True}))
        open_clip.add_model_config(directory / f"{TINY_CUSTOM}.json")
    return f"{TINY_CUSTOM}:random"


def labelled_images(root: Path, n: int = 12) -> Path:
    """``n`` shape images under ``root/<shape>/`` (3 classes)."""
    return write_shape_folder(root, n=n, sidecars=False)


def count_image_tower_calls(monkeypatch) -> dict[str, int]:
    """Count every forward pass of open_clip's ViT image tower from now on (``counts["n"]``)."""
    from open_clip.transformer import VisionTransformer

    counts = {"n": 0}
    original = VisionTransformer.forward

    def counting(self, x):
        counts["n"] += 1
        return original(self, x)

    monkeypatch.setattr(VisionTransformer, "forward", counting)
    return counts


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


def weights_digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        digest.update(k.encode() + v.detach().cpu().float().numpy().tobytes())
    return digest.hexdigest()


def ddp_finetune_worker(rank: int, world_size: int, port: int, data: str, out: str) -> None:
    """One DDP rank (gloo, CPU) of a tiny MCIP run; writes its final weights digest."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
        WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
    )
    torch.set_num_threads(1)
    import torch.distributed as dist

    from clip_ingest.model.stages import FinetuneConfig, run_finetune
    from clip_ingest.model.train import TrainConfig

    cfg = FinetuneConfig(
        TINY, data, out, train=TrainConfig(**{**FAST, "epochs": 2, "device": "cpu"}),
        method="mcip", templates=("a photo of a {label}.",),
    )
    result = run_finetune(cfg)
    Path(out, f"rank{rank}.digest").write_text(weights_digest(result.model))
    dist.destroy_process_group()


def _info_nce_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    return torch.randn(8, 5, generator=generator), torch.randn(8, 5, generator=generator)


def info_nce_reference() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """InfoNCE of one process on all 8 rows: the loss and the gradients of both inputs."""
    from clip_ingest.model.losses import InfoNCELoss

    img, txt = (t.clone().requires_grad_(True) for t in _info_nce_inputs())
    loss = InfoNCELoss()(img, txt, torch.tensor(math.log(10.0)))
    loss.backward()
    return loss.detach(), img.grad, txt.grad


def ddp_info_nce_worker(rank: int, world_size: int, port: int, out: str) -> None:
    """One gloo rank holding rows [4 rank, 4 rank + 4) of the reference batch; saves its loss and
    the gradients of its own rows as safetensors."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    import torch.distributed as dist
    from safetensors.torch import save_file

    from clip_ingest.model.losses import InfoNCELoss

    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    img_all, txt_all = _info_nce_inputs()
    rows = slice(rank * 4, rank * 4 + 4)
    img, txt = img_all[rows].clone().requires_grad_(True), txt_all[rows].clone().requires_grad_(True)
    loss = InfoNCELoss()(img, txt, torch.tensor(math.log(10.0)))
    loss.backward()
    save_file({"loss": loss.detach().reshape(()), "img_grad": img.grad, "txt_grad": txt.grad},
              str(Path(out, f"rank{rank}.safetensors")))
    dist.destroy_process_group()
