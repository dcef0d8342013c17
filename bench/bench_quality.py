"""Time of the quality score (deepvis.quality.assess): judge + robustness, for 1 and 4 images at 224 px.

    python -m bench.bench_quality --threads 2 --repeats 5

The images are real optimized class images (Lite0, flamingo, calibrated rows 1-4, 20 iterations). The first
call also loads the reporting judge (EfficientNet-Lite2) once per process; that load is reported on its own.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from deepvis import optimize as opt
from deepvis import presets, quality
from deepvis.models import load_model
from deepvis.targets import Target, resolve_unit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(device=args.device)
    target = Target(model.logits_layer, resolve_unit(model, model.logits_layer, "flamingo"))
    settings = [presets.resolve(model.spec.name, r).replace(steps=20) for r in (1, 2, 3, 4)]
    record = opt.run(model, target, settings)
    pixels = np.stack([row.best_x for row in record.rows])
    started = time.perf_counter()
    quality.judge_model(quality.judge_name(model), str(model.device))
    load = time.perf_counter() - started
    print(f"device {model.device}, threads {torch.get_num_threads()}; judge load (once per process): {load:.2f} s\n")
    print("| images | median s | min s | per image s |")
    print("|---:|---:|---:|---:|")
    for count in (1, 4):
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            quality.assess(model, pixels[:count], [target] * count)
            times.append(time.perf_counter() - started)
        median = statistics.median(times)
        print(f"| {count} | {median:.2f} | {min(times):.2f} | {median / count:.2f} |")


if __name__ == "__main__":
    main()
