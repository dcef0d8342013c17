"""The atlas: equality with brute force, local Ray against one process, batched optimized images against one unit
at a time, and what a killed worker costs.

Run by hand from the repository root (Ray installed):

    python -m bench.bench_atlas [--images 96] [--workers 2] [--units 16] [--size 112] [--steps 50]

* **equality**: a made folder (``--images`` crops of scikit-image's photos, and two broken files) built for the
  embedded Lite0's default layer and logits with k = 9 in one process, on the local Ray (``--workers`` actors),
  and by brute force (each image alone through the network, every unit's images sorted by value then path):
  whether the three give the same images at the same positions in the same order, and the largest difference of
  a value (float rounding of batched kernels and thread counts).
* **throughput**: images per second of the same build in one process (torch's threads) and on Ray (one thread
  per actor; Ray already started, the actors' start and model load included); ratio Ray ÷ one process
  (target ≥ 0.8).
* **optimized images**: ``--units`` units of the default layer at ``--size`` px under the calibrated row 3
  shortened to ``--steps`` iterations, 16 per batch against one at a time: units per minute of each (target
  ≥ 3×).
* **fault**: the Ray build again, one actor killed with SIGKILL once the first shard is back: its time against
  the clean Ray build's, and whether the result equals it.
* **per image / per unit**: the measured costs behind ``bench/README.md``'s ImageNet estimate.

Prints one JSON object per measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import numpy as np


def made_folder(root: Path, images: int) -> Path:
    from PIL import Image
    from skimage import data

    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), data.coffee()[::-1]]
    rng = np.random.default_rng(0)
    for i in range(images):
        photo = photos[i % len(photos)]
        y, x = rng.integers(0, 80, 2)
        Image.fromarray(photo[y:y + 260, x:x + 260]).save(root / f"p{i:04d}.jpg", quality=92)
    (root / "broken.jpg").write_bytes(b"not an image")
    (root / "empty.png").write_bytes(b"")
    return root


def records(path: Path, layer: str, channels: int, k: int):
    from deepvis import atlas

    return [atlas.top(path, layer, unit, k) for unit in range(channels)]


def compare(a, b) -> tuple[bool, float]:
    same, worst = True, 0.0
    for got, want in zip(a, b):
        same &= [(h.path, h.y, h.x) for h in got] == [(h.path, h.y, h.x) for h in want]
        worst = max([worst] + [abs(g.value - w.value) for g, w in zip(got, want)])
    return same, worst


def brute(loaded, folder: Path, layer: str, k: int):
    from deepvis import collection as coll
    from deepvis.activations import capture
    from deepvis.images import to_batch
    from deepvis.index import Hit, read_view

    rows = []
    for entry in coll.folder(folder):
        view = read_view(entry.path, loaded)
        if isinstance(view, str):
            continue
        act = capture(loaded.module, to_batch([view], loaded.spec.normalization), [layer])[layer][0]
        flat = act.flatten(1) if act.dim() == 3 else act.unsqueeze(1)
        values, where = flat.max(dim=1)
        width = act.shape[2] if act.dim() == 3 else 1
        rows.append((entry.path, values.numpy(), where.numpy(), width))
    out = []
    for unit in range(len(rows[0][1])):
        best = sorted(rows, key=lambda r: (-float(r[1][unit]), r[0]))[:k]
        out.append([Hit(p, float(v[unit]), int(w[unit]) // width, int(w[unit]) % width) for p, v, w, width in best])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--units", type=int, default=16)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--shard", type=int, default=16)
    args = parser.parse_args()
    import torch

    from deepvis import atlas, atlas_ray, presets
    from deepvis import optimize as opt
    from deepvis.models import load_model
    from deepvis.progress import drain
    from deepvis.targets import Target

    loaded = load_model(device="cpu")
    layers, k = [loaded.default_layer, loaded.logits_layer], 9
    work = Path(tempfile.mkdtemp(prefix="bench-atlas-"))
    (work / "photos").mkdir()
    folder = made_folder(work / "photos", args.images)
    try:
        atlas_ray.connect("auto")

        def build(name: str, ray: str | None, kill: bool = False) -> float:
            began = time.perf_counter()
            steps = atlas.build(loaded, folder, layers, work / name, k=k, shard=args.shard, ray=ray,
                                workers=args.workers)
            if kill:
                next(steps), next(steps)
                os.kill(atlas_ray.worker_pids()[0], signal.SIGKILL)
            drain(steps)
            return time.perf_counter() - began

        one_s = build("one", None)
        ray_s = build("ray", "auto")
        equal = {}
        for layer in layers:
            channels = loaded.layer(layer).shape[0]
            a, b = records(work / "one", layer, channels, k), records(work / "ray", layer, channels, k)
            c = brute(loaded, folder, layer, k)
            equal[layer] = {"one_vs_ray": compare(b, a), "one_vs_brute_force": compare(a, c)}
        print(json.dumps({"measure": "equality", "images": args.images, "k": k, "layers": layers, **{
            layer: {name: {"same_records": same, "max_value_difference": worst} for name, (same, worst) in v.items()}
            for layer, v in equal.items()}}), flush=True)
        print(json.dumps({"measure": "throughput", "images": args.images + 2, "workers": args.workers,
                          "one_process_s": one_s, "ray_s": ray_s, "one_images_per_s": (args.images + 2) / one_s,
                          "ray_images_per_s": (args.images + 2) / ray_s, "ratio": one_s / ray_s,
                          "torch_threads": torch.get_num_threads(), "target": ">= 0.8"}), flush=True)
        killed_s = build("killed", "auto", kill=True)
        same = all(compare(records(work / "killed", layer, loaded.layer(layer).shape[0], k),
                           records(work / "ray", layer, loaded.layer(layer).shape[0], k))[0] for layer in layers)
        print(json.dumps({"measure": "fault", "clean_ray_s": ray_s, "killed_ray_s": killed_s,
                          "recovery_s": killed_s - ray_s, "same_records": same}), flush=True)

        settings = presets.resolve(loaded, "3").replace(steps=args.steps)
        targets = [Target(loaded.default_layer, u) for u in range(args.units)]
        opt.run(loaded, targets[:1], settings.replace(steps=2), size=args.size)
        began = time.perf_counter()
        for start in range(0, args.units, 16):
            opt.run(loaded, targets[start:start + 16], settings, size=args.size)
        batched = time.perf_counter() - began
        began = time.perf_counter()
        for target in targets:
            opt.run(loaded, [target], settings, size=args.size)
        single = time.perf_counter() - began
        print(json.dumps({"measure": "optimized images", "layer": loaded.default_layer, "units": args.units,
                          "size": args.size, "steps": args.steps, "batched_units_per_min": 60 * args.units / batched,
                          "single_units_per_min": 60 * args.units / single, "ratio": single / batched,
                          "per_unit_batched_s": batched / args.units, "target": ">= 3"}), flush=True)
        print(json.dumps({"measure": "per image", "layers": "default + logits", "seconds_per_image": one_s /
                          (args.images + 2)}), flush=True)
        every = [info.name for info in loaded.layers]  # --all: every offered layer
        (work / "few").mkdir()
        for path in sorted(folder.glob("p*.jpg"))[:16]:
            shutil.copy(path, work / "few" / path.name)
        began, phases = time.perf_counter(), {}
        summary = drain(atlas.build(loaded, work / "few", every, work / "all", k=k, shard=16),
                        lambda step: phases.setdefault(step.detail or "images", time.perf_counter()))
        seconds = time.perf_counter() - began
        records_s = phases.get("crops", time.perf_counter()) - began
        table = (work / "all" / "atlas.sqlite").stat().st_size
        crops = sum(p.stat().st_size for p in (work / "all" / "crops").rglob("*.jpg"))
        print(json.dumps({"measure": "all layers", "layers": len(every), "units": summary.units, "images": 16,
                          "seconds": seconds, "records_s_per_image": records_s / 16,
                          "crops_s_per_unit": (seconds - records_s) / summary.units, "table_bytes": table, "crops_bytes": crops,
                          "bytes_per_unit": (table + crops) / summary.units}), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
