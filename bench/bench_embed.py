"""The map of a layer's representation: embedding an indexed collection of 1,000 images.

Run by hand from the repository root:

    python -m bench.bench_embed [--threads 2] [--images 1000] [--folder /tmp/deepvis-embed-1000]
                                [--layer _blocks.15._swish_1] [--repeats 3]

Makes ``--images`` photos in ``--folder`` once (random crops, flips and brightness of scikit-image's 17 photos,
seeded), indexes them for the layer and the logits (timed once, reported apart: indexing is the collection's
own cost, shared with the top images), then times :func:`deepvis.embed.embed` (read the features, standardize,
t-SNE) and writing the HTML with thumbnails, median of ``--repeats``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance

from deepvis import embed
from deepvis.collection import default_collection
from deepvis.index import build, index_path
from deepvis.models import load_model


def make_folder(folder: Path, count: int) -> None:
    photos = [Image.open(entry.path).convert("RGB") for entry in default_collection()]
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        path = folder / f"{i:04d}.jpg"
        if path.exists():
            continue
        image = photos[i % len(photos)]
        w, h = image.size
        side = int(min(w, h) * rng.uniform(0.5, 1.0))
        x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        image = image.crop((x, y, x + side, y + side)).resize((256, 256))
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        ImageEnhance.Brightness(image).enhance(rng.uniform(0.7, 1.3)).save(path, quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--folder", default=str(Path(tempfile.gettempdir()) / "deepvis-embed-1000"))
    parser.add_argument("--layer", default="_blocks.15._swish_1")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model(device="cpu")
    folder = Path(args.folder)
    make_folder(folder, args.images)
    started = time.perf_counter()
    work = build(loaded, str(folder), [args.layer, loaded.logits_layer])
    for _ in work:
        pass
    indexing = time.perf_counter() - started
    path = index_path(loaded, str(folder))
    times, html_times = [], []
    for _ in range(args.repeats):
        started = time.perf_counter()
        result = embed.embed(path, args.layer, loaded.logits_layer, tuple(loaded.class_names))
        times.append(time.perf_counter() - started)
        started = time.perf_counter()
        embed.write_html(result, Path(tempfile.gettempdir()) / "deepvis-embed.html")
        html_times.append(time.perf_counter() - started)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {len(result.paths)} images, layer "
          f"{args.layer} ({result.paths and len(result.classes)} points, {len(set(result.classes.tolist()))} "
          f"predicted classes)\n")
    print("| step | seconds |")
    print("|---|---:|")
    print(f"| indexing (first time; layer and logits) | {indexing:.1f} |")
    print(f"| embedding: features + t-SNE (median of {args.repeats}) | {statistics.median(times):.1f} |")
    print(f"| HTML with {len(result.paths)} thumbnails (median) | {statistics.median(html_times):.1f} |")


if __name__ == "__main__":
    main()
