"""The read/decode and embed stages of the ingestion pipeline.

``DecodeStage`` runs in a pool of worker threads: it reads a file once, hashes
the bytes, and decodes + preprocesses only content the collection does not hold
yet. ``EmbedStage`` (one thread) groups decoded images into batches for the
model and turns results into write operations for the :class:`~.writer.Writer`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np
from PIL import Image

from ..decode import DecodedImage, ImageDecodeError, decode_image
from ..embedder import Embedder
from .exif import photo_metadata
from .ids import point_id, sha256_bytes
from .metadata import MetadataLimits, check_record
from .payload import clean_metadata, new_payload
from .plan import Candidate
from .reader import ReadTimeout, read_file
from .scan import SourceFile, os_path, read_sidecar
from .state import StoredState

if TYPE_CHECKING:
    from ..pixels import Preparer


class ImageEncoder:
    """Adapts any :class:`Embedder` to the split decode (in workers) / embed (batched) pipeline.

    Embedders with a ``preparer`` (:class:`~..pixels.Preparer`) or with ``decode`` /
    ``preprocess`` / ``embed_pixels`` (e.g. ``OpenClipEmbedder``) get their input tensors built
    in the decode workers; any other embedder gets decoded PIL images passed to ``embed_images``.
    ``ImageEncoder(None, preparer)`` only prepares: what a decode worker without the model runs.
    """

    def __init__(self, embedder: Embedder | None, preparer: Preparer | None = None) -> None:
        self.embedder = embedder
        self.preparer = preparer if embedder is None else getattr(embedder, "preparer", None)
        self.split = self.preparer is not None or all(
            hasattr(embedder, a) for a in ("decode", "preprocess", "embed_pixels"))

    def prepare(self, data: bytes) -> tuple[DecodedImage, Any]:
        """Decode raw file bytes -> (facts about the image, model input)."""
        if self.preparer is not None:
            decoded = self.preparer.decode(data)
            return decoded, self.preparer.preprocess(decoded.image)
        if self.split:
            decoded = self.embedder.decode(data)  # type: ignore[union-attr]
            return decoded, self.embedder.preprocess(decoded.image)  # type: ignore[union-attr]
        decoded = decode_image(data)
        return decoded, decoded.image

    def embed(self, inputs: Sequence[Any]) -> np.ndarray:
        """Model inputs from :meth:`prepare` -> ``(n, dim)`` float32 rows."""
        assert self.embedder is not None, "a prepare-only encoder cannot embed"
        if isinstance(inputs[0], Image.Image):
            return self.embedder.embed_images(list(inputs))
        if isinstance(inputs[0], np.ndarray):  # ONNX Runtime's inputs are numpy arrays
            return self.embedder.embed_pixels(np.stack(inputs))  # type: ignore[attr-defined]
        import torch

        return self.embedder.embed_pixels(torch.stack(list(inputs)))  # type: ignore[attr-defined]


def file_metadata(file: SourceFile, limits: MetadataLimits = MetadataLimits()) -> dict[str, Any]:
    """The user metadata of a scanned file: its sidecar, then what the scan found (folder label,
    manifest row) over it, reserved keys dropped.

    Raises:
        ValueError: the sidecar is unreadable, malformed or past ``limits``
            (:class:`~.metadata.MetadataError`).
    """
    merged = {**read_sidecar(os_path(file.path), limits), **file.metadata}
    return clean_metadata(check_record(merged, f"metadata of {file.path}", limits), file.path)


@dataclass
class Loaded:
    """A candidate file read and hashed (not read: ``metadata_only``); ``pixels`` is set when its
    content must be embedded. ``metadata`` is the file's user metadata, read for every candidate."""

    candidate: Candidate
    sha256: str
    point_id: str
    known: bool
    decoded: DecodedImage | None = None
    pixels: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)
    photo: dict[str, Any] = field(default_factory=dict)
    """The content's EXIF fields (:mod:`.exif`), read with the bytes that are decoded."""
    vector: np.ndarray | None = None
    """Set by an executor that embeds where it decodes (:class:`~.ray_executor.RayExecutor`)."""


@dataclass(frozen=True)
class Failed:
    """A candidate that could not be ingested (goes to the dead-letter file)."""

    path: str
    reason: str
    detail: str


@dataclass
class NewPoint:
    """Write op: content not in the collection; ``vector`` is None in a dry run."""

    candidate: Candidate
    point_id: str
    vector: np.ndarray | None
    payload: dict[str, Any]


