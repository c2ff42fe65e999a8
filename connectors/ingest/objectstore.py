"""Object-store sources: ``s3://bucket/prefix`` (and every other URI pyarrow's filesystems take:
``gs://``, ``hdfs://``, ``abfs://``) walked and read like a local folder.

A source URI is listed recursively (one paged ``ListObjects`` walk, no per-object request),
each object's ``size`` and ``LastModified`` stand in for a file's size and mtime, so a re-run
skips unchanged objects exactly as it skips unchanged files, and the payload ``path`` is the
object's URI (``s3://bucket/prefix/cat.jpg``). Change detection is size + LastModified (pyarrow's
listing carries no ETag): S3 sets LastModified at every upload, at one-second resolution, so an
object overwritten with another of the same size within the same second as the first upload is
the one change a re-run misses.

Credentials and endpoints come only from the environment or the SDK's own config files
(``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_PROFILE``, ``AWS_DEFAULT_REGION``,
``AWS_ENDPOINT_URL`` for MinIO, Ceph or any S3-compatible server; the Google / Azure equivalents),
never from the URI: a URI is stored in every payload and printed in logs, so one carrying a
query string (``?access_key=…``) is refused. Ray workers read objects themselves, so they need
the same variables: ``deploy/kubernetes/kuberay/rayjob.yaml`` gives head and workers the
``clip-ingest-secrets`` Secret as environment.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Iterator
from urllib.parse import urlsplit

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(path: str) -> bool:
    """``True`` for ``scheme://…`` (an object-store source), ``False`` for a local path."""
    return bool(_URI.match(path))


@dataclass(frozen=True)
class ObjectInfo:
    """One object under a source URI."""

    uri: str
    rel: str
    """Path below the source URI (decides the shard and the folder label, like a file's)."""
    size: int
    mtime_ns: int


def _split(uri: str) -> tuple[str, str]:
    """``"s3://bucket/a/b.jpg"`` -> ``("s3://bucket", "/a/b.jpg")``; refuses credentials in the URI."""
    parts = urlsplit(uri)
    if parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError(f"{parts.scheme}://{parts.hostname or ''}/…: give credentials and endpoints in the "
                         "environment (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, …), not in the source URI")
    return f"{parts.scheme}://{parts.netloc}", parts.path


@functools.lru_cache(maxsize=None)
def _filesystem(base: str):
    """One pyarrow filesystem per ``scheme://bucket`` and process (clients are costly to build)."""
    from pyarrow.fs import FileSystem

    return FileSystem.from_uri(base)


def _locate(uri: str):
    """``(filesystem, path inside it)`` for ``uri``."""
    base, path = _split(uri)
    fs, base_path = _filesystem(base)
    return fs, base_path.rstrip("/") + "/" + path.strip("/") if path.strip("/") else base_path


def is_folder(uri: str) -> bool:
    """Whether ``uri`` names a prefix that holds objects (a "folder").

    Raises:
        OSError: the store cannot be reached or refuses the credentials (the message says which).
    """
    from pyarrow.fs import FileType

    fs, path = _locate(uri)
    return fs.get_file_info(path).type == FileType.Directory


def walk(root: str) -> Iterator[ObjectInfo]:
    """Every object under ``root``, sorted by URI (so listings, shards and runs are repeatable).

    Raises:
        OSError: the listing failed (the run reports the prefix as unreadable and prunes nothing in it).
    """
    from pyarrow.fs import FileSelector, FileType

    root = root.rstrip("/")
    fs, path = _locate(root)
    infos = fs.get_file_info(FileSelector(path, recursive=True))
    prefix = path.rstrip("/") + "/"
    for info in sorted((i for i in infos if i.type == FileType.File), key=lambda i: i.path):
        rel = info.path[len(prefix):] if info.path.startswith(prefix) else info.path
        yield ObjectInfo(f"{root}/{rel}", rel, int(info.size or 0), int(info.mtime_ns or 0))


def read(uri: str) -> bytes:
    """The bytes of the object at ``uri`` (``FileNotFoundError`` when it is gone)."""
    fs, path = _locate(uri)
    with fs.open_input_stream(path) as stream:
        return stream.read()


__all__ = ["ObjectInfo", "is_folder", "is_uri", "read", "walk"]
