"""DDP: two gloo CPU processes train the tiny model and end with identical weights."""

from __future__ import annotations

import socket
from pathlib import Path

import torch.multiprocessing as mp

from model_helpers import ddp_finetune_worker, labelled_images


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_end_with_identical_weights(tmp_path: Path):
    images = labelled_images(tmp_path / "imgs")
    out = tmp_path / "out"
    mp.spawn(ddp_finetune_worker, args=(2, _free_port(), str(images), str(out)), nprocs=2, join=True)
    digests = [(out / f"rank{r}.digest").read_text() for r in range(2)]
    assert digests[0] == digests[1]
    assert (out / "open_clip_model.safetensors").is_file()  # rank 0 wrote the model