@dataclass(frozen=True)
class KnownContent:
    """Write op: content already stored (or embedded earlier in this run) found at this path, with
    the path's user metadata (stored when the path is, or becomes, the point's primary)."""

    candidate: Candidate
    point_id: str
    metadata: dict[str, Any] = field(default_factory=dict)


WriteOp = NewPoint | KnownContent


@dataclass
class DecodeStage:
    """Read one candidate: hash it, read its metadata, and decode + preprocess it only when its
    content is new. A ``metadata_only`` candidate (image unchanged) is not read at all.

    With ``decode=False`` (dry run) new content is hashed but not decoded. ``read`` reads one
    file (default: plainly; executors pass a :class:`~.reader.TimedReader`'s, so a stalled
    read fails that file with reason ``timeout``).
    """

    encoder: ImageEncoder
    collection: str
    state: StoredState
    decode: bool = field(default=True, kw_only=True)
    read: Callable[[str], bytes] = field(default=read_file, kw_only=True)
    metadata_limits: MetadataLimits = field(default=MetadataLimits(), kw_only=True)

    def __call__(self, candidate: Candidate) -> Loaded | Failed:
        path = candidate.file.path
        try:
            metadata = file_metadata(candidate.file, self.metadata_limits)
        except ValueError as exc:
            return Failed(path, "bad_metadata", str(exc))
        if candidate.metadata_only:
            return Loaded(candidate, "", candidate.previous_ids[0], known=True, metadata=metadata)
        try:
            data = self.read(os_path(path))
        except ReadTimeout as exc:
            return Failed(path, "timeout", str(exc))
        except FileNotFoundError:
            return Failed(path, "missing", "file disappeared during the run")
        except OSError as exc:
            return Failed(path, "unreadable", exc.strerror or str(exc))
        sha = sha256_bytes(data)
        pid = point_id(self.collection, sha)
        loaded = Loaded(candidate, sha, pid, known=self.state.known(pid), metadata=metadata)
        if loaded.known or not self.decode:
            return loaded
        if not data:
            return Failed(path, "empty", "file is empty (0 bytes)")
        try:
            loaded.decoded, loaded.pixels = self.encoder.prepare(data)
        except ImageDecodeError as exc:
            return Failed(path, exc.reason, exc.detail)
        loaded.photo = photo_metadata(data, path)
        return loaded


class EmbedStage:
    """Batches new content for the model; content seen twice in one run is embedded once."""

    def __init__(self, encoder: ImageEncoder, model_id: str, batch_size: int, *, embed: bool = True) -> None:
        self.encoder = encoder
        self.model_id = model_id
        self.batch_size = batch_size
        self.embed = embed
        self.embedded = 0
        self._batch: list[Loaded | KnownContent] = []
        self._to_embed = 0
        self._new_ids: set[str] = set()

    def feed(self, item: Loaded) -> Iterator[WriteOp]:
        """Take one loaded file; yields the write ops of a full batch (in input order)."""
        if item.known or item.point_id in self._new_ids:
            self._batch.append(KnownContent(item.candidate, item.point_id, item.metadata))
        else:
            self._new_ids.add(item.point_id)
            self._batch.append(item)
            self._to_embed += 1
        if self._to_embed >= self.batch_size:
            yield from self.flush()

    def flush(self) -> Iterator[WriteOp]:
        """Embed what is batched and yield every pending op."""
        batch, self._batch, self._to_embed = self._batch, [], 0
        new = [b for b in batch if isinstance(b, Loaded)]
        by_item: dict[int, np.ndarray | None] = {id(b): b.vector for b in new}
        todo = [b for b in new if b.vector is None]
        if todo and self.embed:
            by_item.update(zip(map(id, todo), self.encoder.embed([b.pixels for b in todo])))
            self.embedded += len(todo)
        for b in batch:
            yield b if isinstance(b, KnownContent) else self._new_point(b, by_item[id(b)])

    def _new_point(self, item: Loaded, vector: np.ndarray | None) -> NewPoint:
        file = item.candidate.file
        decoded = item.decoded
        payload = new_payload(
            path=file.path,
            mtime_ns=file.mtime_ns,
            size=file.size,
            sha256=item.sha256,
            width=decoded.width if decoded else 0,
            height=decoded.height if decoded else 0,
            format=decoded.format if decoded else None,
            model_id=self.model_id,
            metadata=item.metadata,
            meta_sig=file.meta_sig,
            photo=item.photo,
        )
        return NewPoint(item.candidate, item.point_id, vector, payload)
