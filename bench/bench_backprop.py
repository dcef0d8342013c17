"""Time of one backward image (saliency, deconv, guided) for the embedded model at 224 px.

Run by hand from the repository root:
    python -m bench.bench_backprop [--device cpu|cuda] [--repeats 7] [--threads N]
Prints a Markdown table (min, median and max of the repeats, milliseconds) per layer
and mode: ``gradient`` is ``deepvis.backprop.backprop`` (forward to the layer,
backward to the image, seeded with the channel's activation map);
``+ display`` adds the norm+blur filter and the PNG of the raw filter, i.e.
what the page does for one unit.  ``forward`` is the plain forward pass to the
same layer (``capture``), for scale.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from deepvis.activations import capture
from deepvis.backprop import MODES, backprop
from deepvis.images import decode_image, preprocess, sample_bytes
from deepvis.models import default_device, load_model
from deepvis.render import backprop_image, png_bytes

LAYERS = ("_blocks.3", "_blocks.8", "_blocks.15")


def timed(function: Callable[[], object], repeats: int, device: torch.device) -> list[float]:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        function()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=str(default_device()))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model(device=args.device)
    batch = preprocess(decode_image(sample_bytes("chelsea")), loaded.spec, loaded.device)
    name = torch.cuda.get_device_name() if loaded.device.type == "cuda" else "CPU"
    print(f"device {loaded.device} ({name}), torch threads {torch.get_num_threads()}, "
          f"{args.repeats} repeats, 224 px, seed = channel map, channel 0\n")
    print("| layer | mode | forward median ms | gradient min ms | gradient median ms | gradient max ms "
          "| + display median ms |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for layer in LAYERS:
        forward = statistics.median(
            timed(lambda layer=layer: capture(loaded.module, batch, layer), args.repeats, loaded.device))
        for mode in MODES:
            def gradient(mode: str = mode, layer: str = layer) -> torch.Tensor:
                return backprop(loaded.module, batch, layer, 0, mode)

            def with_display(mode: str = mode) -> bytes:
                image = gradient(mode)[0]
                backprop_image(image, "norm_blur")
                return png_bytes(backprop_image(image, "raw"))

            times = timed(gradient, args.repeats, loaded.device)
            display = timed(with_display, args.repeats, loaded.device)
            print(f"| {layer} | {mode} | {forward:.1f} | {min(times):.1f} | {statistics.median(times):.1f} "
                  f"| {max(times):.1f} | {statistics.median(display):.1f} |")


if __name__ == "__main__":
    main()
