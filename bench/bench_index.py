"""Indexing a collection vs the bare batched forward pass; reopening a 10,000-image index and showing a top-9.

Run by hand from the repository root:

    python -m bench.bench_index [--device cpu|cuda] [--images 256] [--batch 16] [--threads N]
                                [--layers _blocks.9._swish_1] [--reopen 10000]

* **Indexing rate** (images/s, the same run, the same photos): ``deepvis.index.build`` on a fresh index of a
  folder of ``--images`` JPEGs (640 × 480 crops and flips of scikit-image's photos, written once to a temporary
  folder) against the floor: the bare batched forward pass to the deepest indexed layer on tensors already in
  memory, in the channels-last layout ``to_batch`` gives (about 1.4x faster on a CPU than a contiguous NCHW
  tensor, so the fair floor), with no reading, decoding, resizing, max or SQLite.  Ratio = deepvis ÷ floor (target ≥ 0.8).
* **Reopening** a ``--reopen``-image index (synthetic maxima rows pointing at hard links of the photos, so
  every path is a real file) and showing one unit's top-9, as the page does: listing the folder, checking the
  index is up to date (``index.status``), the query, and reading, cropping and resizing the nine images (``deepvis.units.top_crops``; the receptive field is computed before).
  Median of 5 (target ≤ 1 s).
* **A cached optimized image**: ``deepvis.patterns.load`` of a kept unit image + drawing it scaled about zero +
  PNG encoding (what the unit column does on a second visit).  Median of 20 (target ≤ 100 ms).

Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deepvis import collection, index, patterns, receptive, units
from deepvis.display import show
from deepvis.render import png_bytes
from deepvis.activations import capture
from deepvis.models import default_device, load_model
from deepvis.settings import Settings
from deepvis.targets import Target


def make_photos(folder: Path, count: int) -> list[Path]:
    """``count`` JPEGs of 640 x 480: shifted crops and flips of scikit-image's colour photos."""
    from skimage import data

    sources = [data.chelsea(), data.coffee(), data.astronaut(), data.rocket(), data.immunohistochemistry()]
    paths = []
    rng = np.random.default_rng(0)
    for i in range(count):
        photo = sources[i % len(sources)]
        image = Image.fromarray(photo).resize((800, 600))
        left, top = int(rng.integers(0, 160)), int(rng.integers(0, 120))
        image = image.crop((left, top, left + 640, top + 480))
        if i % 2:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        path = folder / f"{i // 100:03d}" / f"photo_{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, quality=90)
        paths.append(path)
    return paths


def floor_rate(loaded, layers: list[str], count: int, batch: int) -> float:
    """Images/s of the bare batched forward to the deepest layer, on in-memory tensors."""
    size = loaded.spec.input_size
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(loaded.device)
    x = x.contiguous(memory_format=torch.channels_last)  # the layout deepvis.images.to_batch gives (NHWC pixels)
    capture(loaded.module, x, layers)  # warm-up (builds the graph module)
    began = time.perf_counter()
    for _ in range(max(1, count // batch)):
        capture(loaded.module, x, layers)
    if loaded.device.type == "cuda":
        torch.cuda.synchronize()
    return max(1, count // batch) * batch / (time.perf_counter() - began)


def index_rate(loaded, folder: Path, layers: list[str], batch: int, db: Path) -> float:
    progress = index.build(loaded, folder, layers, path=db, batch=batch)
    began = time.perf_counter()
    done = 0
    for step in progress:
        done = step.done
    return done / (time.perf_counter() - began)


def synthetic_index(loaded, db: Path, photos: list[Path], count: int, layer: str, links: Path) -> None:
    """An index of ``count`` images (hard links of ``photos``) with seeded random maxima for ``layer``."""
    info = loaded.layer(layer)
    channels, height, width = info.shape if len(info.shape) == 3 else (info.shape[0], 1, 1)
    rng = np.random.default_rng(1)
    paths = []
    for i in range(count):
        link = links / f"{i // 1000:02d}" / f"image_{i:05d}.jpg"
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            os.link(photos[i % len(photos)], link)
        paths.append(str(link))
    with sqlite3.connect(db) as con:
        con.executescript(index._SCHEMA)
        con.executemany("INSERT INTO meta VALUES (?, ?)", [("format", index.FORMAT), ("top_stale", "1")])
        con.execute("INSERT INTO layers VALUES (?, ?, ?, ?)", (layer, channels, height, width))
        con.executemany("INSERT INTO images VALUES (?, ?, ?, NULL)",
                        [(p, os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in paths])
        con.executemany("INSERT INTO maxima VALUES (?, ?, ?, ?)", [
            (p, layer, rng.random(channels, dtype=np.float32).tobytes(),
             rng.integers(0, height * width, channels, dtype=np.int32).tobytes()) for p in paths])
    with sqlite3.connect(db) as con:
        index._rebuild_top(con)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=str(default_device()))
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--layers", default="_blocks.9._swish_1")
    parser.add_argument("--reopen", type=int, default=10_000)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model(device=args.device)
    layers = [loaded.layer(name).name for name in args.layers.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        photos = make_photos(tmp_path / "photos", args.images)
        floor = floor_rate(loaded, layers, args.images, args.batch)
        ours = index_rate(loaded, tmp_path / "photos", layers, args.batch, tmp_path / "index.sqlite")
        floor_after = floor_rate(loaded, layers, args.images, args.batch)  # the floor before and after, averaged
        floor = (floor + floor_after) / 2
        db = tmp_path / "reopen.sqlite"
        built = time.perf_counter()
        synthetic_index(loaded, db, photos, args.reopen, layers[0], tmp_path / "links")
        built = time.perf_counter() - built
        receptive.centre_field(loaded, layers[0])
        times = []
        for unit in range(5):
            began = time.perf_counter()
            listing = collection.folder(tmp_path / "links")  # what the page does on every visit
            assert index.status(db, listing, layers[0]).ready
            hits = index.top(db, layers[0], unit, 9)
            units.top_crops(loaded, layers[0], hits)
            times.append(time.perf_counter() - began)
    os.environ["DEEPVIS_CACHE"] = cache = tempfile.mkdtemp()
    target, settings = Target(layers[0], 3), Settings(steps=5)
    for _ in patterns.compute_one(loaded, target, settings):
        pass
    shown = []
    for _ in range(20):
        began = time.perf_counter()
        found = patterns.load(loaded, target, settings)
        png_bytes(show(found.x, found.mean))
        shown.append(time.perf_counter() - began)
    import shutil

    shutil.rmtree(cache)
    print(f"device {loaded.device}, threads {torch.get_num_threads()}, layers {', '.join(layers)}, "
          f"batch {args.batch}, {args.images} photos of 640 x 480")
    print()
    print("| measure | deepvis | floor | ratio |")
    print("|---|---:|---:|---:|")
    print(f"| indexing, images/s | {ours:.1f} | {floor:.1f} (bare batched forward) | {ours / floor:.2f} |")
    print(f"| reopen a {args.reopen:,}-image index + top-9 crops, s (median of 5) | "
          f"{statistics.median(times):.3f} | — | — |")
    print(f"| a cached optimized image, load + draw + PNG, ms (median of 20) | "
          f"{1000 * statistics.median(shown):.1f} | — | — |")
    print()
    print(f"(building the synthetic {args.reopen:,}-image index took {built:.1f} s)")


if __name__ == "__main__":
    main()
