"""Manifests of the system-installed training sources of the starter model (the benchmark data
sets, Caltech-101 and Flickr8k among them, are read by :mod:`clip_ingest.model.datasets`).

- Open Clip Art Library (public domain; Debian's ``openclipart-png`` + ``openclipart-svg``):
  the SVG twin of each PNG carries a title and keywords, which are real captions.
- Noto Color Emoji (SIL OFL 1.1; Debian's ``fonts-noto-color-emoji``) named by Unicode's
  ``emoji-test.txt`` (Unicode licence; Debian's ``unicode-data``): ~1,900 drawings of everyday
  things, each with its CLDR short name and subgroup ("delivery truck", "transport-ground").

Each function yields manifest rows ``{"path", "label", "captions"}`` that
``clip-model`` reads from JSONL.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .datasets.class_names import article

OPENCLIPART_PNG = Path("/usr/share/openclipart/png")
OPENCLIPART_SVG = Path("/usr/share/openclipart/svg")
EMOJI_TEST = Path("/usr/share/unicode/emoji/emoji-test.txt")
EMOJI_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
EMOJI_FONT_SIZE = 109
"""The one size of Noto Color Emoji's bitmap strikes (136 x 128 px glyphs)."""
_BOILERPLATE = {"open clip art library", "clip art", "clipart", "image", "media", "png", "svg", "public domain"}


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


def _shrink(job: tuple[str, str, int]) -> str | None:
    """Decode ``source`` (transparency on white, like training and ingestion do), shrink it to at
    most ``max_side`` px and save it as PNG at ``target``; ``None`` when it cannot be decoded."""
    from clip_ingest.connectors.decode import ImageDecodeError, decode_image

    source, target, max_side = job
    try:
        image = decode_image(source, draft_size=(max_side, max_side)).image
    except ImageDecodeError:
        return None
    image.thumbnail((max_side, max_side))
    image.save(target, "PNG")
    return target


def shrunk_rows(rows: Iterator[dict], image_dir: Path, max_side: int, workers: int = 2) -> Iterator[dict]:
    """The rows with each image replaced by a copy at most ``max_side`` px on a side in
    ``image_dir`` (named by a hash of the source path; existing copies are reused), so that a
    training run does not decode multi-megapixel originals (clip art PNGs reach 10k px) in every
    epoch. Rows whose image cannot be decoded are dropped, as training would skip them."""
    import hashlib
    from concurrent.futures import ProcessPoolExecutor

    image_dir = image_dir.resolve()  # manifests resolve relative paths against their own folder
    image_dir.mkdir(parents=True, exist_ok=True)
    rows = list(rows)
    targets = [str(image_dir / (hashlib.sha1(row["path"].encode()).hexdigest()[:20] + ".png")) for row in rows]
    ready = {target for target in targets if Path(target).exists()}
    todo = [(row["path"], target, max_side) for row, target in zip(rows, targets) if target not in ready]
    with ProcessPoolExecutor(workers) as pool:
        ready.update(filter(None, pool.map(_shrink, todo, chunksize=16)))
    for row, target in zip(rows, targets):
        if target in ready:
            yield {**row, "path": target}


@dataclass(frozen=True)
class Emoji:
    """One fully-qualified emoji of ``emoji-test.txt``."""

    text: str
    name: str
    group: str
    subgroup: str


def read_emoji_test(path: Path = EMOJI_TEST) -> list[Emoji]:
    """The fully-qualified emoji of Unicode's ``emoji-test.txt``, skin-tone variants left out
    (they repeat a drawing under the same name with ": medium skin tone" added)."""
    emoji, group, subgroup = [], "", ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif "; fully-qualified" in line and "#" in line:
            codes = line.split(";", 1)[0].split()
            # "# 🚚 E0.6 delivery truck": the emoji, its Unicode version, its CLDR short name
            name = re.sub(r"^\S+\s+E\d+\.\d+\s+", "", line.split("#", 1)[1].strip())
            if "skin tone" not in name and group != "Component":
                emoji.append(Emoji("".join(chr(int(c, 16)) for c in codes), name, group, subgroup))
    return emoji


def emoji_captions(item: Emoji) -> list[str]:
    """``delivery truck`` in ``transport-ground`` -> "delivery truck", "a delivery truck emoji",
    "an emoji of a delivery truck", "delivery truck, transport ground"; ``flag: Germany`` ->
    "flag, Germany", "a flag emoji, Germany", ..."""
    head, _, detail = item.name.partition(": ")
    name = f"{head}, {detail}" if detail else head
    word = article(head)
    return [name, f"{word} {head} emoji" + (f", {detail}" if detail else ""), f"an emoji of {word} {name}",
            f"{name}, {_clean(item.subgroup)}"]


def emoji_rows(image_dir: Path, test_file: Path = EMOJI_TEST, font: Path = EMOJI_FONT,
               size: int = EMOJI_FONT_SIZE) -> Iterator[dict]:
    """Rows for every emoji of ``test_file`` drawn by ``font`` on white into ``image_dir``
    (one PNG per emoji, named by its code points; existing files are reused). Emoji the font
    cannot draw (an empty image) are left out; label = ``emoji/<subgroup>``."""
    from PIL import Image, ImageDraw, ImageFont

    face = ImageFont.truetype(str(font), size)
    image_dir = image_dir.resolve()
    image_dir.mkdir(parents=True, exist_ok=True)
    for item in read_emoji_test(test_file):
        target = image_dir / ("-".join(f"{ord(c):x}" for c in item.text) + ".png")
        if not target.exists():
            left, top, right, bottom = face.getbbox(item.text)
            canvas = Image.new("RGB", (max(right - left, 1), max(bottom - top, 1)), "white")
            ImageDraw.Draw(canvas).text((-left, -top), item.text, font=face, embedded_color=True)
            if canvas.getextrema() == ((255, 255),) * 3:
                continue
            canvas.save(target.with_suffix(".tmp.png"), "PNG")
            target.with_suffix(".tmp.png").replace(target)
        yield {"path": str(target), "label": f"emoji/{item.subgroup}", "captions": emoji_captions(item)}
