"""An item's image file and its thumbnails: the file is only the ``path`` that ingestion stored
in the item's payload (never a path a caller gives), and only a regular file; thumbnails are
cached in memory while the file is unchanged."""

from __future__ import annotations

import os
import stat
import threading
from collections import OrderedDict
from typing import Any

from ..ingest.scan import os_path
from ..search.html import PATH_FIELD, thumbnail_jpeg

#: thumbnail edge lengths a client may ask for (bounded, so the cache cannot be flooded; 1024: the page's full view)
THUMBNAIL_SIZES = (64, 128, 160, 256, 384, 512, 1024)
#: thumbnails kept in memory (about 10-30 KB each)
THUMBNAIL_CACHE = 2048


class ThumbnailUnavailable(LookupError):
    """The item has no readable image file (no ``path`` payload, or the file is gone)."""


def image_file(point_id: str, payload: dict[str, Any]) -> tuple[Any, os.stat_result]:
    """``(path, stat)`` of the image file of the item ``point_id`` whose payload is ``payload``:
    only the ``path`` ingestion stored, and only a regular file (never a FIFO or a device a
    payload names); :class:`ThumbnailUnavailable` else."""
    path = payload.get(PATH_FIELD)
    if not isinstance(path, str):
        raise ThumbnailUnavailable(f"item {point_id} has no stored image path")
    path = os_path(path)  # a stored name that was not UTF-8 is opened by its real bytes
    try:
        info = os.stat(path)
    except OSError:
        raise ThumbnailUnavailable(f"the image file of item {point_id} is gone") from None
    if not stat.S_ISREG(info.st_mode):
        raise ThumbnailUnavailable(f"the image of item {point_id} is not a regular file")
    return path, info


def check_size(size: int) -> None:
    """``ValueError`` unless ``size`` is one of :data:`THUMBNAIL_SIZES`."""
    if size not in THUMBNAIL_SIZES:
        raise ValueError(f"size must be one of {', '.join(map(str, THUMBNAIL_SIZES))}")


class ThumbnailCache:
    """JPEG thumbnails of items' image files, the :data:`THUMBNAIL_CACHE` most recent kept
    (thread-safe)."""

    def __init__(self) -> None:
        self._thumbs: OrderedDict[tuple, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def thumbnail(self, point_id: str, payload: dict[str, Any], size: int) -> bytes:
        """A JPEG of the item's image (see :func:`image_file`) fitting ``size`` px, cached while
        the file is unchanged."""
        check_size(size)
        path, info = image_file(point_id, payload)
        key = (point_id, size, info.st_mtime_ns, info.st_size)
        with self._lock:
            if key in self._thumbs:
                self._thumbs.move_to_end(key)
                return self._thumbs[key]
        jpeg = thumbnail_jpeg(path, size)
        if jpeg is None:
            raise ThumbnailUnavailable(f"the image file of item {point_id} cannot be decoded")
        with self._lock:
            self._thumbs[key] = jpeg
            while len(self._thumbs) > THUMBNAIL_CACHE:
                self._thumbs.popitem(last=False)
        return jpeg


__all__ = ["THUMBNAIL_CACHE", "THUMBNAIL_SIZES", "ThumbnailCache", "ThumbnailUnavailable", "check_size", "image_file"]
