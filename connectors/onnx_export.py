"""Export the image and text towers of an open_clip model to ONNX (``clip-model export --onnx``,
and the ``--runtime onnx`` cache of :mod:`.runtime`).

Each tower becomes its own graph with a dynamic batch axis and the
L2-normalisation *inside*, so an ONNX runtime alone (no torch) produces exactly
the vectors :class:`~clip_ingest.connectors.openclip_embedder.OpenClipEmbedder`
produces: ``image.onnx`` maps ``pixels (n, 3, S, S) float32 -> embedding (n, dim)``
and ``text.onnx`` maps ``tokens (n, context_length) int64 -> embedding (n, dim)``.
Preprocessing and tokenisation stay outside the graphs and are rebuilt from the
export directory's ``open_clip_config.json`` by
:class:`~clip_ingest.connectors.onnx_embedder.OnnxEmbedder`.

Weights that half precision holds exactly (those of a model stored in fp16, like the bundled
starter) are stored as fp16 and cast back to fp32 in the graph (:func:`store_exact_halves`):
half the file, the same numbers.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

ONNX_SUBDIR = "onnx"
IMAGE_FILE = "image.onnx"
TEXT_FILE = "text.onnx"
DEFAULT_OPSET = 17


class _NormalisedTower(nn.Module):
    """``model.encode_image`` or ``model.encode_text`` followed by L2-normalisation, for tracing.

    The model is a submodule, so its weights become graph initialisers.
    """

    def __init__(self, model: nn.Module, tower: str) -> None:
        super().__init__()
        self.model = model
        self.tower = tower

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        encode = self.model.encode_image if self.tower == "image" else self.model.encode_text
        return F.normalize(encode(x).float(), dim=-1)


def _export(tower: nn.Module, example: torch.Tensor, path: Path, input_name: str, opset: int) -> None:
    with warnings.catch_warnings():
        # tracing notes on shape checks that are constant for a fixed model, and on advanced
        # indexing with negative indices: open_clip only indexes with argmax (never negative)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")
        # the TorchScript exporter is deprecated, but the dynamo one needs onnxscript (not a dependency)
        warnings.simplefilter("ignore", DeprecationWarning)
        _trace(tower, example, path, input_name, opset)
    store_exact_halves(path)


#: initialisers smaller than this stay as they are (a cast costs more than it saves)
HALF_MIN_ELEMENTS = 4096


def store_exact_halves(path: Path) -> int:
    """Rewrite the graph at ``path`` with every large float32 initialiser that fp16 represents
    exactly stored as fp16, behind a ``Cast`` to float32 under its old name (ONNX Runtime folds
    the cast when the session starts). Returns the number of initialisers rewritten."""
    model = onnx.load(str(path))
    graph = model.graph
    casts, rewritten = [], 0
    for init in graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT or int(np.prod(init.dims)) < HALF_MIN_ELEMENTS:
            continue
        values = numpy_helper.to_array(init)
        half = values.astype(np.float16)
        if not np.array_equal(half.astype(np.float32), values):
            continue
        name = init.name
        init.CopyFrom(numpy_helper.from_array(half, name=f"{name}__fp16"))
        casts.append(onnx.helper.make_node("Cast", [f"{name}__fp16"], [name], to=onnx.TensorProto.FLOAT))
        rewritten += 1
    if rewritten:
        nodes = [*casts, *graph.node]  # the casts first: the graph stays topologically sorted
        del graph.node[:]
        graph.node.extend(nodes)
        onnx.save(model, str(path))
    return rewritten


def _trace(tower: nn.Module, example: torch.Tensor, path: Path, input_name: str, opset: int) -> None:
    torch.onnx.export(
        tower,
        (example,),
        str(path),
        input_names=[input_name],
        output_names=["embedding"],
        dynamic_axes={input_name: {0: "batch"}, "embedding": {0: "batch"}},
        opset_version=opset,
        dynamo=False,  # the TorchScript exporter needs no onnxscript and handles open_clip's towers
    )


def context_length_of(model: nn.Module) -> int:
    """The text tower's token count (``CLIP`` keeps it on the model, ``CustomTextCLIP`` on ``.text``)."""
    length = getattr(model, "context_length", None) or getattr(getattr(model, "text", None), "context_length", None)
    if not length:
        raise ValueError(f"cannot find the text context length of {type(model).__name__}")
    return int(length)


def export_onnx(
    model: nn.Module, out_dir: str | Path, *, image_size: int, context_length: int, opset: int = DEFAULT_OPSET
) -> dict[str, Any]:
    """Write ``out_dir/onnx/image.onnx`` and ``text.onnx`` for ``model`` (an open_clip CLIP, fp32 on CPU).

    Returns the ``"onnx"`` entry for ``clip_ingest.json``: relative file paths and
    the opset. The model itself is left untouched (a float32 CPU copy is exported).
    """
    model = copy.deepcopy(model).to("cpu", torch.float32).eval()
    folder = Path(out_dir) / ONNX_SUBDIR
    folder.mkdir(parents=True, exist_ok=True)
    model.requires_grad_(False)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    # the fused attention kernel has no ONNX mapping; the composite path computes the same
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        _export_towers(model, folder, image_size, context_length, opset)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return {"image": f"{ONNX_SUBDIR}/{IMAGE_FILE}", "text": f"{ONNX_SUBDIR}/{TEXT_FILE}", "opset": opset}


def _export_towers(model: nn.Module, folder: Path, image_size: int, context_length: int, opset: int) -> None:
    with torch.no_grad():
        _export(
            _NormalisedTower(model, "image"),
            torch.zeros(2, 3, image_size, image_size),
            folder / IMAGE_FILE,
            "pixels",
            opset,
        )
        _export(
            _NormalisedTower(model, "text"),
            torch.zeros(2, context_length, dtype=torch.long),
            folder / TEXT_FILE,
            "tokens",
            opset,
        )
