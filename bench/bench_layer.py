"""A whole layer's filters optimized in one batch against one filter at a time (the Optimization page's
"every filter of a layer" mode).

Run by hand from the repository root:

    python -m bench.bench_layer [--layer _blocks.0._swish] [--filters 32] [--size 112] [--steps 50] [--repeats 3]

On the embedded Lite0: :func:`deepvis.optimize.run` of the first ``--filters`` channels of ``--layer`` (the centre
neuron of each, as pattern mode), the model's calibrated row 3 shortened to ``--steps`` iterations, in one batch;
against a single filter's run of the same settings (channel 0), interleaved, median of ``--repeats``.  Reports
the time per filter of the batch over the single run's time (target ≤ 0.3) and the throughput in filter-iterations
per second of each.

Beside them, the **network's floor**: the same number of bare ascent steps on the same batch of images, the
network cut at the layer (the BatchNorm-folded graph module deepvis runs) forward, the gradient of each row's
centre neuron, and the image moved by it; nothing else (no jitter, blur, clipping or records).  Its time per
filter over the single run's time is what the ratio cannot go below while the network's own work grows with the
batch, as it does on a CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", default="_blocks.0._swish")
    parser.add_argument("--filters", type=int, default=32)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    from deepvis import optimize as opt
    from deepvis import presets
    from deepvis.graph import truncated
    from deepvis.images import channel_stats
    from deepvis.models import load_model
    from deepvis.targets import Target

    loaded = load_model(device=args.device)
    settings = presets.resolve(loaded, "3").replace(steps=args.steps)
    layer = [Target(args.layer, c) for c in range(args.filters)]
    single = [Target(args.layer, 0)]
    opt.run(loaded, single, settings.replace(steps=2), size=args.size)  # warm-up: trace, caches
    module = truncated(loaded.module, [args.layer], folded=True)
    mean, std = channel_stats(loaded.spec.normalization, loaded.device)
    x0 = opt.initial_image(args.size, 0, loaded.device).expand(args.filters, -1, -1, -1).clone()

    def floor() -> None:
        x, rows = x0, torch.arange(args.filters, device=loaded.device)
        for _ in range(args.steps):
            image = x.detach().requires_grad_(True)
            with torch.enable_grad():
                inputs = image / std
                if inputs.device.type == "cpu":
                    inputs = inputs.contiguous(memory_format=torch.channels_last)
                act = module(inputs)[args.layer]
                (grad,) = torch.autograd.grad(act[rows, rows, act.shape[2] // 2, act.shape[3] // 2].sum(), image)
            x = image.detach() + grad

    jobs = {"layer": lambda: opt.run(loaded, layer, settings, size=args.size),
            "single": lambda: opt.run(loaded, single, settings, size=args.size), "floor": floor}
    floor()
    times: dict[str, list[float]] = {name: [] for name in jobs}
    for _ in range(args.repeats):
        for name, job in jobs.items():
            if torch.cuda.is_available() and args.device.startswith("cuda"):
                torch.cuda.synchronize()
            began = time.perf_counter()
            job()
            if torch.cuda.is_available() and args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - began)
    layer_s, single_s = statistics.median(times["layer"]), statistics.median(times["single"])
    floor_s = statistics.median(times["floor"])
    row = {"layer": args.layer, "filters": args.filters, "size": args.size, "steps": args.steps,
           "device": args.device, "threads": torch.get_num_threads(), "batch_s": layer_s, "single_s": single_s,
           "per_filter_ratio": layer_s / args.filters / single_s, "target": "<= 0.3", "floor_s": floor_s,
           "floor_per_filter_ratio": floor_s / args.filters / single_s,
           "batch_filter_its_per_s": args.filters * args.steps / layer_s,
           "single_filter_its_per_s": args.steps / single_s, "times": times}
    print(json.dumps(row))
    print()
    print("| layer | filters × iterations at size | one batch | one filter | per filter ÷ one filter | "
          "filter-iterations/s: batch / single | network floor of the batch (per filter ÷ one filter) |")
    print("|---|---|---:|---:|---:|---|---|")
    print(f"| {args.layer} | {args.filters} × {args.steps} at {args.size} px | {layer_s:.1f} s | {single_s:.2f} s | "
          f"**{row['per_filter_ratio']:.3f}** | {row['batch_filter_its_per_s']:.0f} / "
          f"{row['single_filter_its_per_s']:.0f} | {floor_s:.1f} s ({row['floor_per_filter_ratio']:.3f}) |")


if __name__ == "__main__":
    main()
