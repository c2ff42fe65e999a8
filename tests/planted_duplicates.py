"""Test helper: planted near-duplicate groups (distinct generated pictures, :func:`imagegen.photo`,
and edited copies of some of them made the way :func:`~clip_ingest.connectors.calibration.edits`
makes them), and the pair precision / recall of found groups against them."""

from __future__ import annotations

from pathlib import Path

from clip_ingest.connectors.calibration import edits

from imagegen import photo


def planted(root: Path, seeds: range, edited: int) -> dict[str, set[str]]:
    """Write one picture per seed (:func:`photo`), and 3 edited copies of the first ``edited``;
    returns {group: paths}."""
    root.mkdir(parents=True, exist_ok=True)
    groups: dict[str, set[str]] = {}
    for n, seed in enumerate(seeds):
        image = photo(seed)
        original = root / f"img{seed:03d}.png"
        image.save(original)
        groups[str(seed)] = {str(original)}
        if n < edited:
            for i, copy in enumerate(edits(image)[:3]):  # crop, JPEG q40, brightness
                path = root / f"img{seed:03d}-edit{i}.png"
                copy.save(path)
                groups[str(seed)].add(str(path))
    return groups


def pair_scores(found: list[set[str]], truth: dict[str, set[str]]) -> tuple[float, float]:
    """(precision, recall) over pairs of images put in one group."""
    def pairs(groups):
        return {tuple(sorted((a, b))) for g in groups for a in g for b in g if a < b}
    got, want = pairs(found), pairs(truth.values())
    return (len(got & want) / len(got) if got else 1.0), len(got & want) / len(want)
