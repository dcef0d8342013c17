"""The Training page's response to its step slider, with everything computed.

Run by hand from the repository root, on a run whose pictures are filled (``bench.bench_timeline --fill --keep
DIR`` makes one: the digits demo, 10 snapshots, ``conv2``'s 32 filters):

    python -m bench.bench_training_page DIR/digits [--moves 30] [--layer conv2]

The page runs under Streamlit's AppTest in this process (no browser): after a first load, the step slider is
moved ``--moves`` times to a different step each time, and each rerun of the page is timed, wall clock and this
process's CPU time.  A rerun redraws the layer's grid, the chosen filter's history, the first-layer filters, the
probe image's activations, the charts' step marker and the diagnoses.  AppTest adds its own cost (it compiles the
page's script on every run), so this is an upper bound of the server's time.  Target: ≤ 200 ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--moves", type=int, default=30)
    parser.add_argument("--layer", default="conv2")
    args = parser.parse_args()
    from streamlit.testing.v1 import AppTest

    import deepvis

    view = deepvis.open_run(args.run)
    sys.argv = ["streamlit_app.py", "--runs", str(Path(args.run).resolve().parent)]
    at = AppTest.from_file(str(ROOT / "app_pages" / "training.py"), default_timeout=300)
    at.query_params.update({"run": str(Path(args.run).resolve()), "layer": args.layer, "unit": "3"})
    at.session_state["train_auto"] = False
    at.run()
    errors = [e.value for e in at.exception] + [e.value for e in at.error]
    if errors:
        raise SystemExit(f"the page failed: {errors[0]}")
    walls, cpus = [], []
    steps = view.steps
    for i in range(args.moves + 1):
        step = steps[(i * 3 + 1) % len(steps)]
        slider = at.select_slider(key="train_step")
        if slider.value == step:
            step = steps[(i * 3 + 2) % len(steps)]
        wall, cpu = time.perf_counter(), time.process_time()
        slider.set_value(step).run()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    walls, cpus = walls[1:], cpus[1:]  # the first move warms the caches of a step not seen yet
    row = {"measure": "training page, step slider", "run": args.run, "layer": args.layer, "moves": len(walls),
           "median_ms": statistics.median(walls) * 1e3, "p90_ms": sorted(walls)[int(0.9 * len(walls))] * 1e3,
           "median_cpu_ms": statistics.median(cpus) * 1e3}
    print(json.dumps(row))
    print(f"\n| step slider, AppTest | median {row['median_ms']:.0f} ms | p90 {row['p90_ms']:.0f} ms | "
          f"CPU median {row['median_cpu_ms']:.0f} ms |")


if __name__ == "__main__":
    main()
