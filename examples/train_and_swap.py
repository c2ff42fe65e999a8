"""Train a retrieval-optimised, realigned model on labelled images and swap it into a collection.

    python examples/train_and_swap.py --data examples/photos --method mcip --swap new

1. ``finetune`` (``--method retrieval``: ArcMargin on the folder labels; ``mcip``: plus
   multi-caption ArcMargin on "a photo of a {label}." captions) trains the image tower;
2. ``realign`` retrains the last text blocks so text queries match the new image vectors;
3. the realigned model directory is a model spec: images are re-embedded with it, either into a
   new collection (``--swap new``, the old one keeps serving until you switch) or in place
   (``--swap recreate``: the collection is dropped and rebuilt, as ``clip-ingest --recreate``).

The same as the CLI: ``clip-model finetune --method mcip ...``, ``clip-model realign ...``,
``clip-ingest --model OUT/realign --recreate ...``. The defaults are tiny (one epoch) so that
the example runs in seconds; real training needs more epochs and data (see model/recipes/).
"""

from __future__ import annotations

from pathlib import Path

from example_common import PHOTOS, common_parser, ingest_folder, open_embedded_qdrant

from clip_ingest.connectors import OpenClipEmbedder
from clip_ingest.model.augment import AugmentConfig
from clip_ingest.model.stages import FinetuneConfig, RealignConfig, run_finetune, run_realign
from clip_ingest.model.train import TrainConfig

TEMPLATES = ("a photo of a {label}.",)


def train(args) -> Path:
    """Fine-tune then realign ``args.model`` on ``args.data``; returns the realigned model directory."""
    out = Path(args.out)
    common = dict(
        data=args.data,
        train=TrainConfig(
            epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, warmup_steps=0, seed=0, device=args.device
        ),
        augment=AugmentConfig(enabled=False),
        templates=TEMPLATES,
    )
    finetuned = run_finetune(FinetuneConfig(model=args.model, out_dir=str(out / "finetune"), method=args.method, **common))
    print(f"finetune ({args.method}): {finetuned.model_dir}, final loss {finetuned.fit.final_loss:.4f}")
    realigned = run_realign(RealignConfig(model=str(finetuned.model_dir), out_dir=str(out / "realign"), **common))
    print(f"realign: {realigned.model_dir}, final loss {realigned.fit.final_loss:.4f}")
    return Path(realigned.model_dir)


def main(argv: list[str] | None = None) -> None:
    parser = common_parser(__doc__)
    parser.add_argument("--data", default=str(PHOTOS), help="training images, one folder per label (default: examples/photos)")
    parser.add_argument("--method", choices=("retrieval", "mcip"), default="mcip", help="fine-tuning method (default: mcip)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per stage (default: 1)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per step (default: 8)")
    parser.add_argument("--lr", type=float, default=1e-5, help="backbone learning rate (default: 1e-5)")
    parser.add_argument("--out", default="clip-ingest-data/train-and-swap", help="where the stage models go")
    parser.add_argument(
        "--swap", choices=("new", "recreate"), default="new",
        help="new: ingest into COLLECTION-realigned; recreate: rebuild COLLECTION in place (default: new)",
    )
    args = parser.parse_args(argv)

    model_dir = train(args)
    embedder = OpenClipEmbedder(str(model_dir), device=args.device)
    target = args.collection if args.swap == "recreate" else f"{args.collection}-realigned"
    with open_embedded_qdrant(args.data_dir, target) as store:
        before = store.collection_model()
        stats = ingest_folder(store, embedder, args.photos, target, recreate=args.swap == "recreate")
        print(f"collection {target}: was {before[0] if before else 'absent'}, now {embedder.model_id}")
        print(f"swapped: {stats.embedded} images embedded, {store.count()} points")
    print(f"search it with: clip-search --model {model_dir} --collection {target} --qdrant-path {Path(args.data_dir) / 'qdrant'} --text 'a photo of an apple'")


if __name__ == "__main__":
    main()
