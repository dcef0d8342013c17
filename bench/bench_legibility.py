"""Legibility of class visualizations per preset: judge top-5 hits, rank, robustness (issue 11's table).

For each preset, every class is optimized in one batch at the preset's own iteration count, from the same
seed; the best image of each row is scored by :func:`deepvis.quality.assess` (the judge sees it scaled about
zero).  Prints one JSON line per preset and a Markdown table; writes each preset's images (scaled about
zero, one row of classes) to ``--out-dir``.

    python -m bench.bench_legibility --presets table1:1,table1:2,table1:3,table1:4,1,2,3,4 --out-dir /tmp/leg
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

REPORT_CLASSES = ("flamingo", "goldfish", "strawberry", "school bus", "king penguin", "tricycle")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--presets", default="table1:1,table1:2,table1:3,table1:4,1,2,3,4")
    parser.add_argument("--classes", default=",".join(REPORT_CLASSES))
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
                  "ranks": [q.rank for q in scores], "robustness": [round(q.robustness or 0, 2) for q in scores],
                  "median_rank": float(np.median([q.rank for q in scores])), "seconds": round(seconds, 1)}
        print(json.dumps(result), flush=True)
        lines.append(result)
        if out_dir:
            sheet = compose_sheet(record.images("best"), 1, len(names), [choice],
                                  [f"{n} · rank {q.rank} · rob {q.robustness or 0:.2f}" for n, q in zip(names, scores)])
            (out_dir / f"{choice.replace(':', '_')}.png").write_bytes(png_bytes(sheet))
    print(f"\n| preset | θ | top-5 hits (of {len(names)}) | ranks ({', '.join(names)}) | robustness | time (s) |")
    print("|---|---|---|---|---|---|")
    for r in lines:
        print(f"| {r['preset']} | {r['settings']} | {r['hits']} | {', '.join(map(str, r['ranks']))} | "
              f"{', '.join(f'{v:.2f}' for v in r['robustness'])} | {r['seconds']} |")


if __name__ == "__main__":
    main()
