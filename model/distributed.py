"""Data-parallel training through ``torchrun`` (DDP), and the single-process default.

``torchrun --nproc-per-node N -m ...`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/
``MASTER_ADDR``/``MASTER_PORT``; :func:`init_distributed` reads them and joins the
process group (NCCL on CUDA, gloo on CPU). Without them everything runs in one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its rank, the number of processes and its local GPU index."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only the main process writes checkpoints, models and progress logs."""
        return self.rank == 0


def setup_distributed(requested_device: str = "auto") -> tuple[DistInfo, torch.device]:
    """Read torchrun's environment, pick this process's device and join the process group once.

    Without ``WORLD_SIZE > 1`` this is a single process on ``requested_device``
    (``auto``: cuda, mps, cpu). Under DDP on CUDA each process takes GPU ``LOCAL_RANK``.
    """
    from clip_ingest.connectors.openclip_embedder import pick_device

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    info = DistInfo()
    if world_size > 1:
        info = DistInfo(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    device = pick_device(requested_device)
    if device.type == "cuda" and info.enabled and device.index is None:
        device = torch.device("cuda", info.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if info.enabled and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return info, device


def barrier(info: DistInfo) -> None:
    """Wait for every process (no-op in a single process)."""
    if info.enabled:
        dist.barrier()


def all_reduce_sum(value: float, info: DistInfo, device: torch.device) -> float:
    """Sum a number over all processes (e.g. samples seen, images skipped)."""
    if not info.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return float(tensor.item())
