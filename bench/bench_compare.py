"""One batched run of 4 settings of one unit vs 4 sequential single runs (the Comparison page's work).

Run by hand from the repository root:

    python -m bench.bench_compare [--device cpu|cuda] [--layer _blocks.8] [--unit 20] [--size 224]
                                  [--iterations 20] [--repeats 3] [--threads N] [--clock wall|cpu]

Both sides run Table 1 rows 1-4 for ``--iterations`` steps each on the embedded EfficientNet-Lite0,
from the same seed: ``batched`` is one ``deepvis.optimize.run`` call with the four settings as rows
(one forward/backward per iteration for all four); ``sequential`` is four calls, one per setting.
Prints a Markdown table with the best (minimum) of ``--repeats`` interleaved repeats after one warm-up (the CPU
here is shared with other jobs; the minimum is the least disturbed run) and
the ratio batched ÷ sequential (target: ≤ 0.6 on a 2-core CPU, ≤ 0.35 on a GPU).
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from deepvis import optimize as opt
from deepvis.models import default_device, load_model
from deepvis import presets
from deepvis.targets import Target


def timed(function, device: torch.device, clock: str = "wall") -> float:
    now = time.process_time if clock == "cpu" else time.perf_counter
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = now()
    function()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return now() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=str(default_device()))
    parser.add_argument("--layer", default="_blocks.8")
    parser.add_argument("--unit", type=int, default=20)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall time, or this process's CPU time (meaningful with --threads 1 on a shared CPU)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model(device=args.device)
    device = loaded.device
    target = Target(args.layer, args.unit)
    settings = [presets.table1_row(n).replace(steps=args.iterations) for n in (1, 2, 3, 4)]

    def batched() -> None:
        opt.run(loaded, target, settings, size=args.size)

    def sequential() -> None:
        for s in settings:
            opt.run(loaded, target, s, size=args.size)

    timed(batched, device)
    timed(sequential, device)
    times: dict[str, list[float]] = {"batched": [], "sequential": []}
    for _ in range(args.repeats):
        times["batched"].append(timed(batched, device, args.clock))
        times["sequential"].append(timed(sequential, device, args.clock))
    b, s = min(times["batched"]), min(times["sequential"])
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"device {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{args.size} px, presets 1-4 x {args.iterations} iterations, {args.repeats} repeats (best), "
          f"{args.clock} clock, load average now {load:.1f}\n")
    print("| unit | batched s | sequential s | batched ÷ sequential |")
    print("|---|---:|---:|---:|")
    print(f"| `{args.layer}` unit {args.unit} | {b:.2f} | {s:.2f} | {b / s:.2f}× |")


if __name__ == "__main__":
    main()
