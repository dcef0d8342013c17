"""Legibility of class visualizations per preset on held-out classes, under the reporting judge.

For each preset, every class is optimized in one batch at the preset's own iteration count, from the same
seed; the best image of each row is scored by :func:`deepvis.quality.assess`: the *reporting judge*
(EfficientNet-Lite2 for Lite0), which took no part in choosing θ, sees it scaled about zero.  The classes
are apart from the calibration's and its validation's (:mod:`deepvis.calibrate`).  Prints one JSON line
per preset and a Markdown table (top-5 hits, ranks with probabilities, robustness); writes each preset's
images (scaled about zero, one row of classes) to ``--out-dir``.

    python -m bench.bench_legibility --out-dir /tmp/leg
    python -m bench.bench_legibility --classes "flamingo,goldfish,strawberry,school bus,king penguin,tricycle"
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from deepvis import optimize as opt
from deepvis import presets, quality
from deepvis.models import load_model
from deepvis.render import compose_sheet, png_bytes
from deepvis.targets import Target, resolve_unit

HELD_OUT = ("ostrich", "black swan", "tricycle")  # a new user's first three classes; in no calibration
REPORT_CLASSES = ("flamingo", "goldfish", "strawberry", "school bus", "king penguin", "tricycle")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--presets", default="1,2,3,4,table1:1,table1:2,table1:3,table1:4,fourier")
    parser.add_argument("--classes", default=",".join(HELD_OUT))
    parser.add_argument("--presets-file", default=None, help="calibrated rows from this file instead of the shipped")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out-dir", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model)
    calibrated = presets.PresetFile.read(args.presets_file) if args.presets_file else None
    names = [c.strip() for c in args.classes.split(",") if c.strip()]
    targets = [Target(model.logits_layer, resolve_unit(model, model.logits_layer, c)) for c in names]
    out_dir = Path(args.out_dir) if args.out_dir else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for choice in args.presets.split(","):
        settings = presets.resolve(args.model, choice, calibrated)
        started = time.perf_counter()
        record = opt.run(model, targets, settings, seed=args.seed, size=args.size)
        seconds = time.perf_counter() - started
        scores = quality.assess_record(model, record)
        hits = sum(q.legible for q in scores)
        result = {"preset": choice, "settings": settings.label, "hits": hits, "of": len(names),
                  "judge": scores[0].judge, "ranks": [q.rank for q in scores],
                  "probs": [round(q.prob, 3) for q in scores], "robustness": [round(q.robustness or 0, 2) for q in scores],
                  "median_rank": float(np.median([q.rank for q in scores])), "seconds": round(seconds, 1)}
        print(json.dumps(result), flush=True)
        lines.append(result)
        if out_dir:
            sheet = compose_sheet(record.images("best"), 1, len(names), [choice],
                                  [f"{n} · rank {q.rank} · rob {q.robustness or 0:.2f}" for n, q in zip(names, scores)])
            (out_dir / f"{choice.replace(':', '_')}.png").write_bytes(png_bytes(sheet))
    print(f"\nReporting judge: {lines[0]['judge']} (took no part in choosing θ)\n")
    print(f"| preset | θ | top-5 hits (of {len(names)}) | rank (p) per class: {', '.join(names)} | robustness | "
          "time (s) |")
    print("|---|---|---|---|---|---|")
    for r in lines:
        ranks = ", ".join(f"{k} ({p:.2f})" for k, p in zip(r["ranks"], r["probs"]))
        print(f"| {r['preset']} | {r['settings']} | {r['hits']} | {ranks} | "
              f"{', '.join(f'{v:.2f}' for v in r['robustness'])} | {r['seconds']} |")


if __name__ == "__main__":
    main()
