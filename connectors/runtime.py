"""Pick the runtime that computes the vectors: torch (``OpenClipEmbedder``) or ONNX Runtime
(``OnnxEmbedder``), optionally int8 (dynamic quantization), for any model spec; ``auto`` (the
default) is :func:`choose_runtime`'s choice.

``load_embedder(spec, runtime="onnx")`` exports the model's two towers to ONNX once and caches
them under ``$CLIP_INGEST_CACHE/onnx/<model_id>/`` (default ``~/.cache/clip-ingest``); later
loads only hash the weights (to find the cache entry) and open the graphs. An export directory
that already holds ONNX towers (``clip-model export --onnx``) is used as it is.

Which vectors may share a collection: fp32 ONNX agrees with torch to cosine distance < 1e-4
(tested), so it keeps the model's ``model_id`` and a collection ingested with one runtime is
searched with the other. int8 vectors differ more, so an int8 model reports
``<model_id>+onnx-int8`` and a collection refuses to mix it with fp32 vectors.

Both runtimes resolve the spec with :func:`~.model_spec.parse_model_spec`, so an architecture
named without weights is refused here as everywhere (``ViT-B-32:random`` asks for random
weights). The cache is keyed by the model id, not by the spec's spelling: an entry built for
the bare ``ViT-B-32`` before ``:random`` was required serves ``ViT-B-32:random`` unchanged.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

from .config import QUANTIZATIONS, RUNTIMES
from .cpus import onnx_session_options, size_torch, thread_plan
from .embedder import Embedder
from .model_spec import DEFAULT_MODEL_SPEC, METADATA_FILE, ModelLoadError, open_clip_name, parse_model_spec

CACHE_ENV = "CLIP_INGEST_CACHE"
#: appended to the ``model_id`` of int8 models: their vectors must not mix with fp32 ones
INT8_SUFFIX = "+onnx-int8"
#: what a cache entry keeps of its model folder's metadata (the text calibration is fitted to the
#: fp32 vectors, which the entry reproduces; an int8 entry's model id differs, so it never matches)
CARRIED_METADATA = ("text_calibration",)
log = logging.getLogger("clip_ingest.runtime")


def cache_root() -> Path:
    """``$CLIP_INGEST_CACHE``, else ``$XDG_CACHE_HOME/clip-ingest``, else ``~/.cache/clip-ingest``."""
    given = os.environ.get(CACHE_ENV)
    if given:
        return Path(given).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "clip-ingest"


def load_embedder(spec: str = DEFAULT_MODEL_SPEC, *, runtime: str = "auto", quantize: str = "none",
                  device: str | None = "auto", batch_size: int = 32, cpus: int | None = None, **options: Any) -> Embedder:
    """The embedder for ``spec`` on ``runtime`` (``auto``, ``torch`` or ``onnx``), ``quantize``
    ``none`` or ``int8`` (ONNX only); ``options`` go to the embedder (e.g. ``max_megapixels``,
    torch's ``precision``). ``auto`` is :func:`choose_runtime`'s choice.

    Its threads are sized here, for every command and adapter, to the CPUs this process may use
    (:func:`~.cpus.thread_plan`: ``cpus``, else ``CLIP_INGEST_CPUS``, else affinity and cgroup
    quota; ``OMP_NUM_THREADS`` names the model threads unless ``cpus`` is given): torch's
    intra-op threads (a process-wide setting), or ONNX Runtime's pools, without spin-waiting."""
    plan = thread_plan(cpus)
    log.debug("threads: %s", plan.describe())
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}")
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZATIONS)}, not {quantize!r}")
    if runtime == "auto":
        runtime = choose_runtime(spec, quantize=quantize, device=device)
    if runtime == "torch":
        if quantize != "none":
            raise ValueError("int8 quantization runs on ONNX Runtime: add --runtime onnx")
        if not _installed("torch", "open_clip"):
            raise ModelLoadError("--runtime torch needs torch and open_clip, which are not installed: "
                                 "pip install 'clip-ingest[torch]'")
        from .openclip_embedder import OpenClipEmbedder  # the torch side, imported only when chosen

        size_torch(plan)
        return OpenClipEmbedder(spec, device=device, batch_size=batch_size, **options)
    from .onnx_embedder import OnnxEmbedder

    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if str(device or "").startswith("cuda") else None
    return OnnxEmbedder(onnx_model_dir(spec, quantize=quantize), batch_size=batch_size, providers=providers,
                        session_options=onnx_session_options(plan), **options)


def _installed(*modules: str) -> bool:
    """Whether every module can be imported, found without importing it (torch alone takes ~1.5 s)."""
    try:
        return all(importlib.util.find_spec(name) is not None for name in modules)
    except (ImportError, ValueError):  # a broken or blocked installation
        return False


def has_onnx_towers(spec: str) -> bool:
    """Whether ``spec`` names an export directory that holds ONNX towers (the bundled starter does)."""
    parsed = parse_model_spec(spec)
    if parsed.kind != "local-dir":
        return False
    meta_file = Path(parsed.source) / METADATA_FILE
    return meta_file.is_file() and bool(json.loads(meta_file.read_text(encoding="utf-8")).get("onnx"))


