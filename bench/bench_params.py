"""The later parametrizations against Lucent: iterations per second and judge top-5 hits.

Run by hand from the repository root (Lucent is a benchmark-only dependency, see bench/requirements.txt):

    python -m bench.bench_params [--threads 2] [--size 224] [--iterations 20] [--repeats 3] [--skip-hits]
                                 [--methods lucent,lucent_imagenet,fourier,maco,accentuate] [--out-dir DIR]

* **Speed** (batch 1, the flamingo logit of the embedded EfficientNet-Lite0, ``--size`` px, best of
  ``--repeats`` interleaved repeats of ``--iterations`` steps after a warm-up): deepvis ``fourier``
  (:data:`deepvis.settings.PARAM_PRESETS`) against ``lucent.optvis.render.render_vis`` with its defaults
  (``param.image(size)``: FFT + decorrelated colour, ``standard_transforms``, Adam 0.05).  Lucent is given the
  model's own input normalization as its last transform (``preprocess=False``; its default preprocessing is
  torchvision's ImageNet normalization, which this model does not use) and its own copy of the model (it
  hooks every module and never removes the hooks).  ``lucent_imagenet`` is Lucent with its own preprocessing
  left on, as a user who calls ``render_vis`` on this model gets.  MACO and accentuation are timed the same way.
* **Hits**: each of the six report classes (:data:`bench.bench_legibility.REPORT_CLASSES`) at the method's own
  iteration count (Lucent: its default 512 thresholds; deepvis: each preset's steps), seed 0; the judge
  (the reporting judge, EfficientNet-Lite2, :mod:`deepvis.quality`) ranks each image scaled about zero, as the pages show it.
  deepvis runs the six classes as one batch; Lucent one class at a time.  Accentuation starts from
  scikit-image's ``coffee`` photo.

Prints a Markdown table and one JSON line per method; ``--out-dir`` also writes each method's six images.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from bench.bench_legibility import REPORT_CLASSES
from deepvis import optimize as opt
from deepvis import quality
from deepvis.display import show
from deepvis.models import LoadedModel, load_model
from deepvis.render import compose_sheet, png_bytes
from deepvis.presets import PARAM_PRESETS
from deepvis.targets import Target, resolve_unit


def lucent_render(lucent_model, loaded: LoadedModel, unit: int, size: int, steps: int,
                  imagenet: bool = False) -> np.ndarray:
    """Lucent's ``render_vis`` defaults on logit ``unit``; the image ``(H, W, 3)`` in [0, 1].  ``imagenet``:
    Lucent's own preprocessing (torchvision's ImageNet normalization) instead of the model's."""
    from lucent.optvis import objectives, param, render, transform

    mean = torch.tensor(loaded.spec.normalization.mean255).view(1, 3, 1, 1)
    std = torch.tensor(loaded.spec.normalization.std255).view(1, 3, 1, 1)
    transforms = list(transform.standard_transforms)
    if not imagenet:
        transforms.append(lambda x: (x * 255 - mean) / std)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        images = render.render_vis(lucent_model, objectives.channel(loaded.logits_layer, unit),
                                   param_f=lambda: param.image(size), transforms=transforms, thresholds=(steps,),
                                   preprocess=imagenet, progress=False, show_image=False)
    return images[-1][0]


def seconds_per_step(job, steps: int) -> float:
    started = time.perf_counter()
    job()
    return (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--skip-hits", action="store_true")
    parser.add_argument("--out-dir", default=None)
    parser.add_argument("--methods", default="lucent,fourier,maco,accentuate",
                        help="which rows: lucent, lucent_imagenet, fourier, maco, accentuate (default: %(default)s)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from skimage import data

    loaded = load_model(device="cpu")
    lucent_model = load_model(device="cpu").module
    photo = data.coffee()
    size, n = args.size, args.iterations
    flamingo = Target(loaded.logits_layer, resolve_unit(loaded, loaded.logits_layer, "flamingo"))
    every = {"Lucent render_vis defaults": "lucent", "Lucent, ImageNet preprocessing": "lucent_imagenet",
             **{f"deepvis {p}": p for p in PARAM_PRESETS}}
    wanted = args.methods.split(",")
    methods = {name: key for name, key in every.items() if key in wanted}

    def job(param):
        if param.startswith("lucent"):
            return lambda: lucent_render(lucent_model, loaded, flamingo.unit, size, n, param == "lucent_imagenet")
        settings = PARAM_PRESETS[param].replace(steps=n)
        return lambda: opt.run(loaded, flamingo, settings, size=size, photo=photo)

    times = {name: [] for name in methods}
    for name, param in methods.items():
        seconds_per_step(job(param), n)  # warm-up
    for _ in range(args.repeats):
        for name, param in methods.items():
            times[name].append(seconds_per_step(job(param), n))
    speed = {name: 1 / min(values) for name, values in times.items()}
    lucent_speed = speed.get("Lucent render_vis defaults", float("nan"))

    names = list(REPORT_CLASSES)
    targets = [Target(loaded.logits_layer, resolve_unit(loaded, loaded.logits_layer, c)) for c in names]
    mean = np.array(loaded.spec.normalization.mean255, dtype=np.float32)
    out_dir = Path(args.out_dir) if args.out_dir else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, param in methods.items():
        result = {"method": name, "it_per_s": round(speed[name], 2), "vs_lucent": round(speed[name] / lucent_speed, 2)}
        if not args.skip_hits:
            started = time.perf_counter()
            if param.startswith("lucent"):
                steps = 512
                pixels = np.stack([lucent_render(lucent_model, loaded, t.unit, size, steps, param == "lucent_imagenet")
                                   * 255 - mean for t in targets]).astype(np.float32)
            else:
                settings = PARAM_PRESETS[param]
                steps = settings.steps
                record = opt.run(loaded, targets, settings, size=size, photo=photo)
                pixels = np.stack([row.best_x for row in record.rows])
            scores = quality.assess(loaded, pixels, targets)
            result.update(steps=steps, hits=sum(q.legible for q in scores), ranks=[q.rank for q in scores],
                          robustness=[round(q.robustness or 0, 2) for q in scores],
                          seconds=round(time.perf_counter() - started, 1))
            if out_dir:
                sheet = compose_sheet(show(pixels, tuple(mean.tolist())), 1, len(names), [name],
                                      [f"{c} · rank {q.rank}" for c, q in zip(names, scores)])
                (out_dir / f"{methods[name]}.png").write_bytes(png_bytes(sheet))
        print(json.dumps(result), flush=True)
        rows.append(result)
    print(f"\n{size} px, batch 1 speed over {n} steps (best of {args.repeats}), threads {torch.get_num_threads()}\n")
    print(f"| method | it/s | ÷ Lucent | steps | top-5 hits of {len(names)} | ranks ({', '.join(names)}) | "
          "robustness | time for 6 classes (s) |")
    print("|---|---:|---:|---:|---:|---|---|---:|")
    for r in rows:
        print(f"| {r['method']} | {r['it_per_s']} | {r['vs_lucent']}× | {r.get('steps', '–')} | {r.get('hits', '–')} | "
              f"{', '.join(map(str, r.get('ranks', [])))} | {', '.join(map(str, r.get('robustness', [])))} | "
              f"{r.get('seconds', '–')} |")


if __name__ == "__main__":
    main()
