"""Server-side time from uploaded bytes to the composed grid PNG, for every layer.

Run by hand from the repository root:  python -m bench.bench_activations [--device cpu|cuda] [--repeats 7]
Prints a Markdown table (median of the repeats, milliseconds) for the embedded
model at 224 px: decode -> one forward pass (layer + logits) -> grid -> PNG.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from deepvis.activations import analyze
from deepvis.images import decode_image, sample_bytes
from deepvis.models import default_device, load_model
from deepvis.render import channel_grid, png_bytes


def upload_to_grid_png(loaded, data: bytes, layer: str) -> bytes:
    result = analyze(loaded, decode_image(data), layer)
    grid, _ = channel_grid(result.activation, "channel")
    return png_bytes(grid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=str(default_device()))
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    loaded = load_model(device=args.device)
    data = sample_bytes("chelsea")
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, {args.repeats} repeats, 224 px\n")
    print("| layer | shape | grid px | median ms | max ms |")
    print("|---|---|---|---:|---:|")
    worst = 0.0
    for info in loaded.layers:
        upload_to_grid_png(loaded, data, info.name)  # warm-up
        times = []
        for _ in range(args.repeats):
            if loaded.device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            png = upload_to_grid_png(loaded, data, info.name)
            times.append((time.perf_counter() - start) * 1000)
        grid, _ = channel_grid(analyze(loaded, decode_image(data), info.name).activation, "channel")
        worst = max(worst, statistics.median(times))
        print(f"| {info.name} | {' x '.join(map(str, info.shape))} | {grid.shape[1]}x{grid.shape[0]} "
              f"| {statistics.median(times):.1f} | {max(times):.1f} |")
        del png
    print(f"\nslowest layer (median): {worst:.1f} ms (target <= 150 ms)")


if __name__ == "__main__":
    main()
