"""Occlusion map of one photo: deepvis against Captum's ``Occlusion``.

Run by hand from the repository root:

    python -m bench.bench_occlusion [--threads 2] [--repeats 5] [--patch 32] [--stride 16] [--default-malloc]

The embedded EfficientNet-Lite0, scikit-image's chelsea as the network sees it (224 px), the top class's
softmax probability as the target, the model's mean colour as the patch (0 in its normalized input).
``deepvis``: :func:`deepvis.occlusion.occlusion_map` (batches of 8 copies, BatchNorm-folded graph, each copy
recomputing only what its patch reaches, :mod:`deepvis.windowed`); ``Captum``: ``Occlusion(softmax ∘
model).attribute`` with the same window, stride and baseline, once with its default one perturbation per forward
pass and once with 3.  The floor of any method that runs every copy through the whole network: the whole forward
passes alone (as many 224-px images, batches of 3, the folded graph, channels-last, no occluding or bookkeeping;
deepvis's own way before :mod:`deepvis.windowed`).  Median of ``--repeats`` interleaved runs after a warm-up; the
maps are checked equal.  The process keeps freed memory as the app's and the CLI's do
(:mod:`deepvis.allocator`); ``--default-malloc`` measures glibc's defaults instead.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from captum.attr import Occlusion
from PIL import Image
from skimage import data

from deepvis.images import model_view, to_batch
from deepvis.models import load_model
from deepvis.occlusion import occlusion_map


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--patch", type=int, default=32)
    parser.add_argument("--stride", type=int, default=16)
    parser.add_argument("--default-malloc", action="store_true", help="leave glibc's allocator as it starts")
    args = parser.parse_args()
    if not args.default_malloc:
        from deepvis.allocator import keep_freed_memory

        keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model(device="cpu")
    view = model_view(Image.fromarray(data.chelsea()), loaded.spec)
    inputs = to_batch(view, loaded.spec.normalization)
    ours = occlusion_map(loaded, view, args.patch, args.stride)
    cls = int(ours.target.split()[1])
    forward = lambda x: torch.softmax(loaded.module(x), dim=1)  # noqa: E731

    def captum(per_eval: int) -> np.ndarray:
        with torch.no_grad():
            attr = Occlusion(forward).attribute(inputs, sliding_window_shapes=(3, args.patch, args.patch),
                                                strides=(3, args.stride, args.stride), baselines=0, target=cls,
                                                perturbations_per_eval=per_eval)
        return attr[0, 0].numpy()

    batch = inputs.repeat(3, 1, 1, 1).contiguous(memory_format=torch.channels_last)

    def floor() -> np.ndarray:  # the forward passes alone: the same number of 224-px images, in batches of 3
        from deepvis.activations import capture

        with torch.no_grad():
            for _ in range(-(-(ours.windows + 1) // 3)):
                capture(loaded.module, batch, loaded.logits_layer, folded=True)
        return ours.drops

    jobs = {"deepvis": lambda: occlusion_map(loaded, view, args.patch, args.stride).drops,
            "floor of whole passes: the forward passes alone": floor,
            "Captum, 1 per pass": lambda: captum(1), "Captum, 3 per pass": lambda: captum(3)}
    maps = {name: job() for name, job in jobs.items()}  # warm-up, and the maps to compare
    times: dict[str, list[float]] = {name: [] for name in jobs}
    for _ in range(args.repeats):
        for name, job in jobs.items():
            started = time.perf_counter()
            job()
            times[name].append(time.perf_counter() - started)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, 224 px, patch {args.patch}, stride "
          f"{args.stride}, {ours.windows} windows, median of {args.repeats}, "
          f"{'glibc default malloc' if args.default_malloc else 'freed memory kept'}\n")
    print("| method | seconds | ÷ deepvis | max difference from deepvis's map |")
    print("|---|---:|---:|---:|")
    base = statistics.median(times["deepvis"])
    for name, job in jobs.items():
        median = statistics.median(times[name])
        difference = "–" if job is floor else f"{np.abs(maps[name] - maps['deepvis']).max():.1e}"
        print(f"| {name} | {median:.2f} | {median / base:.2f}× | {difference} |")


if __name__ == "__main__":
    main()
