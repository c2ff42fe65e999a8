"""Decode stage side by side: the pipeline before and after its faster decode and preprocessing.

Run ``python -m benchmarks.decode --images /work/shared/data/caltech101``. For each model's input
size (default: ``clip-ingest-tiny``, 32 px, the model that decode bounds, and ViT-B-32, 224 px),
in every round and for each variant:

- ``decode stage``: read + hash + decode + preprocess on the pipeline's own ``DecodeStage`` and
  worker threads, no model (what bounds ingestion of a small model);
- ``decode`` and ``preprocess`` alone, one thread, per image (where the time goes);
- ``decode stage`` on generated 3000x3000 JPEGs (camera-sized: the DCT scaling at work), which
  says how many CPU cores a GPU needs to be kept fed.

Variants: ``pillow + open_clip tail`` (the pipeline before: Pillow's JPEG draft + load, then the
eval transform as open_clip builds it), ``pillow + fused tail`` (the same resize and crop, then one
uint8 -> normalised float pass) and ``simplejpeg + fused tail`` (the pipeline now: libjpeg-turbo
through simplejpeg at the same DCT scale), on the default decode threads; and the last once more
on ``--executor processes`` (``--processes`` decode processes, on all images and on a quarter: their start-up and streaming rate apart). Every
variant's model inputs are compared with the first's (max abs difference). Target: the pipeline
now >= 1.5x before, on the decode stage of the model that decode bounds.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Callable, Sequence

from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image

from clip_ingest.connectors.decode import DecodedImage, decode_image
from clip_ingest.connectors.ingest.pipeline import IngestOptions
from clip_ingest.connectors.ingest.process_executor import ProcessExecutor
from clip_ingest.connectors.openclip_embedder import OpenClipEmbedder

from . import common
from .ingest import TINY, decode_throughput

DEFAULT_MODELS = (TINY, "ViT-B-32:random")
PER_IMAGE = 600  # images timed one by one per round
LARGE_SIDE = 3000  # a 9-megapixel photo, as cameras and phones write them


class _Variant:
    """An embedder's decode/preprocess pair, swappable, with the pipeline's split-stage interface."""

    def __init__(self, embedder: OpenClipEmbedder, decode: Callable[[Any], DecodedImage], preprocess: Callable) -> None:
        self.decode, self.preprocess, self.embed_pixels = decode, preprocess, embedder.embed_pixels


def _pillow_decoder(embedder: OpenClipEmbedder) -> Callable[[Any], DecodedImage]:
    """Pillow alone (draft + load): a lazily opened PIL image takes ``decode_image``'s Pillow path."""
    return lambda data: decode_image(Image.open(io.BytesIO(Path(data).read_bytes() if isinstance(data, (str, Path)) else data)),
                                     max_megapixels=embedder.max_megapixels, draft_size=embedder.image_size)


BEFORE, NOW = "pillow + open_clip tail", "simplejpeg + fused tail"
PROCESSES = NOW + ", processes"


def variants(embedder: OpenClipEmbedder) -> dict[str, _Variant]:
    reference = image_transform_v2(PreprocessCfg(**embedder.loaded.preprocess_cfg), is_train=False)
    pillow = _pillow_decoder(embedder)
    return {BEFORE: _Variant(embedder, pillow, reference),
            "pillow + fused tail": _Variant(embedder, pillow, embedder.preprocess),
            NOW: _Variant(embedder, embedder.decode, embedder.preprocess)}


def per_image(variant: _Variant, datas: Sequence[bytes]) -> tuple[float, float]:
    """(decode images/s, preprocess images/s), one thread."""
    seconds, images = common.timed(lambda: [variant.decode(d).image for d in datas])
    pre, _ = common.timed(lambda: [variant.preprocess(i) for i in images])
    return len(datas) / seconds, len(datas) / pre


