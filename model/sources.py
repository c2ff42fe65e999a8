"""Manifests for the license-clean training sources of the starter model.

- Caltech-101 (CC BY 4.0): class-per-folder images; captions from the class name.
- Open Clip Art Library (public domain; Debian's ``openclipart-png`` + ``openclipart-svg``):
  the SVG twin of each PNG carries a title and keywords, which are real captions.

Each function yields manifest rows ``{"path", "label", "captions"}`` that
``clip-model`` reads from JSONL.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterator

OPENCLIPART_PNG = Path("/usr/share/openclipart/png")
OPENCLIPART_SVG = Path("/usr/share/openclipart/svg")
_BOILERPLATE = {"open clip art library", "clip art", "clipart", "image", "media", "png", "svg", "public domain"}


def class_caption(label: str) -> str:
    """``faces_easy`` -> ``a photo of a faces easy``."""
    return f"a photo of a {label.replace('_', ' ').lower()}"


def caltech101_rows(root: Path, split: str = "train") -> Iterator[dict]:
    """Rows of the standard Caltech-101 split listed in ``root/{split}.txt``."""
    for line in (root / f"{split}.txt").read_text().splitlines():
        rel = line.strip()
        if rel:
            label = rel.split("/")[0]
            yield {"path": str(root / rel), "label": label, "captions": [class_caption(label)]}


def _clean(text: str) -> str:
    text = re.sub(r"[_\-]+", " ", text)
    return re.sub(r"\s+", " ", text).strip().lower()


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(el: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in el if _local(c.tag) == name]


def svg_captions(svg: Path) -> list[str]:
    """Title and keyword captions of one Open Clip Art SVG (authors' names and boilerplate dropped)."""
    try:
        root = ET.parse(svg).getroot()
    except (ET.ParseError, OSError):
        return []
    work = next((el for el in root.iter() if _local(el.tag) == "Work"), None)
    if work is None:
        return []
    titles = _children(work, "title")
    title = _clean(titles[0].text or "") if titles else ""
    creators = {_clean(el.text or "") for c in _children(work, "creator") for el in c.iter() if el.text}
    keywords = [
        _clean(el.text or "")
        for subject in _children(work, "subject")
        for el in subject.iter()
        if _local(el.tag) == "li" and el.text
    ]
    keywords = list(dict.fromkeys(k for k in keywords if len(k) > 2 and k not in creators and k not in _BOILERPLATE))
    captions = []
    if title and title not in _BOILERPLATE:
        captions.append(f"a drawing of {title}")
        if keywords:
            captions.append(f"{title}, {', '.join(keywords[:6])}")
    captions += [f"clip art of {k}" for k in keywords[:4]]
    return captions


def openclipart_rows(png_root: Path = OPENCLIPART_PNG, svg_root: Path = OPENCLIPART_SVG) -> Iterator[dict]:
    """Rows for every Open Clip Art PNG whose SVG twin has at least one caption; label = top folder."""
    for png in sorted(png_root.rglob("*.png")):
        rel = png.relative_to(png_root)
        captions = svg_captions((svg_root / rel).with_suffix(".svg"))
        if captions:
            yield {"path": str(png), "label": f"clipart/{rel.parts[0]}", "captions": captions}


def write_jsonl(rows: Iterator[dict], out: Path) -> int:
    """Write rows as JSONL; returns how many."""
    out.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with out.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
            n += 1
    return n
