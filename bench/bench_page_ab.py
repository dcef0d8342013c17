"""The Optimization page at two checkouts, alternating in one process, each run followed by the library's own.

    git worktree add /tmp/before REV
    python -m bench.bench_page_ab --before /tmp/before --cycles 6

Two Streamlit servers (``--before`` and this checkout, each on its own ``PYTHONPATH`` and disk cache) and one
Chromium at 1440 × 900; each cycle runs both pages (in alternating order) with the default run, flamingo under
Lite0's row 3 at 224 px, timed from Start to the idle finished viewer (:func:`bench.bench_pages.watch_run`), then
the same run done by the library in this process.  Pages measured in separate bench runs differ by the library's
noise on a shared machine; alternating them in one run is what tells a change of the page from it.  Prints each
run as JSON, then per checkout the medians: page, library, their ratio, and Chromium's CPU seconds.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.bench_pages import CHROMIUM, start_server, watch_run

ROOT = Path(__file__).resolve().parents[1]


def serve(root: Path) -> tuple[subprocess.Popen, str]:
    """``root``'s server, importing ``root``'s deepvis, with a disk cache of its own."""
    return start_server(root=root, env={"PYTHONPATH": str(root), "DEEPVIS_CACHE": f"/tmp/deepvis-ab-cache-{root.name}"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, type=Path, help="a checkout of the earlier commit")
    parser.add_argument("--cycles", type=int, default=6)
    args = parser.parse_args()
    from playwright.sync_api import expect, sync_playwright

    from deepvis import optimize as opt
    from deepvis import presets
    from deepvis.models import load_model
    from deepvis.targets import Target
    from tests.browser import app

    loaded = load_model(device="cpu")
    target, settings = Target(loaded.logits_layer, 130), presets.resolve(loaded, "3")
    servers = {"before": serve(args.before.resolve()), "after": serve(ROOT)}
    runs: dict[str, list[dict]] = {name: [] for name in servers}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            pages = {}
            for name, (_, url) in servers.items():
                page = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
                app.track_runs(page)
                page.goto(f"{url}/optimization")
                expect(page.get_by_role("heading", name="Optimization")).to_be_visible(timeout=120_000)
                app.wait_idle(page)
                pages[name] = page
            for cycle in range(args.cycles):
                for name in ("before", "after") if cycle % 2 == 0 else ("after", "before"):
                    page = pages[name]
                    page.evaluate("window.scrollTo(0, 0)")
                    app.wait_idle(page)
                    run = watch_run(page, re.compile(rf"^Finished {settings.steps} iterations"), 448,
                                    servers[name][0].pid)
                    began = time.perf_counter()
                    opt.run(loaded, [target], [settings], seed=0, size=loaded.spec.input_size)
                    run["library_s"] = time.perf_counter() - began
                    runs[name].append(run)
                    print(json.dumps({"checkout": name, **run}), flush=True)
            browser.close()
    finally:
        for server, _ in servers.values():
            server.terminate()
    for name, measured in runs.items():
        page_s = statistics.median(r["page_s"] for r in measured)
        library_s = statistics.median(r["library_s"] for r in measured)
        print(f"{name}: page {page_s:.2f} s, library {library_s:.2f} s, page ÷ library {page_s / library_s:.3f} "
              f"(median of pairs {statistics.median(r['page_s'] / r['library_s'] for r in measured):.3f}), "
              f"Chromium {statistics.median(r['browser_cpu_s'] for r in measured):.2f} CPU-s")


if __name__ == "__main__":
    main()
