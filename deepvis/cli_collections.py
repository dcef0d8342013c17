"""Command line for image collections: ``deepvis index``, ``deepvis top`` and ``deepvis merge``.

Kept apart from :mod:`deepvis.cli` (which collects the ``_add_*`` / ``cmd_*`` pairs of
both modules) so each file stays readable.  Every command prints JSON on stdout.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from deepvis.errors import DeepvisError

COLLECTION_HELP = "a folder on this machine (subfolders included), or `samples` for the bundled photos"


def _cli():  # deepvis.cli imports this module; import it lazily to avoid a cycle
    from deepvis import cli

    return cli


def _add_index(sub: argparse._SubParsersAction) -> None:
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
    _cli()._add_model_options(parser)


def cmd_index(args: argparse.Namespace) -> int:
    from deepvis.index import build

    loaded = _cli()._model(args)
    if args.all:
        layers = [info.name for info in loaded.layers]
    elif args.layers:
        layers = [name.strip() for name in args.layers.split(",") if name.strip()]
    else:
        layers = [loaded.default_layer]
    summary = _cli()._with_bar(build(loaded, args.directory, layers, path=args.db, batch=args.batch), "index", "image")
    return _cli()._emit(summary.to_dict())


def _add_top(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("top", help="a unit's top images in an indexed folder, best first, and a sheet of crops")
    parser.add_argument("directory", metavar="DIR", help=COLLECTION_HELP)
    parser.add_argument("--layer", required=True, help=_cli().LAYER_HELP)
    parser.add_argument("--unit", type=int, required=True, help="channel of the layer")
    parser.add_argument("--k", type=int, default=9, help="how many images (default: %(default)s)")
    parser.add_argument("--out", default=None, help="write a sheet (PNG) of each image's crop: the part of the "
                        "network's view the unit's strongest position sees")
    parser.add_argument("--db", default=None, help="index file (default: the one `index DIR` wrote)")
    _cli()._add_model_options(parser)


def cmd_top(args: argparse.Namespace) -> int:
    from deepvis import index, units

    if args.k < 1:
        raise DeepvisError(f"--k must be at least 1, not {args.k}")
    loaded = _cli()._model(args)
    layer = loaded.layer(args.layer).name
    path = Path(args.db) if args.db else index.index_path(loaded, args.directory)
    hits = index.top(path, layer, args.unit, args.k)
    if args.out:
        from deepvis.render import png_bytes

        Path(args.out).write_bytes(png_bytes(units.top_sheet(loaded, layer, args.unit, hits)))
    return _cli()._emit([hit.to_dict() for hit in hits])


def _add_merge(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("merge", help="merge indexes made on shards of a collection into one",
                            description="The merged index equals indexing every shard's images at once.")
    parser.add_argument("out", metavar="OUT.sqlite")
    parser.add_argument("shards", metavar="SHARD.sqlite", nargs="+")


def cmd_merge(args: argparse.Namespace) -> int:
    from deepvis.index import merge

    for shard in args.shards:
        if not Path(shard).is_file():
            raise DeepvisError(f"there is no index file {shard}")
    return _cli()._emit({"index": str(merge(args.out, args.shards)), "shards": args.shards})


def _add_embed(sub: argparse._SubParsersAction) -> None:
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
    _cli()._add_model_options(parser)


def cmd_embed(args: argparse.Namespace) -> int:
    import time

    from deepvis import embed
    from deepvis.index import build, index_path

    loaded = _cli()._model(args)
    layer = loaded.layer(args.layer).name if args.layer else loaded.default_layer
    summary = _cli()._with_bar(build(loaded, args.directory, [layer, loaded.logits_layer], path=args.db), "index",
                               "image")
    started = time.perf_counter()
    path = args.db or index_path(loaded, args.directory)
    result = embed.embed(path, layer, loaded.logits_layer, tuple(loaded.class_names), seed=args.seed)
    seconds = time.perf_counter() - started
    embed.write_html(result, args.out)
    if args.csv:
        embed.write_csv(result, args.csv)
    return _cli()._emit({"layer": layer, "images": len(result.paths), "skipped": [p for p, _ in summary.skipped],
                         "classes": len(set(result.classes.tolist())), "embed_seconds": round(seconds, 2),
                         "out": args.out, "csv": args.csv})
