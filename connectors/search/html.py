"""A self-contained HTML page of search results (``clip-search --html FILE``).

Thumbnails are inlined as base64 ``data:`` URIs so the page can be mailed or archived without
the image folder; every text from the payload is HTML-escaped, so a hostile file name or label
cannot inject markup.
"""

from __future__ import annotations

import base64
import html
import io
import json
from typing import Sequence

from ..backends.base import Hit
from ..decode import ImageDecodeError, decode_image

#: payload field with the image's file path (written by ingestion)
PATH_FIELD = "path"
THUMBNAIL_SIZE = 160

_STYLE = """
body { font-family: sans-serif; margin: 1.5em; }
.grid { display: flex; flex-wrap: wrap; gap: 1em; }
.hit { width: 220px; border: 1px solid #ccc; border-radius: 6px; padding: 0.5em; }
.hit img { max-width: 200px; max-height: 200px; display: block; margin: auto; }
.noimg { height: 120px; background: #eee; display: flex; align-items: center; justify-content: center; }
.score { font-weight: bold; }
.id { font-family: monospace; font-size: 0.7em; word-break: break-all; }
pre { font-size: 0.75em; white-space: pre-wrap; word-break: break-all; }
"""


def thumbnail_jpeg(path: str, size: int = THUMBNAIL_SIZE) -> bytes | None:
    """JPEG bytes of the image at ``path`` scaled to fit ``size`` px, or None if unreadable."""
    try:
        decoded = decode_image(path, draft_size=size)
    except (ImageDecodeError, OSError):
        return None
    image = decoded.image.convert("RGB")
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


def thumbnail_data_uri(path: str, size: int = THUMBNAIL_SIZE) -> str | None:
    """A JPEG ``data:`` URI of the image at ``path`` scaled to ``size`` px, or None if unreadable."""
    jpeg = thumbnail_jpeg(path, size)
    return None if jpeg is None else "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def render_html(title: str, hits: Sequence[Hit], first_rank: int = 1) -> str:
    """The results page: one card per hit (rank, thumbnail, score, id, payload), best first."""
    cards = "\n".join(_card(rank, hit) for rank, hit in enumerate(hits, start=first_rank))
    return _page(title, f"<p>{len(hits)} result(s)</p>\n<div class=\"grid\">\n{cards}\n</div>")


def render_groups_html(title: str, groups: Sequence[tuple[str, Sequence[Hit]]]) -> str:
    """A page of groups (``clip-search duplicates --html``): a heading and a row of cards each."""
    sections = "\n".join(
        f'<section id="{html.escape(name, quote=True)}"><h2>{html.escape(name)}</h2>\n<div class="grid">\n'
        + "\n".join(_card(rank, hit) for rank, hit in enumerate(hits, start=1)) + "\n</div></section>"
        for name, hits in groups
    )
    return _page(title, f"<p>{len(groups)} group(s)</p>\n{sections}")


def _page(title: str, body: str) -> str:
    escaped_title = html.escape(title)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{escaped_title}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{escaped_title}</h1>\n{body}\n</body>\n</html>\n"
    )


def _card(rank: int, hit: Hit) -> str:
    path = hit.payload.get(PATH_FIELD)
    uri = thumbnail_data_uri(path) if isinstance(path, str) else None
    label = html.escape(str(path) if path is not None else hit.id, quote=True)
    image = f'<img src="{uri}" alt="{label}">' if uri else f'<div class="noimg">{label}</div>'
    payload = html.escape(json.dumps(hit.payload, indent=1, ensure_ascii=False, default=str))
    return (
        f'<div class="hit" id="hit-{rank}" data-id="{html.escape(hit.id, quote=True)}">'
        f"{image}<div>#{rank} <span class=\"score\">{hit.score:.4f}</span></div>"
        f'<div class="id">{html.escape(hit.id)}</div><pre>{payload}</pre></div>'
    )


__all__ = ["PATH_FIELD", "render_groups_html", "render_html", "thumbnail_data_uri", "thumbnail_jpeg"]