def choose_runtime(spec: str, *, quantize: str = "none", device: str | None = "auto") -> str:
    """What ``--runtime auto`` runs ``spec`` on.

    ONNX Runtime when the model carries ONNX towers (the bundled starter, ``clip-model export
    --onnx``): its fp32 vectors and model id are the torch model's, it starts without importing
    torch (a query answers in about a second) and it needs no torch installed; or when
    ``quantize`` asks for int8. torch for every other spec, where ONNX would first have to load
    the torch model to find or build its export, and when a CUDA device is named and torch is
    installed. ``--runtime onnx`` exports any other model once (cached)."""
    if quantize != "none":
        return "onnx"
    cuda = str(device or "").startswith("cuda") and _installed("torch")
    return "onnx" if has_onnx_towers(spec) and not cuda else "torch"


def onnx_model_dir(spec: str, *, quantize: str = "none") -> Path:
    """A directory :class:`~.onnx_embedder.OnnxEmbedder` loads for ``spec``: the spec itself when
    it is an export with ONNX towers, else the cache entry (built on first use)."""
    parsed = parse_model_spec(spec)
    if quantize == "none" and has_onnx_towers(spec):
        return Path(parsed.source)
    missing = [name for name in ("torch", "open_clip", "onnx") if not _installed(name)]
    if missing:
        raise ModelLoadError(f"{spec!r} has no ONNX towers, and exporting them needs {', '.join(missing)}: "
                             "pip install 'clip-ingest[torch]' once (the export is cached), or use an export "
                             "written by `clip-model export --onnx`")
    # the torch side, imported only to export a model (once; the cache serves later loads)
    from .factory import load_model
    from .openclip_embedder import compute_model_id

    loaded = load_model(parsed)
    model_id = compute_model_id(loaded.name, loaded.model, loaded.preprocess_cfg)
    entry = cache_root() / "onnx" / re.sub(r"[^A-Za-z0-9._-]+", "_", model_id)
    fp32 = entry / "fp32"
    if not (fp32 / METADATA_FILE).is_file():
        _publish(fp32, lambda staging: _export(loaded, model_id, open_clip_name(parsed), spec, staging))
    if quantize == "none":
        return fp32
    int8 = entry / "int8"
    if not (int8 / METADATA_FILE).is_file():
        _publish(int8, lambda staging: _quantize(fp32, staging))
    return int8


def _publish(final: Path, build) -> None:
    """Build into a private staging folder, then rename it into place: a reader never sees half an
    entry, and of two processes building the same entry the second simply uses the first's."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.with_name(f".{final.name}.{uuid.uuid4().hex}.partial")
    try:
        build(staging)
        try:
            os.rename(staging, final)
        except OSError:
            if not (final / METADATA_FILE).is_file():
                raise
    except Exception as exc:
        raise ModelLoadError(f"could not build the ONNX runtime files in {final}: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_metadata(folder: Path, metadata: dict, config: dict) -> None:
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    (folder / METADATA_FILE).write_text(json.dumps(metadata, indent=2), encoding="utf-8")


def _export(loaded, model_id: str, tokenizer: str, spec: str, staging: Path) -> None:
    from .onnx_export import context_length_of, export_onnx

    size = loaded.preprocess_cfg["size"]
    onnx = export_onnx(loaded.model, staging, image_size=int(size[0] if isinstance(size, (list, tuple)) else size),
                       context_length=context_length_of(loaded.model))
    config: dict[str, Any] = {"preprocess_cfg": loaded.preprocess_cfg}
    text_cfg = plain_bpe_text_cfg(loaded.tokenizer)
    if text_cfg is not None:  # read by OnnxEmbedder, which then tokenizes without torch
        config["model_cfg"] = {"text_cfg": text_cfg}
    carried = {key: loaded.metadata[key] for key in CARRIED_METADATA if key in loaded.metadata}
    _write_metadata(staging, {**carried, "name": loaded.name, "model_id": model_id, "source": spec, "tokenizer": tokenizer,
                              "onnx": onnx, "quantize": "none"}, config)


def plain_bpe_text_cfg(tokenizer: Any) -> dict[str, Any] | None:
    """The ``text_cfg`` describing an open_clip ``SimpleTokenizer`` with CLIP's plain BPE (what
    :meth:`~.clip_tokenizer.ClipTokenizer.for_text_config` reads), ``None`` for any other tokenizer."""
    clean = {"_clean_lower": "lower", "_clean_whitespace": "whitespace", "_clean_canonicalize": "canonicalize"}.get(
        getattr(getattr(tokenizer, "clean_fn", None), "__name__", ""))
    if (type(tokenizer).__name__ != "SimpleTokenizer" or clean is None or getattr(tokenizer, "reduction_fn", None) is not None
            or len(getattr(tokenizer, "all_special_ids", ())) != 2):
        return None
    return {"context_length": int(tokenizer.context_length), "tokenizer_kwargs": {"clean": clean}}


def _quantize(fp32: Path, staging: Path) -> None:
    """Dynamic int8 quantization of the fp32 graphs' matrix products (weights int8, activations
    quantized on the fly): the transformer's cost; the patch convolution stays fp32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    metadata = json.loads((fp32 / METADATA_FILE).read_text(encoding="utf-8"))
    config = json.loads((fp32 / "open_clip_config.json").read_text(encoding="utf-8"))
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs advice about static pre-processing through the root logger
    try:
        for tower in ("image", "text"):
            source = fp32 / metadata["onnx"][tower]
            target = staging / metadata["onnx"][tower]
            target.parent.mkdir(parents=True, exist_ok=True)
            quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
    finally:
        root.setLevel(level)
    metadata.update(model_id=metadata["model_id"] + INT8_SUFFIX, quantize="int8")
    _write_metadata(staging, metadata, config)


__all__ = ["CACHE_ENV", "INT8_SUFFIX", "QUANTIZATIONS", "RUNTIMES", "cache_root", "load_embedder", "onnx_model_dir"]
