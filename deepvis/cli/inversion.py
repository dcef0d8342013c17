"""``deepvis invert``: the image whose activations at a layer match a photo's (Mahendran & Vedaldi 2015).

Prints JSON on stdout: the relative distance of the representations, ``||Φ(x) − Φ0|| / ||Φ0||`` at the layer,
for the best image, which ``--out`` holds (beside the photo with ``--pair``).
"""

from __future__ import annotations

import argparse

import numpy as np

from deepvis import inversion, presets
from deepvis.cli.common import LAYER_HELP, PRESET_HELP, add_model_options, emit, model_of, read_image, write_png
from deepvis.display import DISPLAYS
from deepvis.images import model_view


def add_invert(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("invert", help="the image whose activations at a layer match a photo's: what the layer "
                            "keeps of it (Mahendran & Vedaldi 2015)")
    parser.add_argument("image")
    parser.add_argument("--layer", required=True, help=LAYER_HELP)
    parser.add_argument("--out", required=True, help="PNG of the best image (the photo beside it with --pair)")
    parser.add_argument("--pair", action="store_true", help="write the photo and the image side by side")
    parser.add_argument("--preset", default="fourier", help=f"{PRESET_HELP} (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=None, help="iterations (default: the preset's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the start (default: 0)")
    parser.add_argument("--size", type=int, default=None, help="image side in pixels (default: the model's input)")
    parser.add_argument("--display", default=None, choices=list(DISPLAYS),
                        help="how the image is written (default: mean for the Fourier and MACO presets, whose "
                             "pixels are the image itself; zero otherwise)")
    parser.add_argument("--npy", default=None, help="also write the best image as float32 (H, W, C), pixel space")
    add_model_options(parser)


def run_invert(args: argparse.Namespace) -> int:
    image = read_image(args.image)
    presets.resolve(args.model, args.preset)  # a bad preset fails before the model loads
    loaded = model_of(args)
    layer = loaded.layer(args.layer).name
    settings = presets.resolve(loaded, args.preset)
    if args.steps is not None:
        settings = settings.replace(steps=args.steps)
    found = inversion.invert(loaded, image, layer, settings, seed=args.seed, size=args.size)
    record, distance = found.record, found.distance
    row = record.rows[0]
    display = args.display or ("mean" if settings.param in ("fourier", "maco") else "zero")
    picture = row.image("best", display)
    if args.pair:
        side = picture.shape[0]
        photo = np.asarray(model_view(image, loaded.spec, side))
        photo = np.repeat(photo, 3, axis=-1) if photo.shape[-1] == 1 else photo
        picture = np.concatenate([photo, picture], axis=1)
    write_png(args.out, picture)
    if args.npy:
        np.save(args.npy, row.best_x.astype(np.float32))
    return emit({"model": loaded.spec.name, "layer": layer, "preset": args.preset, "steps": settings.steps,
                 "size": int(row.best_x.shape[0]), "relative_distance": distance, "best_step": row.best_step,
                 "display": display, "out": args.out, "npy": args.npy, "seconds": round(record.seconds, 3)})
