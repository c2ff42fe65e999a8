"""Near-duplicate finding: precision and recall of the groups at calibrated thresholds, and its cost.

Run ``python -m benchmarks.duplicates --images /work/shared/data/caltech101`` (``--eth80
/work/shared/data/eth80`` adds the ETH-80 views). Planted set: N real photos; a third of them get
four edited copies made *differently* from the calibration's edits (an off-centre 80 % crop, JPEG
quality 25, a 3 degree rotation, a 60 % downscale), so the calibration is not graded on its own
edits. Everything is ingested into a fresh Qdrant Edge collection with the model (default: the
starter), the model is calibrated as ``clip-search duplicates`` does (far-apart images of the
collection), and :func:`find_groups` runs at each ``--relevance``. Reported per relevance: the raw
threshold it maps to, pair precision and recall against the planted groups, groups found, seconds.
With ``--eth80``: the views of one ETH-80 object (41 angles) are counted as one group, what
"similar" rather than "near-identical" means; expect low recall there.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from clip_ingest.connectors.backends import open_store
from clip_ingest.connectors.calibration import calibration_for, pick_diverse
from clip_ingest.connectors.ingest.pipeline import IngestOptions, run_ingest
from clip_ingest.connectors.openclip_embedder import OpenClipEmbedder
from clip_ingest.connectors.search.duplicates import find_groups

from . import common


def evaluation_edits(image: Image.Image) -> list[Image.Image]:
    """Edits unlike the calibration's: off-centre crop, JPEG q25, small rotation, downscale."""
    width, height = image.size
    crop = image.crop((int(width * 0.15), int(height * 0.05), int(width * 0.95), int(height * 0.85))).resize((width, height))
    encoded = io.BytesIO()
    image.save(encoded, "JPEG", quality=25)
    rotated = image.rotate(3, resample=Image.Resampling.BICUBIC, expand=False, fillcolor=(255, 255, 255))
    small = image.resize((max(1, int(width * 0.6)), max(1, int(height * 0.6))))
    return [crop, Image.open(io.BytesIO(encoded.getvalue())).convert("RGB"), rotated, small]


def plant(paths: Sequence[Path], into: Path) -> dict[str, set[str]]:
    """Copy ``paths`` into ``into``, four edits of every third one; returns {group: file paths}."""
    into.mkdir(parents=True, exist_ok=True)
    groups: dict[str, set[str]] = {}
    for i, path in enumerate(paths):
        image = Image.open(path).convert("RGB")
        original = into / f"{i:05d}.png"
        image.save(original)
        groups[str(i)] = {str(original)}
        if i % 3 == 0:
            for j, edited in enumerate(evaluation_edits(image)):
                copy = into / f"{i:05d}-edit{j}.png"
                edited.save(copy)
                groups[str(i)].add(str(copy))
    return groups


def eth80_groups(root: str, objects: int) -> dict[str, set[str]]:
    """{object: its view files} for the first ``objects`` ETH-80 objects (sorted)."""
    views = [p for p in Path(root).rglob("*") if p.suffix.lower() in common.IMAGE_SUFFIXES]
    folders = sorted({p.parent for p in views})[:objects]
    return {str(folder): {str(p) for p in views if p.parent == folder} for folder in folders}


def pair_scores(found: list[set[str]], truth: dict[str, set[str]]) -> tuple[float, float]:
    def pairs(groups: Any) -> set[tuple[str, str]]:
        return {(a, b) for g in groups for a in g for b in g if a < b}
    got, want = pairs(found), pairs(truth.values())
    return (len(got & want) / len(got) if got else 1.0), (len(got & want) / len(want) if want else 1.0)


def measure(embedder: OpenClipEmbedder, folder: Path, truth: dict[str, set[str]], root: Path, name: str,
            relevances: Sequence[float]) -> list[dict[str, Any]]:
    rows = []
    with open_store("qdrant-edge", name, path=str(root)) as store:
        run_ingest(store, embedder, IngestOptions(collection=name, directories=[str(folder)], progress=False))
        stored = sorted(store.retrieve([p.id for p in store.scroll(fields=[])], with_vectors=True), key=lambda p: p.id)
        readable = [p for p in stored if os.path.isfile(p.payload["path"])]
        picked = pick_diverse(np.array([p.vector for p in readable]), min(64, len(readable) // 2))
        calibration = calibration_for(embedder, [readable[i].payload["path"] for i in picked])
        for relevance in relevances:
            threshold = calibration.threshold(relevance)
            if threshold > 1:
                rows.append({"set": name, "relevance": relevance, "threshold": threshold, "precision": "-",
                             "recall": "-", "groups": 0, "seconds": 0.0})
                continue
            seconds, groups = common.timed(lambda: find_groups(store, threshold))
            precision, recall = pair_scores([{p.payload["path"] for p in g.members} for g in groups], truth)
            rows.append({"set": name, "relevance": relevance, "threshold": threshold, "precision": precision,
                         "recall": recall, "groups": len(groups), "seconds": seconds, "points": store.count()})
    return rows


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--images", help="a real image folder (e.g. /work/shared/data/caltech101) [default: generated]")
    parser.add_argument("--n", type=int, help="photos [default: 300; smoke: 9]")
    parser.add_argument("--eth80", help="the ETH-80 folder: its object views as groups")
    parser.add_argument("--eth80-objects", type=int, default=20)
    parser.add_argument("--model", default="starter")
    parser.add_argument("--relevance", type=float, nargs="+", default=[0.5, 0.9, 0.99])
    args = parser.parse_args(argv)
    args.n = args.n or (9 if args.smoke else 300)
    work = common.Workdir.create(args.workdir)
    os.environ.setdefault("CLIP_INGEST_CACHE", str(work.path / "cache"))  # a fresh calibration, never the user's
    rows: list[dict[str, Any]] = []
    try:
        embedder = OpenClipEmbedder(args.model, device="cpu")
        if args.images:  # spread over the whole folder: its first N files are one class
            every = sorted(p for p in Path(args.images).rglob("*") if p.suffix.lower() in common.IMAGE_SUFFIXES)
            paths = every[:: max(1, len(every) // args.n)][: args.n]
            source = f"{args.images} ({len(paths)} images, every {max(1, len(every) // args.n)}th)"
        else:
            paths, source = common.input_images(None, args.n, work.path / "source", 256)
        truth = plant(paths, work.path / "planted")
        rows += measure(embedder, work.path / "planted", truth, work.path / "db", "planted", args.relevance)
        if args.eth80:
            groups = eth80_groups(args.eth80, args.eth80_objects)
            folder = work.path / "eth80"
            folder.mkdir()
            for files in groups.values():
                for f in files:
                    (folder / f"{Path(f).parent.name}-{Path(f).name}").symlink_to(Path(f).resolve())  # a relative --eth80 must not dangle
            linked = {k: {str(folder / f"{Path(f).parent.name}-{Path(f).name}") for f in v} for k, v in groups.items()}
            rows += measure(embedder, folder, linked, work.path / "db", "eth80", args.relevance)
    finally:
        work.close()
    config = {"model": args.model, "images": len(paths), "source": source, "eth80": args.eth80}
    return common.report("duplicates", config, {"pair precision / recall of the groups": rows}, [], args.json)


if __name__ == "__main__":
    main()
