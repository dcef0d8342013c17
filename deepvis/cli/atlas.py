"""``deepvis atlas``: every unit of chosen layers over a collection of any size, in one process or on Ray.

Prints the summary as JSON on stdout; the bar (images, images per second, time left) goes to stderr.  A rerun
of the same command finishes an interrupted atlas.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial

from deepvis import atlas
from deepvis.cli.common import PRESET_HELP, add_model_options, emit, model_files, model_of, run_with_bar
from deepvis.models_file import registered


def add_atlas(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "atlas", help="every unit of chosen layers: its top-k images over a collection of any size and its "
                      "statistics, as a folder to share (in one process or on Ray)",
        description="Reads COLLECTION in shards and keeps, per unit, only its k best images (merged exactly), "
        "its mean, how often it is zero and whether it is dead; memory and disk grow with units × k, not with "
        "the collection. Each finished shard is kept, so the same command resumes. See deepvis.atlas.")
    parser.add_argument("collection", metavar="COLLECTION",
                        help="a folder (subfolders included), a .txt file listing image paths, or `samples`")
    layers = parser.add_mutually_exclusive_group()
    layers.add_argument("--layers", default=None, help="comma-separated layers (default: the model's default layer)")
    layers.add_argument("--all", action="store_true", help="every offered layer")
    parser.add_argument("--k", type=int, default=9, help="images kept per unit (default: %(default)s)")
    parser.add_argument("--out", required=True, metavar="ATLAS", help="the atlas folder (new, or this atlas's)")
    parser.add_argument("--ray", default="off", metavar="auto|ADDRESS|off",
                        help="off: this process (default); auto: a local Ray, or the cluster `ray start` made "
                             "here; ADDRESS: join that cluster (the collection must be readable on every node)")
    parser.add_argument("--workers", type=int, default=None,
                        help="Ray workers (default: one per GPU of the cluster, else one per CPU)")
    parser.add_argument("--shard", type=int, default=atlas.SHARD,
                        help="images per shard, the unit of resuming and of Ray's work (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=atlas.BATCH, help="images per forward pass (default: "
                        "%(default)s)")
    parser.add_argument("--optimize", default=None, metavar="PRESET",
                        help="also each unit's optimized image under this preset (" + PRESET_HELP + ")")
    parser.add_argument("--seed", type=int, default=0, help="the optimized images' seed (default: %(default)s)")
    parser.add_argument("--size", type=int, default=None,
                        help="the optimized images' side in pixels (default: the network's input size)")
    parser.add_argument("--compact", action="store_true",
                        help="keep the optimized images as JPEG pictures only (no float pixels): a bundle to share")
    parser.add_argument("--no-crops", action="store_false", dest="crops",
                        help="keep the top-k records but no strips of their crops (a smaller bundle)")
    parser.add_argument("--units-per-batch", type=int, default=None, dest="unit_batch",
                        help="units of one layer optimized together (default: 16)")
    add_model_options(parser)


def _load(options: dict, files: list[str]):
    """The model the CLI options name, built again in a Ray worker (with the same models files)."""
    with registered(files):
        return model_of(argparse.Namespace(**options))


def run_atlas(args: argparse.Namespace) -> int:
    loaded = model_of(args)
    names = ([info.name for info in loaded.layers] if args.all else
             [n.strip() for n in args.layers.split(",") if n.strip()] if args.layers else [loaded.default_layer])
    ray = None if args.ray in ("off", "", None) else args.ray
    options = {key: value for key, value in vars(args).items()
               if key in ("model", "weights", "input", "mean", "std", "resize", "classes", "title")}
    loader = partial(_load, {**options, "device": None}, model_files(args)) if ray else None
    work = atlas.build(loaded, args.collection, names, args.out, k=args.k, shard=args.shard, batch=args.batch,
                       ray=ray, loader=loader, workers=args.workers, optimize=args.optimize, seed=args.seed,
                       size=args.size, unit_batch=args.unit_batch, compact=args.compact,
                       crops=args.crops)
    summary = run_with_bar(_phases(work), "atlas", "image")
    return emit(summary.to_dict())


def _phases(work):
    """The atlas's steps with one bar per phase: images (records), then units (crops, optimized images)."""
    from tqdm import tqdm

    phase, bar = None, None
    try:
        while True:
            try:
                step = next(work)
            except StopIteration as finished:
                return finished.value
            name = step.detail or "images"
            if name == "images":
                yield step
                continue
            if name != phase:
                if bar is not None:
                    bar.close()
                phase = name
                bar = tqdm(total=step.total, desc=name, unit="unit", file=sys.stderr)
            if step.resumed:
                bar.n = bar.initial = step.done
                bar.refresh()
            else:
                bar.update(step.done - bar.n)
    finally:
        if bar is not None:
            bar.close()
        work.close()
