"""Units that never turn on from seed 0, with and without redirected rectifier gradients (:mod:`deepvis.redirect`),
under one preset: the first N units of a layer in one batch, and which of them kept objective 0 at every iteration.

    python -m bench.bench_redirect --preset fourier --units 64 --steps 60 --size 128
"""

from __future__ import annotations

import argparse
import contextlib
import time
from unittest import mock

from deepvis import optimize as opt
from deepvis import presets, redirect
from deepvis.models import load_model
from deepvis.targets import Target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layer", default="_blocks.9._swish_1")
    parser.add_argument("--preset", default="fourier")
    parser.add_argument("--units", type=int, default=64)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    loaded = load_model(device="cpu")
    settings = presets.resolve(loaded, args.preset).replace(steps=args.steps)
    targets = [Target(args.layer, u) for u in range(args.units)]
    off = mock.patch.object(redirect, "redirected", contextlib.nullcontext)  # both engines read it from the module
    for label, patch in (("without", off), ("with", contextlib.nullcontext())):
        with patch:
            started = time.perf_counter()
            record = opt.run(loaded, targets, settings, size=args.size)
        zero = [t.unit for t, row in zip(targets, record.rows) if row.best_objective == 0]
        print(f"{label} redirection: {len(zero)} of {len(targets)} units at objective 0 at every iteration {zero} "
              f"({time.perf_counter() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