def max_difference(variant: _Variant, reference: _Variant, datas: Sequence[bytes]) -> float:
    return max(float((variant.preprocess(variant.decode(d).image) - reference.preprocess(reference.decode(d).image)).abs().max())
               for d in datas)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, help="images [default: 2000; smoke: 12]")
    parser.add_argument("--images", help="a real image folder (e.g. /work/shared/data/caltech101) instead of generated images")
    parser.add_argument("--models", nargs="+", help=f"model specs [default: {' '.join(DEFAULT_MODELS)}; smoke: {TINY}]")
    parser.add_argument("--workers", type=int, default=IngestOptions.workers, help="decode threads [default: pipeline's]")
    parser.add_argument("--large", type=int, help=f"generated {LARGE_SIDE}x{LARGE_SIDE} JPEGs (camera-sized) [default: 40; smoke: 2]")
    parser.add_argument("--repeats", type=int, help="interleaved rounds, medians reported [default: 3; smoke: 1]")
    parser.add_argument("--processes", type=int, default=2, help="decode processes of the processes variant [default: 2]")
    args = parser.parse_args(argv)
    args.n = args.n or (12 if args.smoke else 2000)
    args.large = args.large or (2 if args.smoke else 40)
    args.models = args.models or ([TINY] if args.smoke else list(DEFAULT_MODELS))
    args.repeats = args.repeats or (1 if args.smoke else 3)
    work = common.Workdir.create(args.workdir)
    samples: dict[tuple[str, str, str], list[float]] = {}
    differences: dict[tuple[str, str], float] = {}
    notes: list[str] = []
    try:
        paths, source = common.input_images(args.images, args.n, work.path / "images", 256)
        datas = [Path(p).read_bytes() for p in paths[:PER_IMAGE]]
        quarter = work.path / "images-quarter"
        common.real_images(str(work.path / "images"), max(1, len(paths) // 4), quarter)
        common.generate_images(work.path / "large", args.large, size=LARGE_SIDE)
        embedders = {model: OpenClipEmbedder(model, device="cpu") for model in args.models}
        per_model = {model: variants(embedder) for model, embedder in embedders.items()}
        for model, found in per_model.items():
            for name, variant in found.items():
                differences[(model, name)] = max_difference(variant, found[BEFORE], datas[:50])
            differences[(model, PROCESSES)] = differences[(model, NOW)]  # the same preparer, in another process
        for _ in range(args.repeats):
            for model, found in per_model.items():
                for name, variant in found.items():
                    samples.setdefault((model, name, "decode stage"), []).append(decode_throughput(variant, work.path / "images", args.workers))
                    decode, pre = per_image(variant, datas)
                    samples.setdefault((model, name, "decode, 1 thread"), []).append(decode)
                    samples.setdefault((model, name, "preprocess, 1 thread"), []).append(pre)
                    samples.setdefault((model, name, f"decode stage, {LARGE_SIDE} px JPEG"), []).append(
                        decode_throughput(variant, work.path / "large", args.workers))
                # the pipeline's real embedder (its preparer is what the worker processes run), on
                # all the images and on a quarter: the worker start-up apart from the streaming rate
                processes = ProcessExecutor(workers=args.processes)
                for folder, measure in ((work.path / "images", "decode stage"), (quarter, "decode stage, quarter")):
                    samples.setdefault((model, PROCESSES, measure), []).append(
                        decode_throughput(embedders[model], folder, args.workers, processes))
    finally:
        work.close()
    rows = [{"model": m, "variant": v, "measure": what, "images_per_s": common.median(values),
             "max_abs_diff_vs_before": differences[(m, v)]} for (m, v, what), values in samples.items()]
    rate = {(r["model"], r["variant"], r["measure"]): r["images_per_s"] for r in rows}
    n, nq = len(paths), max(1, len(paths) // 4)
    for model in args.models:  # processes: start-up seconds and the streaming rate, from the two runs
        fixed, marginal = common.fixed_and_marginal((nq, nq / rate[(model, PROCESSES, "decode stage, quarter")]),
                                                    (n, n / rate[(model, PROCESSES, "decode stage")]))
        rows.append({"model": model, "variant": PROCESSES, "measure": f"decode stage, marginal (start-up {fixed:.1f} s)",
                     "images_per_s": marginal, "max_abs_diff_vs_before": differences[(model, PROCESSES)]})
        rate[(model, PROCESSES, "marginal")] = marginal
    ratios = [common.Ratio(f"{model}: {name} / {BEFORE}, decode stage",
                           rate[(model, name, "decode stage")] / rate[(model, BEFORE, "decode stage")], 1.5 if name == NOW else None)
              for model, found in per_model.items() for name in [*found, PROCESSES] if name != BEFORE]
    ratios += [common.Ratio(f"{model}: {PROCESSES}, marginal / {BEFORE}, decode stage",
                            rate[(model, PROCESSES, "marginal")] / rate[(model, BEFORE, "decode stage")], 1.5)
               for model in args.models]
    config = {"images": len(paths), "source": source, "large_images": args.large, "models": args.models, "workers": args.workers,
              "processes": args.processes, "repeats": args.repeats}
    return common.report("decode", config, {"images/s (median of rounds)": rows}, ratios, args.json, notes)


if __name__ == "__main__":
    main()
