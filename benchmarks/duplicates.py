"""Near-duplicates on a real collection: what each tier flags on all of Caltech-101, planted edits and ETH-80.

Run ``python -m benchmarks.duplicates --caltech /work/shared/data/caltech101 --eth80
/work/shared/data/eth80`` (about 25 minutes on 2 cores for the two models). The collection:

* all 8,677 Caltech-101 photos; its ``Faces`` and ``Faces_easy`` folders hold the same 435
  photos (``Faces_easy`` a tight crop): the natural true pairs;
* planted edits of ``--planted`` of them (seeded), one kind each, in turn: ``crop`` (75-88 % of
  the side, off centre), ``resize`` (half), ``reencode`` (JPEG quality 25), ``colour``
  (saturation 1.5, brightness 0.85), ``rotate`` (3 or 5 degrees, corners cut), ``flip`` (mirror),
  ``border`` (a screenshot-style grey frame, wider at the top);
* all 3,280 ETH-80 views: 41 views of each of 80 objects, "similar, not duplicate".

True pairs are the planted ones, the Faces pairs and the copies Caltech-101 holds of its own
photos, closed under "same photo" (an edit of a ``Faces_easy`` photo is a duplicate of its
``Faces`` original too). Caltech's copies come from two sources apart from the product's pixel
check: a test of its own (:func:`source_copies`: the same picture at 32 x 32 grey levels, mean
difference at most 3 of 255, same aspect ratio within 2 %, within a class), and pairs a person
looked at side by side (:data:`COPIES_BY_EYE`, ``--copies-by-eye``: crops, frames and mirror
images the 32-pixel test cannot see; the photos of a pair labelled "same" count as one class, as
``Faces`` and ``Faces_easy`` do). Everything is ingested into
a fresh Qdrant Edge collection per model, the model is calibrated as ``clip-search duplicates``
does, and each tier runs at its default: *duplicates* (k-NN at relevance 0.5, then the pixel
check) and *similar* (k-NN at relevance 0.9). Reported per model and tier: images flagged beside
the true ones, pair precision, groups, mixed-class groups (Faces and Faces_easy one class, an
ETH-80 category one class), recall per edit kind and of the Faces pairs, ETH-80 view pairs
flagged, seconds. ``--sheet`` writes the most similar false pairs as one picture (some of
Caltech-101's own photos are duplicates: look before trusting the precision). ``--smoke`` runs
on a few generated images in Caltech's layout (:func:`common.class_folders`) with the starter.
"""

from __future__ import annotations

import io
import json
import os
from collections import Counter
from itertools import combinations
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from clip_ingest.connectors.backends import open_store
from clip_ingest.connectors.calibration import collection_calibration, cosine_for
from clip_ingest.connectors.ingest.pipeline import IngestOptions, run_ingest
from clip_ingest.connectors.openclip_embedder import OpenClipEmbedder
from clip_ingest.connectors.search.duplicates import TIERS, SamePhotoCheck, default_min_relevance, find_groups

from . import common

KINDS = ("crop", "resize", "reencode", "colour", "rotate", "flip", "border")


