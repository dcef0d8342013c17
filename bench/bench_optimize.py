"""Iterations per second of deepvis's regularized gradient ascent, against its floor and against Lucent.

Run by hand from the repository root (Lucent is a benchmark-only dependency, see bench/requirements.txt):

    python -m bench.bench_optimize [--device cpu|cuda] [--size 224] [--iterations 20] [--repeats 3]
                                   [--threads N] [--clock wall|cpu] [--no-lucent]

For an early and a middle layer of the embedded EfficientNet-Lite0 (same unit, same image size, batch 1):

* ``deepvis``: ``deepvis.optimize.run`` with Table 1 row 3 (blur every 4 steps) for ``--iterations`` steps;
* ``bare``: the floor for this algorithm, the forward pass to the layer (the truncated graph module of
  ``deepvis.activations.capture``) plus ``torch.autograd.grad`` of the unit w.r.t. the image, nothing else, fed
  in the same memory layout as deepvis (channels-last on a CPU);
* ``Lucent``: ``lucent.optvis.render.render_vis`` on the centre neuron of the same channel
  (``objectives.neuron``), once with its defaults (FFT + decorrelated parameterization, the standard
  jitter/scale/rotate transforms, Adam) and once "minimal" (plain pixel parameterization, no transforms).
  Lucent runs the whole network every step: it cannot stop at the layer.  Lucent hooks every module and
  never removes the hooks, so it gets its own copy of the model.
* ``batch of 4``: four units of the layer in one batched call vs four single calls.

All timings (``--clock wall``, or ``cpu`` for this process's CPU time) are per iteration, the best
(minimum) of ``--repeats`` interleaved repeats after one warm-up: on a CPU shared with other jobs the
minimum is the least disturbed run.
The script prints a Markdown table; on a GPU it synchronizes before reading the clock.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from collections.abc import Callable

import torch

from deepvis import optimize as opt
from deepvis.activations import capture
from deepvis.images import normalize
from deepvis.models import default_device, load_model
from deepvis import presets
from deepvis.targets import Target

LAYERS = (("early", "_blocks.1", 6), ("middle", "_blocks.8", 20))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def per_iteration(function: Callable[[], object], iterations: int, device: torch.device, clock: str) -> float:
    """Seconds per iteration of one call of ``function`` that runs ``iterations`` iterations."""
    now = time.process_time if clock == "cpu" else time.perf_counter
    _sync(device)
    start = now()
    function()
    _sync(device)
    return (now() - start) / iterations


def bare_loop(loaded, layer: str, unit: int, size: int, iterations: int) -> None:
    """Forward to ``layer`` (the same truncated graph module deepvis uses) + gradient of the centre unit w.r.t.
    the image; nothing else."""
    device = loaded.device
    x = opt.initial_image(size, 0, device)
    mean = torch.tensor(loaded.spec.normalization.mean255, device=device).view(1, 3, 1, 1)
    for _ in range(iterations):
        image = x.detach().requires_grad_(True)
        with torch.enable_grad():
            inputs = normalize(image + mean, loaded.spec.normalization)
            if device.type == "cpu":  # the layout deepvis feeds on a CPU (faster there)
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            act = capture(loaded.module, inputs, [layer], keep_graph=True)[layer]
            value = act[0, unit, act.shape[2] // 2, act.shape[3] // 2] if act.dim() == 4 else act[0, unit]
            (grad,) = torch.autograd.grad(value, image)
        x = image.detach() + grad  # keep a data dependence between iterations, as the real loop has


def lucent_loop(model, layer: str, unit: int, size: int, iterations: int, minimal: bool) -> None:
    from lucent.optvis import objectives, param, render

    lucent_layer = layer.replace(".", "_")
    objective = objectives.neuron(lucent_layer, unit)
    if minimal:
        kwargs = dict(param_f=lambda: param.image(size, fft=False, decorrelate=False), transforms=[])
    else:
        kwargs = dict(param_f=lambda: param.image(size))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        render.render_vis(model, objective, thresholds=(iterations,), progress=False, show_image=False,
                          fixed_image_size=size, **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=str(default_device()))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--no-lucent", action="store_true")
    parser.add_argument("--no-batch", action="store_true", help="skip the batch-of-4 vs 4 singles columns")
    parser.add_argument("--layers", default=None,
                        help="LAYER:UNIT,... instead of the early and middle defaults, e.g. _blocks.2:6,_blocks.8:20")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall time, or this process's CPU time (with --threads 1 on a CPU shared with other "
                             "jobs, CPU time is what the run would take alone)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model(device=args.device)
    device = loaded.device
    lucent_model = None
    lucent_note = ""
    if not args.no_lucent:
        try:
            import lucent  # noqa: F401

            lucent_model = load_model(device=args.device).module
        except Exception as exc:  # report, do not hide: the table says why Lucent is missing
            lucent_note = f"Lucent unavailable: {exc.__class__.__name__}: {exc}"
    n, size = args.iterations, args.size
    settings = presets.table1_row(3).replace(steps=n)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"device {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{size} px, {n} iterations x {args.repeats} repeats (best), {args.clock} clock, "
          f"load average at start {load:.1f}")
    if lucent_note:
        print(lucent_note)
    print()
    print("| layer | deepvis it/s | bare fwd+bwd it/s | deepvis overhead | Lucent default it/s | Lucent minimal it/s "
          "| deepvis ÷ Lucent default | deepvis ÷ Lucent minimal | batch of 4 ÷ 4 singles |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    layers = LAYERS if not args.layers else [
        ("", spec.split(":")[0], int(spec.split(":")[1])) for spec in args.layers.split(",")]
    for label, layer, unit in layers:
        units = [Target(layer, unit + k) for k in range(4)]
        jobs: dict[str, Callable[[], object]] = {
            "deepvis": lambda: opt.run(loaded, units[0], settings, size=size),
            "bare": lambda: bare_loop(loaded, layer, unit, size, n),
        }
        if not args.no_batch:
            jobs["batch4"] = lambda: opt.run(loaded, units, settings, size=size)
            jobs["singles4"] = lambda: [opt.run(loaded, t, settings, size=size) for t in units]
        if lucent_model is not None:
            jobs["lucent"] = lambda: lucent_loop(lucent_model, layer, unit, size, n, minimal=False)
            jobs["lucent_min"] = lambda: lucent_loop(lucent_model, layer, unit, size, n, minimal=True)
        times: dict[str, list[float]] = {key: [] for key in jobs}
        for key, job in jobs.items():  # warm-up
            per_iteration(job, n, device, args.clock)
        for _ in range(args.repeats):
            for key, job in jobs.items():
                times[key].append(per_iteration(job, n, device, args.clock))
        t = {key: min(values) for key, values in times.items()}
        overhead = (t["deepvis"] / t["bare"] - 1) * 100
        if "lucent" in t:
            luc = f"{1 / t['lucent']:.2f} | {1 / t['lucent_min']:.2f} | {t['lucent'] / t['deepvis']:.1f}× | " \
                  f"{t['lucent_min'] / t['deepvis']:.1f}×"
        else:
            luc = "– | – | – | –"
        batch = f"{t['batch4'] / t['singles4']:.2f}×" if "batch4" in t else "–"
        print(f"| {label} `{layer}` unit {unit} | {1 / t['deepvis']:.2f} | {1 / t['bare']:.2f} | {overhead:+.0f}% | "
              f"{luc} | {batch} |", flush=True)


if __name__ == "__main__":
    main()
