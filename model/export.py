"""Turn a trained stage directory, or any model spec, into a self-contained export directory.

The export is open_clip's ``local-dir:`` layout, loadable by
``OpenClipEmbedder("/path/to/export")`` and ``open_clip.create_model_and_transforms
("local-dir:/path/to/export")``::

    open_clip_config.json         {"model_cfg": ..., "preprocess_cfg": ...}
    open_clip_model.safetensors   weights (fp32, or fp16 with ``fp16=True``); never a pickle
    clip_ingest.json              name, model_id, base model, recipe, data summary, metrics
    MODEL_CARD.md                 the same facts for people (:mod:`clip_ingest.model.model_card`)
    onnx/image.onnx, text.onnx    only with ``onnx=True`` (see :mod:`clip_ingest.connectors.onnx_export`)

``model_id`` is computed exactly as the embedders compute it
(:func:`~clip_ingest.connectors.openclip_embedder.compute_model_id`) on the weights
as written, so a reloaded export reports the same id and collections accept it.
fp16 weights are rounded values: such an export has a different ``model_id`` from
the fp32 model (its vectors differ slightly, so it must not share a collection).
"""

from __future__ import annotations

import copy
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from clip_ingest.connectors.factory import LoadedModel, load_model
from clip_ingest.connectors.openclip_embedder import compute_model_id
from clip_ingest.connectors.onnx_export import context_length_of, export_onnx

from .checkpoint import model_config_for_spec, save_local_dir
from .model_card import CARD_NAME, render_model_card

EXPORT_FORMAT_VERSION = 1


class ExportError(Exception):
    """The export could not be written (the destination is left as it was)."""


@dataclass(frozen=True)
class ExportResult:
    """Where the export was written and the ``model_id`` its embedders will report."""

    path: Path
    model_id: str
    metadata: dict[str, Any]


def build_metadata(
    loaded: LoadedModel,
    spec: str,
    name: str,
    model_id: str,
    *,
    recipe: Any = None,
    data: Any = None,
    metrics: Any = None,
    compared_with: Any = None,
    weights_dtype: str = "float32",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``clip_ingest.json`` content: the source's metadata, updated by what is given here."""
    meta = dict(loaded.metadata)
    meta.update(
        format_version=EXPORT_FORMAT_VERSION,
        name=name,
        model_id=model_id,
        base_model=meta.get("base_model") or spec,
        source=spec,
        weights_dtype=weights_dtype,
    )
    for key, value in (("recipe", recipe), ("data", data), ("metrics", metrics), ("compared_with", compared_with)):
        if value is not None:
            meta[key] = value
    meta.update(extra or {})
    meta.pop("onnx", None)  # only an ONNX export written together with these weights is valid
    return meta


def _check_destination(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"{out} already exists and is not empty (pass overwrite=True / --overwrite)")


def export_model(
    spec: str,
    out_dir: str | os.PathLike,
    *,
    name: str | None = None,
    recipe: Any = None,
    data: Any = None,
    metrics: Any = None,
    compared_with: list[dict[str, Any]] | None = None,
    experiment: str | None = None,
    extra: dict[str, Any] | None = None,
    fp16: bool = False,
    onnx: bool = False,
    overwrite: bool = False,
) -> ExportResult:
    """Export the model named by ``spec`` (a stage directory, an exported dir, ``ARCH:weights``...).

    Args:
        spec: any model spec understood by :func:`clip_ingest.connectors.factory.load_model`.
        out_dir: the export directory (written in a sibling staging folder, then renamed:
            a failed export never leaves a half-written model behind).
        name: the model name recorded (and hashed into ``model_id``); default: the
            source's recorded name, else the directory name.
        recipe, data, metrics: JSON-serialisable summaries recorded in ``clip_ingest.json``.
        compared_with: the other models of the eval run ``metrics`` come from (``name``, ``spec``,
            ``model_id``, ``metrics`` each), shown beside it in the model card.
        experiment: an ``experiment.md`` table for the model card's experiment block.
        extra: further ``clip_ingest.json`` fields, set last (e.g. ``base_model`` of a chain of
            stages, ``held_out``: what ``clip-model adapt`` measured).
        fp16: store half-precision weights (half the size; a different ``model_id``).
        onnx: also write the ONNX towers (for ``OnnxEmbedder``).
        overwrite: replace an existing non-empty ``out_dir``.
    """
    out = Path(out_dir).expanduser().resolve()
    _check_destination(out, overwrite)
    loaded = load_model(spec)
    model_cfg = model_config_for_spec(spec)
    model = copy.deepcopy(loaded.model).half() if fp16 else loaded.model
    name = name or loaded.metadata.get("name") or out.name
    model_id = compute_model_id(name, model, loaded.preprocess_cfg)
    metadata = build_metadata(
        loaded, spec, name, model_id, recipe=recipe, data=data, metrics=metrics, compared_with=compared_with,
        weights_dtype="float16" if fp16 else "float32", extra=extra,
    )
    _write_atomically(out, lambda staging: _write_export(staging, loaded, model, model_cfg, metadata, experiment, onnx))
    return ExportResult(out, model_id, metadata)


def _write_export(staging: Path, loaded: LoadedModel, model: Any, model_cfg: dict[str, Any], metadata: dict[str, Any],
                  experiment: str | None, onnx: bool) -> None:
    """The export's files in ``staging``: the ONNX towers first (their summary goes into
    ``metadata``), then the weights, ``clip_ingest.json`` and the model card."""
    if onnx:
        size = loaded.preprocess_cfg["size"]
        metadata["onnx"] = export_onnx(
            model,
            staging,
            image_size=int(size[0] if isinstance(size, (list, tuple)) else size),
            context_length=context_length_of(model),
        )
    save_local_dir(model, model_cfg, loaded.preprocess_cfg, staging, metadata)
    (staging / CARD_NAME).write_text(render_model_card(metadata, experiment), encoding="utf-8")


def _write_atomically(out: Path, write: Callable[[Path], None]) -> None:
    """``write`` a sibling staging folder, then put it in place of ``out``: a failed export never
    leaves a half-written model behind."""
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        write(staging)
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