def edit(image: Image.Image, kind: str, rng: np.random.Generator) -> Image.Image:
    """``image`` edited the way near-duplicates arise (one of :data:`KINDS`)."""
    width, height = image.size
    if kind == "crop":
        share = rng.uniform(0.75, 0.88)
        cw, ch = int(width * share), int(height * share)
        x, y = int(rng.integers(0, width - cw + 1)), int(rng.integers(0, height - ch + 1))
        return image.crop((x, y, x + cw, y + ch))
    if kind == "resize":
        return image.resize((max(1, width // 2), max(1, height // 2)), Image.Resampling.LANCZOS)
    if kind == "reencode":
        encoded = io.BytesIO()
        image.save(encoded, "JPEG", quality=25)
        return Image.open(io.BytesIO(encoded.getvalue())).convert("RGB")
    if kind == "colour":
        return ImageEnhance.Brightness(ImageEnhance.Color(image).enhance(1.5)).enhance(0.85)
    if kind == "rotate":
        turned = image.rotate(float(rng.choice([-5, -3, 3, 5])), resample=Image.Resampling.BICUBIC)
        margin = int(0.06 * min(width, height))
        return turned.crop((margin, margin, width - margin, height - margin))
    if kind == "flip":
        return ImageOps.mirror(image)
    if kind == "border":
        frame = int(0.1 * max(width, height))
        canvas = Image.new("RGB", (width + 2 * frame, height + 3 * frame), (240, 240, 240))
        canvas.paste(image, (frame, 2 * frame))
        return canvas
    raise ValueError(kind)


#: pairs of Caltech-101 photos labelled by eye (``same`` or ``different``; paths relative to the Caltech folder)
COPIES_BY_EYE = Path(__file__).resolve().parent / "data" / "caltech101_copies_by_eye.tsv"
#: :func:`source_copies`: mean absolute difference of two 32 x 32 grey thumbnails, 0-255
COPY_MAX_DIFFERENCE = 3.0
COPY_MAX_ASPECT = 0.02


def source_copies(photos: Sequence[Path]) -> list[tuple[Path, Path]]:
    """Pairs of photos of one folder that are the same picture (a copy, a re-save, a resize, a
    mirror image): 32 x 32 grey thumbnails, one of them mirrored or not, whose mean absolute
    difference is at most :data:`COPY_MAX_DIFFERENCE`, and aspect ratios within
    :data:`COPY_MAX_ASPECT`."""
    by_folder: dict[Path, list[Path]] = {}
    for photo in photos:
        by_folder.setdefault(photo.parent, []).append(photo)
    pairs = []
    for members in by_folder.values():
        thumbs, aspects = [], []
        for photo in members:
            with Image.open(photo) as image:
                aspects.append(image.width / image.height)
                thumbs.append(np.asarray(image.convert("L").resize((32, 32), Image.Resampling.BOX), dtype=np.float32).ravel())
        grid = np.stack(thumbs)
        mirrored = grid.reshape(-1, 32, 32)[:, :, ::-1].reshape(len(members), -1)
        aspect = np.asarray(aspects)
        for i in range(len(members) - 1):
            difference = np.minimum(np.abs(grid[i + 1:] - grid[i]).mean(axis=1),
                                    np.abs(grid[i + 1:] - mirrored[i]).mean(axis=1))
            same = (difference <= COPY_MAX_DIFFERENCE) & (np.abs(aspect[i + 1:] / aspect[i] - 1) <= COPY_MAX_ASPECT)
            pairs += [(members[i], members[i + 1 + j]) for j in np.flatnonzero(same)]
    return pairs


def copies_by_eye(labels: Path, caltech: Path) -> list[tuple[Path, Path]]:
    """The pairs of ``labels`` (tab-separated: path, path, ``same`` or ``different``; ``#``
    comments) labelled ``same`` whose two photos are under ``caltech``."""
    pairs = []
    for line in labels.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            first, second, label = line.split("\t")
            if label not in ("same", "different"):
                raise common.BenchmarkInputError(f"{labels}: label {label!r} is neither same nor different")
            if label == "same" and (caltech / first).is_file() and (caltech / second).is_file():
                pairs.append((caltech / first, caltech / second))
    return pairs


def build(caltech: Path, eth80: Path | None, planted: int, into: Path, seed: int,
          labels: Path | None = COPIES_BY_EYE) -> tuple[dict[str, Any], dict[str, int]]:
    """Lay out the collection under ``into``; returns its truth, {path: (class, photo key, kind)},
    and how many pairs of Caltech's own copies it holds, per source."""
    photos = sorted(p for p in caltech.rglob("*") if p.suffix.lower() in common.IMAGE_SUFFIXES)
    if not photos:
        raise common.BenchmarkInputError(f"no Caltech-101 images under {caltech}")
    files: dict[str, tuple[str, str, str]] = {}
    for photo in photos:
        link = into / "caltech" / photo.parent.name / photo.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(photo.resolve())
        label = "Faces" if photo.parent.name == "Faces_easy" else photo.parent.name
        key = f"Faces/{photo.stem}" if label == "Faces" else f"{photo.parent.name}/{photo.stem}"
        files[str(link)] = (label, key, "original")
    link_of = {photo: str(into / "caltech" / photo.parent.name / photo.name) for photo in photos}
    found = source_copies(photos)
    by_eye = copies_by_eye(labels, caltech) if labels is not None else []
    for a, b in [*found, *by_eye]:  # one key and one class for the copies: every edit of either joins them
        old, (new_label, new, _) = files[link_of[b]][1], files[link_of[a]]
        for path, (label, key, kind) in list(files.items()):
            if key == old:
                files[path] = (new_label, new, kind)
    rng = np.random.default_rng(seed)
    (into / "planted").mkdir()
    for n, index in enumerate(rng.choice(len(photos), planted, replace=False)):
        photo, kind = photos[index], KINDS[n % len(KINDS)]
        label, key, _ = files[str(into / "caltech" / photo.parent.name / photo.name)]
        out = into / "planted" / f"{photo.parent.name}__{photo.stem}__{kind}.jpg"
        edit(Image.open(photo).convert("RGB"), kind, rng).save(out, quality=92)
        files[str(out)] = (label, key, kind)
    if eth80 is not None:
        for view in sorted(p for p in eth80.rglob("*") if p.suffix.lower() in common.IMAGE_SUFFIXES):
            link = into / "eth80" / view.relative_to(eth80)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(view.resolve())
            files[str(link)] = (f"eth80/{view.parent.parent.name}", f"eth80/{view.parent.name}/{view.stem}", "eth80")
    return files, {"32-pixel test": len(found), "by eye": len(by_eye)}


def score(groups: list[set[str]], files: dict[str, tuple[str, str, str]]) -> dict[str, Any]:
    """Pair precision, flagged vs true images, mixed-class groups and recall per kind of ``groups``."""
    by_key: dict[str, list[str]] = {}
    for path, (_, key, _) in files.items():
        by_key.setdefault(key, []).append(path)
    true_pairs = {frozenset(p) for members in by_key.values() for p in combinations(members, 2)}
    flagged = {frozenset(p) for g in groups for p in combinations(sorted(g), 2)}
    hits = flagged & true_pairs
    false = flagged - true_pairs
    row: dict[str, Any] = {
        "groups": len(groups),
        "images flagged": sum(len(g) for g in groups),
        "true images": sum(len(m) for m in by_key.values() if len(m) > 1),
        "pair precision": round(len(hits) / len(flagged), 3) if flagged else 1.0,
        "mixed-class groups": round(sum(len({files[p][0] for p in g}) > 1 for g in groups) / max(1, len(groups)), 3),
        "eth80 view pairs flagged": sum(all(files[p][2] == "eth80" for p in pair) for pair in false),
    }
    for kind in (*KINDS, "faces"):
        if kind == "faces":
            wanted = {frozenset(m) for k, m in by_key.items() if k.startswith("Faces/") and len(m) == 2
                      and all(files[p][2] == "original" for p in m)}
        else:
            wanted = {pair for pair in true_pairs if any(files[p][2] == kind for p in pair)
                      and any(files[p][2] == "original" for p in pair)}
        row[f"recall {kind}"] = round(len(wanted & flagged) / len(wanted), 2) if wanted else "-"
    row["_false"] = sorted(false, key=sorted)
    row["_flagged"] = sorted((sorted(pair), pair in true_pairs) for pair in flagged)
    return row


def contact_sheet(pairs: Sequence[frozenset], path: Path, per_row: int = 8, cell: tuple[int, int] = (120, 90)) -> None:
    """The pairs as one picture: each pair one column of two cells."""
    width, height = cell
    rows = (len(pairs) + per_row - 1) // per_row
    sheet = Image.new("RGB", (per_row * (width + 10), rows * (2 * height + 15)), "white")
    for n, pair in enumerate(pairs):
        for m, member in enumerate(sorted(pair)):
            thumb = Image.open(member).convert("RGB").resize(cell)
            sheet.paste(thumb, ((n % per_row) * (width + 10), (n // per_row) * (2 * height + 15) + m * height))
    sheet.save(path)


def measure(model: str, folder: Path, files: dict, root: Path, sheet: Path | None,
            pairs_out: Path | None = None) -> list[dict[str, Any]]:
    embedder = OpenClipEmbedder(model, device="cpu")
    name = "real_" + "".join(ch if ch.isalnum() else "_" for ch in model)
    rows = []
    with open_store("qdrant-edge", name, path=str(root / name)) as store:
        seconds, _ = common.timed(lambda: run_ingest(store, embedder, IngestOptions(
            collection=name, directories=[str(folder)], progress=False)))
        try:
            calibration = collection_calibration(embedder, store)
        except ValueError as exc:
            return [{"model": model, "tier": tier, "error": str(exc)} for tier in TIERS]
        for tier in TIERS:
            relevance = default_min_relevance(tier)
            try:
                cut = cosine_for(calibration, relevance)
            except ValueError as exc:
                rows.append({"model": model, "tier": tier, "error": str(exc)})
                continue
            check = SamePhotoCheck() if tier == "duplicates" else None
            took, groups = common.timed(lambda: find_groups(store, cut, same_photo=check))
            found = [{p.payload["path"] for p in g.members} for g in groups]
            row = score(found, files)
            false = row.pop("_false")
            flagged = row.pop("_flagged")
            if pairs_out is not None:
                with pairs_out.open("a", encoding="utf-8") as out:
                    for (a, b), true in flagged:
                        out.write(json.dumps({"model": model, "tier": tier, "a": a, "b": b, "true": true,
                                              "kinds": [files[a][2], files[b][2]]}) + "\n")
            if sheet is not None and tier == "duplicates" and model == "starter":
                contact_sheet(false[:32], sheet)
            rows.append({"model": model, "tier": tier, "relevance": relevance, "cosine cut": round(cut, 4), **row,
                         "ingest s": round(seconds, 1), "find s": round(took, 1)})
    return rows


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--caltech", help="the Caltech-101 folder (../shared/data/caltech101); required unless --smoke")
    parser.add_argument("--eth80", help="the ETH-80 folder: its views as look-alikes [default: left out]")
    parser.add_argument("--planted", type=int, help="photos given one planted edit each [default: 350; smoke: 7]")
    parser.add_argument("--models", nargs="+", help="[default: starter clip-ingest-photo-s:random; smoke: starter]")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--sheet", help="write the starter's most similar false pairs (duplicates tier) as a PNG here")
    parser.add_argument("--pairs", help="write every flagged pair (model, tier, paths, true or not) as JSON lines here")
    parser.add_argument("--copies-by-eye", default=str(COPIES_BY_EYE), metavar="TSV",
                        help="Caltech pairs labelled by eye, the 'same' ones counted true ('' for none) [default: %(default)s]")
    args = parser.parse_args(argv)
    if not args.caltech and not args.smoke:
        raise common.BenchmarkInputError("--caltech is required (the Caltech-101 folder)")
    args.planted = args.planted or (7 if args.smoke else 350)
    args.models = args.models or (["starter"] if args.smoke else ["starter", "clip-ingest-photo-s:random"])
    work = common.Workdir.create(args.workdir)
    os.environ.setdefault("CLIP_INGEST_CACHE", str(work.path / "cache"))  # a fresh calibration, never the user's
    rows: list[dict[str, Any]] = []
    try:
        folder = work.path / "collection"
        caltech = Path(args.caltech) if args.caltech else common.class_folders(work.path / "caltech")
        files, copies = build(caltech, Path(args.eth80) if args.eth80 else None, args.planted, folder, args.seed,
                              Path(args.copies_by_eye) if args.copies_by_eye else None)
        for model in args.models:
            rows += measure(model, folder, files, work.path / "db", Path(args.sheet) if args.sheet else None,
                            Path(args.pairs) if args.pairs else None)
    finally:
        work.close()
    kinds = Counter(kind for _, _, kind in files.values())
    config = {"images": len(files), "planted": args.planted, "kinds": dict(kinds), "seed": args.seed,
              "caltech copies (pairs)": copies}
    return common.report("duplicates", config, {"near-duplicates per tier, at its default": rows}, [], args.json)


if __name__ == "__main__":
    main()
