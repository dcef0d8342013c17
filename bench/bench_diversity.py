"""Diversity (Olah et al. 2017) measured: how different a batch of one unit's images is with the term and without.

For each unit, two batches of ``--batch`` images from the same starts (seeds 0 .. N-1): the diversity term's
weight 0 (the batch without the term), then ``--weight``.  Prints, per unit, the mean pairwise distance of the
best images' features at the layer (:func:`deepvis.objectives.feature_distance`: activations flattened and
scaled to length 1; 0 = the same, 2 = opposite), their ratio and the best objectives; writes each unit's
two batches as one sheet (top row without, bottom row with) to ``--out-dir``.

    python -m bench.bench_diversity --units 5,20,100 --size 128 --steps 100 --out-dir /tmp/div
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from deepvis import presets
from deepvis.display import show
from deepvis.models import load_model
from deepvis.objectives import feature_distance, parse
from deepvis.optimize import run
from deepvis.render import png_bytes
from deepvis.targets import Term


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layer", default="_blocks.9._swish_1")
    parser.add_argument("--units", default="5,20,100")
    parser.add_argument("--preset", default="3")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--weight", type=float, default=1.0)
    parser.add_argument("--out-dir", default=None)
    args = parser.parse_args()
    loaded = load_model("efficientnet_lite0")
    settings = presets.resolve(loaded, args.preset).replace(steps=args.steps)
    rows = []
    for unit in (int(u) for u in args.units.split(",")):
        target = parse(loaded, f"{args.layer}:{unit}")
        found = {}
        for name, weight in (("without", 0.0), ("with", args.weight)):
            diverse = replace(target, terms=(Term(weight, args.layer, "diversity"),))
            record = run(loaded, [diverse] * args.batch, settings, size=args.size)
            pixels = np.stack([r.best_x for r in record.rows])
            found[name] = (feature_distance(loaded, pixels, args.layer), [round(r.best_objective, 3) for r in record.rows],
                           np.concatenate([show(r.best_x, r.mean) for r in record.rows], axis=1))
        row = {"unit": unit, "distance_without": round(found["without"][0], 3),
               "distance_with": round(found["with"][0], 3),
               "ratio": round(found["with"][0] / found["without"][0], 3),
               "objectives_without": found["without"][1], "objectives_with": found["with"][1]}
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.out_dir:
            Path(args.out_dir).mkdir(parents=True, exist_ok=True)
            sheet = np.concatenate([found["without"][2], found["with"][2]], axis=0)
            (Path(args.out_dir) / f"diversity_{unit}.png").write_bytes(png_bytes(sheet))
    print("\n| unit | distance without | with | ratio |\n|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['unit']} | {row['distance_without']} | {row['distance_with']} | {row['ratio']} |")


if __name__ == "__main__":
    main()
