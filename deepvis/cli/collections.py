"""Commands on a collection of photos: ``index``, ``top``, ``merge`` and ``embed``.

Each prints JSON on stdout; reading a folder shows a bar on stderr and skips (and lists)
broken files instead of stopping.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from deepvis import atlas, embed, index, units
from deepvis.cli.common import LAYER_HELP, add_model_options, emit, model_of, run_with_bar, write_png
from deepvis.errors import DeepvisError

COLLECTION_HELP = "a folder on this machine (subfolders included), or `samples` for the bundled photos"


def add_index(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "index", help="index a folder of photos: each unit's top images, kept on disk (incremental)",
        description="Reads every image under DIR once and stores, per layer and channel, each image's maximum "
        "and its position (SQLite; see deepvis.index). Run again after adding photos: only new or changed "
        "files are read. Broken files are skipped and listed.")
    parser.add_argument("directory", metavar="DIR", help=COLLECTION_HELP)
    layers = parser.add_mutually_exclusive_group()
    layers.add_argument("--layers", default=None, help="comma-separated layers (default: the model's default layer)")
    layers.add_argument("--all", action="store_true", help="every offered layer (large: 8 bytes per channel per "
                        "image per layer)")
    parser.add_argument("--batch", type=int, default=16, help="images per forward pass (default: %(default)s)")
    parser.add_argument("--db", default=None, help="index file (default: one per model and folder in the cache)")
    add_model_options(parser)


def run_index(args: argparse.Namespace) -> int:
    loaded = model_of(args)
    if args.all:
        layers = [info.name for info in loaded.layers]
    elif args.layers:
        layers = [name.strip() for name in args.layers.split(",") if name.strip()]
    else:
        layers = [loaded.default_layer]
    summary = run_with_bar(index.build(loaded, args.directory, layers, path=args.db, batch=args.batch),
                           "index", "image")
    return emit(summary.to_dict())


def add_top(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("top", help="a unit's top images in an indexed folder or an atlas, best first, and a "
                                       "sheet of crops")
    parser.add_argument("directory", metavar="DIR", help=COLLECTION_HELP + ", or an atlas folder (`deepvis atlas`)")
    parser.add_argument("--layer", required=True, help=LAYER_HELP)
    parser.add_argument("--unit", type=int, required=True, help="channel of the layer")
    parser.add_argument("--k", type=int, default=9, help="how many images (default: %(default)s)")
    parser.add_argument("--out", default=None, help="write a sheet (PNG) of each image's crop: the part of the "
                        "network's view the unit's strongest position sees")
    parser.add_argument("--db", default=None, help="index file (default: the one `index DIR` wrote)")
    add_model_options(parser)


def run_top(args: argparse.Namespace) -> int:
    if args.k < 1:
        raise DeepvisError(f"--k must be at least 1, not {args.k}")
    loaded = model_of(args)
    layer = loaded.layer(args.layer).name
    if atlas.is_atlas(args.directory):
        atlas.check_model(args.directory, loaded)
        hits = atlas.top(args.directory, layer, args.unit, args.k)
    else:
        path = Path(args.db) if args.db else index.index_path(loaded, args.directory)
        hits = index.top(path, layer, args.unit, args.k)
    if args.out:
        write_png(args.out, units.top_sheet(loaded, layer, args.unit, hits))
    return emit([hit.to_dict() for hit in hits])


def add_merge(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("merge", help="merge indexes made on shards of a collection into one",
                            description="The merged index equals indexing every shard's images at once.")
    parser.add_argument("out", metavar="OUT.sqlite")
    parser.add_argument("shards", metavar="SHARD.sqlite", nargs="+")


def run_merge(args: argparse.Namespace) -> int:
    for shard in args.shards:
        if not Path(shard).is_file():
            raise DeepvisError(f"there is no index file {shard}")
    return emit({"index": str(index.merge(args.out, args.shards)), "shards": args.shards})


def add_embed(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "embed", help="a map of a layer's representation over a folder of photos (t-SNE, one point per image)",
        description="Indexes DIR for --layer and the logits (only new or changed files are read), embeds each "
        "image's max-pooled features with t-SNE and writes an HTML scatter coloured by predicted class, with each "
        "image's thumbnail on hover (see deepvis.embed).")
    parser.add_argument("directory", metavar="DIR", help=COLLECTION_HELP)
    parser.add_argument("--layer", default=None, help="a layer after a nonlinearity (default: the model's default)")
    parser.add_argument("--out", required=True, help="HTML file to write (standalone, works offline)")
    parser.add_argument("--csv", default=None, help="also write path, x, y, class per image")
    parser.add_argument("--seed", type=int, default=0, help="t-SNE's random state (default: %(default)s)")
    parser.add_argument("--db", default=None, help="index file (default: one per model and folder in the cache)")
    add_model_options(parser)


def run_embed(args: argparse.Namespace) -> int:
    loaded = model_of(args)
    layer = loaded.layer(args.layer).name if args.layer else loaded.default_layer
    summary = run_with_bar(index.build(loaded, args.directory, [layer, loaded.logits_layer], path=args.db),
                           "index", "image")
    started = time.perf_counter()
    path = args.db or index.index_path(loaded, args.directory)
    result = embed.embed(path, layer, loaded.logits_layer, tuple(loaded.class_names), seed=args.seed)
    seconds = time.perf_counter() - started
    embed.write_html(result, args.out)
    if args.csv:
        embed.write_csv(result, args.csv)
    return emit({"layer": layer, "images": len(result.paths), "skipped": [p for p, _ in summary.skipped],
                 "classes": len(set(result.classes.tolist())), "embed_seconds": round(seconds, 2),
                 "out": args.out, "csv": args.csv})
