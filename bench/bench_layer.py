"""A whole layer's filters optimized in one batch against one filter at a time (the Optimization page's
"every filter of a layer" mode).

Run by hand from the repository root:

    python -m bench.bench_layer [--layer _blocks.0._swish] [--filters 32] [--size 112] [--steps 50] [--repeats 3]

On the embedded Lite0: :func:`deepvis.optimize.run` of the first ``--filters`` channels of ``--layer`` (the centre
neuron of each, as pattern mode), the model's calibrated row 3 shortened to ``--steps`` iterations, in one batch;
against a single filter's run of the same settings (channel 0), interleaved, median of ``--repeats``.  Reports
the time per filter of the batch over the single run's time (target ≤ 0.3) and the throughput in filter-iterations
per second of each.
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
    from deepvis.models import load_model
    from deepvis.targets import Target

    loaded = load_model(device=args.device)
    settings = presets.resolve(loaded, "3").replace(steps=args.steps)
    layer = [Target(args.layer, c) for c in range(args.filters)]
    single = [Target(args.layer, 0)]
    opt.run(loaded, single, settings.replace(steps=2), size=args.size)  # warm-up: trace, caches
    times: dict[str, list[float]] = {"layer": [], "single": []}
    for _ in range(args.repeats):
        for name, targets in (("layer", layer), ("single", single)):
            if torch.cuda.is_available() and args.device.startswith("cuda"):
                torch.cuda.synchronize()
            began = time.perf_counter()
            opt.run(loaded, targets, settings, size=args.size)
            if torch.cuda.is_available() and args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - began)
    layer_s, single_s = statistics.median(times["layer"]), statistics.median(times["single"])
    row = {"layer": args.layer, "filters": args.filters, "size": args.size, "steps": args.steps,
           "device": args.device, "threads": torch.get_num_threads(), "batch_s": layer_s, "single_s": single_s,
           "per_filter_ratio": layer_s / args.filters / single_s, "target": "<= 0.3",
           "batch_filter_its_per_s": args.filters * args.steps / layer_s,
           "single_filter_its_per_s": args.steps / single_s, "times": times}
    print(json.dumps(row))
    print()
    print("| layer | filters × iterations at size | one batch | one filter | per filter ÷ one filter | "
          "filter-iterations/s: batch / single |")
    print("|---|---|---:|---:|---:|---|")
    print(f"| {args.layer} | {args.filters} × {args.steps} at {args.size} px | {layer_s:.1f} s | {single_s:.2f} s | "
          f"**{row['per_filter_ratio']:.3f}** | {row['batch_filter_its_per_s']:.0f} / "
          f"{row['single_filter_its_per_s']:.0f} |")


if __name__ == "__main__":
    main()
