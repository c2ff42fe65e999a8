"""An :class:`~clip_ingest.connectors.embedder.Embedder` that runs an exported model with onnxruntime.

It reads an export directory written by ``clip-model export --onnx`` (see
``clip_ingest.model.export``; the bundled starter is one), or an entry of the ``--runtime onnx``
cache (:mod:`.runtime`): the ONNX towers for the forward passes, the same preprocessing (from
``open_clip_config.json``) and tokenizer, and the ``model_id`` recorded with the weights the
graphs were exported from. Its vectors match
:class:`~clip_ingest.connectors.openclip_embedder.OpenClipEmbedder` on the same directory
(cosine distance below 1e-4), so both may write to the same collection.

It imports no torch for the models nearly every CLIP is: CLIP's BPE tokenizer
(:mod:`.clip_tokenizer`) and square ``shortest``/``squash`` preprocessing (:mod:`.pixels`) are
done in plain Python, numpy and Pillow, with open_clip's exact numbers (tested). A model with
another tokenizer or preprocessing uses open_clip's, which needs the ``torch`` extra.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnxruntime as ort

from .clip_tokenizer import ClipTokenizer
from .decode import DEFAULT_MAX_MEGAPIXELS
from .embedder import TowerEmbedder, l2_normalise
from .model_spec import METADATA_FILE, ModelLoadError, open_clip_module
from .pixels import Preparer, PillowTransform


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing: not an export directory written by `clip-model export`")
    return json.loads(path.read_text(encoding="utf-8"))


def _open_clip_transform(preprocess_cfg: dict[str, Any]) -> Any:
    """open_clip's eval transform (torch), for preprocessing :class:`~.pixels.PillowTransform` does not do."""
    from .preprocess import fast_transform  # the torch side: imported only for such a model

    transform = open_clip_module().transform
    return fast_transform(transform.image_transform_v2(transform.PreprocessCfg(**preprocess_cfg), is_train=False))


def _open_clip_tokenizer(name: str) -> Any:
    """open_clip's tokenizer for ``name`` (an export or cache entry's), for a text config that
    :class:`~.clip_tokenizer.ClipTokenizer` does not describe."""
    return open_clip_module().get_tokenizer(name)


class OnnxEmbedder(TowerEmbedder):
    """Embed images and texts with the ONNX towers of an export directory.

    Args:
        export_dir: a directory written by ``clip-model export --onnx``.
        batch_size: images/texts per run; results do not depend on it.
        providers: onnxruntime execution providers (default: CPU).
        max_megapixels: images above this size are refused (:class:`ImageDecodeError`).
        session_options: onnxruntime ``SessionOptions`` of both towers (default: onnxruntime's;
            :func:`~clip_ingest.connectors.runtime.load_embedder` sizes them, see :mod:`..cpus`).
    """

    def __init__(
        self,
        export_dir: str | os.PathLike,
        *,
        batch_size: int = 32,
        providers: Sequence[str] | None = None,
        max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS,
        session_options: Any = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        directory = Path(export_dir).expanduser()
        metadata = _read_json(directory / METADATA_FILE)
        config = _read_json(directory / "open_clip_config.json")
        onnx_files = metadata.get("onnx")
        if not onnx_files:
            raise ModelLoadError(f"{directory} has no ONNX towers: export it with `clip-model export --onnx`")
        self.export_dir = directory
        self.batch_size = batch_size
        self.max_megapixels = max_megapixels
        self._model_id = str(metadata["model_id"])
        self._name = str(metadata.get("name") or directory.name)
        self.metadata = metadata
        pp_cfg = config["preprocess_cfg"]
        size = pp_cfg.get("size", 224)
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.preparer = Preparer(PillowTransform.for_preprocess_cfg(pp_cfg) or _open_clip_transform(pp_cfg),
                                 self.image_size, max_megapixels, as_numpy=True)
        text_cfg = (config.get("model_cfg") or {}).get("text_cfg")
        self._tokenizer = (ClipTokenizer.for_text_config(text_cfg) if text_cfg is not None else None) or _open_clip_tokenizer(
            metadata.get("tokenizer") or f"local-dir:{directory}")
        providers = list(providers or ["CPUExecutionProvider"])
        self._image, self._text = (ort.InferenceSession(str(directory / onnx_files[tower]), sess_options=session_options,
                                                        providers=providers) for tower in ("image", "text"))
        self._dim = int(self.embed_tokens(["a"]).shape[1])

    @staticmethod
    def _run(session, batch: np.ndarray) -> np.ndarray:
        (out,) = session.run(None, {session.get_inputs()[0].name: batch})
        return l2_normalise(out)

    def stack(self, inputs: list[np.ndarray]) -> np.ndarray:
        return np.stack(inputs)

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        return self._run(self._image, np.asarray(pixels, dtype=np.float32))

    def embed_tokens(self, texts: list[str]) -> np.ndarray:
        return self._run(self._text, np.asarray(self._tokenizer(texts), dtype=np.int64))
