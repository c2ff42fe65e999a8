"""DDP: two gloo CPU processes train the tiny model and end with identical weights."""

from __future__ import annotations

import socket
from pathlib import Path

import torch.multiprocessing as mp

from model_helpers import ddp_finetune_worker, ddp_info_nce_worker, labelled_images


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


def test_info_nce_over_two_ranks_equals_one_process_on_the_concatenated_batch(tmp_path: Path):
    """Each rank contrasts its rows against both ranks' rows, and the gradients match too."""
    mp.spawn(ddp_info_nce_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    import torch
    from safetensors.torch import load_file

    from model_helpers import info_nce_reference

    loss, img_grad, txt_grad = info_nce_reference()
    for rank in range(2):
        got = load_file(str(tmp_path / f"rank{rank}.safetensors"))
        assert torch.allclose(got["loss"], loss, atol=1e-6)
        rows = slice(rank * 4, rank * 4 + 4)
        # every rank computes the global loss, so its rows collect the gradient of both ranks'
        # copies: world_size x the true one, which DDP's averaging over ranks divides out
        assert torch.allclose(got["img_grad"] / 2, img_grad[rows], atol=1e-6)
        assert torch.allclose(got["txt_grad"] / 2, txt_grad[rows], atol=1e-6)
