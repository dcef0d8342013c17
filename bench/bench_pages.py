"""The optimization pages in a real browser against the library doing the same run, in one run.

Run by hand from the repository root (Playwright and the system Chromium, as the browser tests use):

    python -m bench.bench_pages [--only optimization,comparison] [--repeats 3] [--steps N] [--size S]

A Streamlit server is started on a free port (``streamlit run streamlit_app.py``, headless) and driven by
Chromium at 1440 × 900, both on this machine.  Measured ``--repeats`` times, the page's run and then the same
run by the library in this process, alternating (never at the same time, so they do not share the CPU); medians.
During each page run the CPU seconds of the server process and of Chromium's processes are read from ``/proc``
(what the browser costs when it shares the machine, as here):

* **optimization**: the page's default run (flamingo, the model's calibrated row 3, its own iterations, 224 px;
  ``--steps``/``--size`` change them) from the click on Start to the finished viewer (its "Finished" line and
  history slider drawn, the page idle), timed inside the browser (:data:`RUN_WATCH`); meanwhile the browser
  records each change of the live picture: how often it changed per second, and whether the picture (≥ 448 px)
  was in view.  The library: :func:`deepvis.optimize.run` of the
  same target, settings, seed and size (wall time).  Target: page ÷ library ≤ 1.25; ≥ 2 picture updates/s.
* **comparison**: the page's default four columns (calibrated rows 1-4, one batch) the same way, against the
  library's batched run of the same experiment.  Target ≤ 1.25.
* **browser-load**: what the browser alone takes from the run. The library's default run (as *optimization*)
  alone, and while Chromium shows ``bench/live_load_app.py``: the live view's one fragment at the same rate,
  drawing precomputed pictures (no optimizer on the server); alternating, medians.  The page cannot be faster than
  the library under that load.
* **activations**: on the Activations page with its default photo analyzed, the click on "next unit" (▶) to
  the unit column's summary line naming the new unit, and to the page idle again (every panel of the unit
  redrawn, the backward image included), both timed inside the browser from the click event;
  ``--repeats`` × 4 clicks, medians.  Target ≤ 400 ms.

Prints one JSON object per measurement, then a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("DEEPVIS_CHROMIUM", "/usr/bin/chromium")
CAPTION = re.compile(r"^iteration (\d+) · objective")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of the processes ``pids`` so far (Linux ``/proc``; 0 elsewhere)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            pass
    return total


def chromium_pids() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir() if Path("/proc").exists() else ():
        try:
            if entry.name.isdigit() and "chrom" in (entry / "comm").read_text():
                found.append(int(entry.name))
        except OSError:
            pass
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(script: str = "streamlit_app.py", root: Path = ROOT, env: dict | None = None
                 ) -> tuple[subprocess.Popen, str]:
    """A Streamlit server of ``root``'s ``script`` on a free port (``env``: extra environment variables)."""
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(root / script),
                               "--server.headless", "true", "--server.port", str(port),
                               "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false"],
                              cwd=root, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).status == 200:
                return server, url
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise SystemExit("the Streamlit server did not start")


OBSERVER = """(minSide) => {
  window.__seen = []; window.__inView = true;
  const sample = () => {
    const shown = [...document.querySelectorAll('[data-testid="stImage"], [data-testid="deepvis-live-image"]')]
      .filter(e => /^iteration \\d+ · objective/.test(e.innerText.trim()));
    const bar = '[data-testid="stProgress"], [data-testid="deepvis-live-progress"]';
    if (!shown.length || !document.querySelector(bar)) return;
    const srcs = shown.map(e => (e.querySelector('img') || {}).src || '').join('|');
    const last = window.__seen[window.__seen.length - 1];
    if (!last || last[1] !== srcs) window.__seen.push([performance.now(), srcs]);
    if (minSide && shown.length === 1) {
      const box = shown[0].querySelector('img').getBoundingClientRect();
      if (box.width > 0) window.__inView = window.__inView && box.width >= minSide && box.bottom <= innerHeight;
    }
  };
  new MutationObserver(sample).observe(document.body, {subtree: true, childList: true, attributes: true,
                                                       attributeFilter: ['src']});
}"""


RUN_WATCH = """(finished) => {
  // Timed in the browser (performance.now), as NEXT_UNIT_WATCH: the click on Start, the previous run's
  // "Finished" line gone, and then the first moment the finished viewer is drawn and idle (its "Finished"
  // line and history slider there, the script finished, no stale element).
  const t = window.__run = {};
  const line = new RegExp(finished);
  const check = () => {
    if (t.click === undefined || t.idle !== undefined) return;
    const now = performance.now();
    const done = [...document.querySelectorAll('[data-testid="stCaptionContainer"]')]
      .some(e => line.test(e.innerText.trim()));
    if (t.gone === undefined) { if (!done) t.gone = now; return; }
    const slider = [...document.querySelectorAll('[data-testid="stSlider"]')]
      .some(e => e.innerText.includes('History (iteration)'));
    const app = document.querySelector('[data-testid="stApp"]');
    if (done && slider && app.dataset.testScriptState === 'notRunning'
        && !document.querySelector('[data-stale="true"]')) { t.idle = now; observer.disconnect(); }
  };
  const observer = new MutationObserver(check);
  observer.observe(document.body, {subtree: true, childList: true, characterData: true, attributes: true});
  document.addEventListener('click', () => { t.click = performance.now(); check(); }, {capture: true, once: true});
}"""


def watch_run(page, finished: re.Pattern, picture_min: int | None, server_pid: int) -> dict:
    """Click Start and wait for ``finished`` and the history slider.  The browser itself records each change of
    the live picture(s) and times the run from the click to the idle finished viewer (MutationObservers,
    :data:`OBSERVER` and :data:`RUN_WATCH`), so watching costs the server nothing and the time is not rounded
    up to Playwright's polling (which waits up to a second between looks on a long wait): ``page_s``;
    ``page_s_polled`` is the same span as Playwright's waits saw it."""
    from playwright.sync_api import expect

    from tests.browser import app

    page.evaluate(OBSERVER, picture_min or 0)
    page.evaluate(RUN_WATCH, finished.pattern)
    browser, server = chromium_pids(), [server_pid]
    browser_cpu, server_cpu = cpu_seconds(browser), cpu_seconds(server)
    began = time.perf_counter()
    app.main_button(page, "Start").click()
    expect(page.get_by_text(finished)).to_have_count(0, timeout=120_000)  # a previous run's line is gone
    expect(page.get_by_text(finished)).to_be_visible(timeout=1_800_000)
    slider = page.locator('[data-testid="stSlider"]').filter(has_text="History (iteration)")
    expect(slider).to_have_count(1, timeout=600_000)
    app.wait_idle(page, 600_000)  # the whole viewer, its quality line included (else the library's run pays for it)
    polled = time.perf_counter() - began
    page.wait_for_function("() => window.__run.idle !== undefined", timeout=60_000)
    timed = page.evaluate("window.__run")
    browser_cpu, server_cpu = cpu_seconds(browser) - browser_cpu, cpu_seconds(server) - server_cpu
    line = page.get_by_text(finished).first.inner_text()
    run_s = float(m[1]) if (m := re.search(r" in ([0-9.]+) s", line)) else None  # the run's own time, as it says
    seen, in_view = page.evaluate("[window.__seen, window.__inView]")
    span = (seen[-1][0] - seen[0][0]) / 1000 if len(seen) > 1 else 0.0
    return {"page_s": (timed["idle"] - timed["click"]) / 1000, "page_s_polled": polled,
            "picture_updates": len(seen), "updates_per_s": (len(seen) - 1) / span if span else 0.0,
            "picture_in_view": bool(in_view) if picture_min else None, "server_cpu_s": server_cpu,
            "browser_cpu_s": browser_cpu, "run_s": run_s}


NEXT_UNIT_WATCH = """(unit) => {
  // Timed in the browser (performance.now): the click, the first paint of the summary line naming ``unit``,
  // and the page idle again (script finished, no stale element). Playwright's own waiting polls at 100, 250,
  // 500 ms… and would round a 150 ms change up to about 400 ms.
  const t = window.__nextUnit = {};
  const named = new RegExp(`^Unit ${unit} · `);
  const check = () => {
    const now = performance.now();
    if (t.click === undefined) return;
    if (t.shown === undefined) {
      for (const el of document.querySelectorAll('[data-testid="stMarkdownContainer"]')) {
        if (named.test(el.innerText)) { t.shown = now; break; }
      }
    }
    if (t.shown !== undefined && t.idle === undefined) {
      const app = document.querySelector('[data-testid="stApp"]');
      if (app.dataset.testScriptState === 'notRunning' && !document.querySelector('[data-stale="true"]')) {
        t.idle = now;
        observer.disconnect();
      }
    }
  };
  const observer = new MutationObserver(check);
  observer.observe(document.body, {subtree: true, childList: true, characterData: true, attributes: true});
  document.addEventListener('click', () => { t.click = performance.now(); }, {capture: true, once: true});
}"""


def next_unit(page, clicks: int) -> dict:
    """Median milliseconds from a click on ▶ to the new unit's summary line, and to the page idle again (every
    panel of the unit column redrawn, the backward image included), both timed in the browser."""
    from playwright.sync_api import expect

    from tests.browser import app

    app.wait_for_unit(page, 0, 180_000)
    shown, idle = [], []
    for unit in range(1, clicks + 1):
        page.evaluate(NEXT_UNIT_WATCH, unit)
        app.main_button(page, "▶").click()
        expect(app.summary_line(page)).to_have_text(re.compile(rf"^Unit {unit} · "), timeout=60_000)
        app.wait_idle(page)
        page.wait_for_function("() => window.__nextUnit.idle !== undefined", timeout=60_000)
        times = page.evaluate("window.__nextUnit")
        shown.append(times["shown"] - times["click"])
        idle.append(times["idle"] - times["click"])
        time.sleep(0.5)  # the page at rest before the next click, as a user would pause
    return {"page": "activations", "measure": "next unit", "clicks": clicks, "summary_ms": statistics.median(shown),
            "idle_ms": statistics.median(idle), "summary_all": shown, "idle_all": idle, "target": "<= 400 ms"}


def browser_load(loaded, target, args) -> dict:
    """The library's default run alone and while Chromium watches the stand-in live page (module docstring)."""
    from playwright.sync_api import expect, sync_playwright

    from deepvis import optimize as opt
    from deepvis import presets

    settings = presets.resolve(loaded, "3")
    if args.steps:
        settings = settings.replace(steps=args.steps)
    server, url = start_server("bench/live_load_app.py")
    alone, loaded_s, browser_cpu, server_cpu = [], [], [], []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            for _ in range(args.repeats):
                began = time.perf_counter()
                opt.run(loaded, target, settings, seed=0, size=args.size)
                alone.append(time.perf_counter() - began)
                context = browser.new_context(viewport={"width": 1440, "height": 900})
                page = context.new_page()
                page.goto(url)
                expect(page.get_by_text(re.compile(r"^iteration \d+ · objective"))).to_be_visible(timeout=120_000)
                time.sleep(2.0)
                cpu_b, cpu_s = cpu_seconds(chromium_pids()), cpu_seconds([server.pid])
                began = time.perf_counter()
                opt.run(loaded, target, settings, seed=0, size=args.size)
                loaded_s.append(time.perf_counter() - began)
                browser_cpu.append(cpu_seconds(chromium_pids()) - cpu_b)
                server_cpu.append(cpu_seconds([server.pid]) - cpu_s)
                context.close()
                print(json.dumps({"alone_s": alone[-1], "under_browser_s": loaded_s[-1],
                                  "browser_cpu_s": browser_cpu[-1], "server_cpu_s": server_cpu[-1]}), flush=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(30)
    row = {"page": "browser-load", "steps": settings.steps, "size": args.size, "repeats": args.repeats,
           "alone_s": statistics.median(alone), "under_browser_s": statistics.median(loaded_s),
           "browser_cpu_s": statistics.median(browser_cpu), "server_cpu_s": statistics.median(server_cpu)}
    row["ratio"] = row["under_browser_s"] / row["alone_s"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="optimization,comparison")
    parser.add_argument("--steps", type=int, default=None, help="iterations (default: each preset's own)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from playwright.sync_api import expect, sync_playwright

    from deepvis import optimize as opt
    from deepvis import presets
    from deepvis.history import snapshot_every
    from deepvis.models import load_model
    from deepvis.targets import Target
    from tests.browser import app

    loaded = load_model(device="cpu")
    target = Target(loaded.logits_layer, 130)  # flamingo, the pages' default
    results = []
    if args.only == "browser-load":
        results.append(browser_load(loaded, target, args))
        print(json.dumps(results[-1]), flush=True)
        return
    server, url = start_server()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            for which in args.only.split(","):
                context = browser.new_context(viewport={"width": 1440, "height": 900})
                page = context.new_page()
                app.track_runs(page)
                page.goto(f"{url}/{which if which != 'activations' else ''}")
                if which != "activations":  # (the Activations page waits for its unit column instead)
                    expect(page.get_by_role("heading", name=which.capitalize())).to_be_visible(timeout=120_000)
                app.wait_idle(page)
                if which == "activations":
                    results.append(next_unit(page, 4 * args.repeats))
                    print(json.dumps(results[-1]), flush=True)
                    context.close()
                    continue
                if which == "optimization":
                    settings = [presets.resolve(loaded, "3")]
                    popover, counts = "Seed, size, display", [1]
                else:
                    settings = [presets.resolve(loaded, str(j)) for j in range(1, 5)]
                    popover, counts = "Columns, seed, size, display", [4]
                if args.size != loaded.spec.input_size:
                    app.fill_in_popover(page, popover, "Image size (px)", args.size)
                if args.steps:
                    settings = [s.replace(steps=args.steps) for s in settings]
                    editors = page.get_by_text("Edit θ", exact=True)
                    for j in range(len(settings)):
                        editors.nth(j).click()
                        app.fill_number(page, "Iterations", args.steps, nth=j)
                steps = max(s.steps for s in settings)
                timed, library = [], []
                for _ in range(args.repeats):
                    if timed:  # the same page again, from its top (the run's viewer replaced by the next Start)
                        page.evaluate("window.scrollTo(0, 0)")
                        app.wait_idle(page)
                    timed.append(watch_run(page, re.compile(rf"^Finished {steps} iterations"),
                                           448 if which == "optimization" else None, server.pid))
                    began = time.perf_counter()
                    opt.run(loaded, [target] * counts[0], settings, seed=0, size=args.size)
                    library.append(time.perf_counter() - began)
                    print(json.dumps({"page": which, **timed[-1], "library_s": library[-1]}), flush=True)
                context.close()
                median = {key: statistics.median(r[key] for r in timed) for key in
                          ("page_s", "updates_per_s", "server_cpu_s", "browser_cpu_s")}
                row = {"page": which, "columns": len(settings), "steps": steps, "size": args.size,
                       "repeats": args.repeats, **median, "picture_in_view": timed[0]["picture_in_view"] is not False
                       and all(r["picture_in_view"] is not False for r in timed),
                       "library_s": statistics.median(library), "pairs": [(r["page_s"], t) for r, t in zip(timed, library)],
                       "every": snapshot_every(steps)}
                row["ratio"] = row["page_s"] / row["library_s"]
                row["target"] = "<= 1.25"
                if which == "comparison":
                    row["picture_in_view"] = None
                results.append(row)
                print(json.dumps(row), flush=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(30)
    print()
    print("| page | run | page: Start to finished viewer | library | page ÷ library | picture updates/s | "
          "CPU during the page's run: server / Chromium | picture in view |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for r in results:
        if r["page"] == "activations":
            continue
        print(f"| {r['page']} | {r['columns']} × {r['steps']} it at {r['size']} px | {r['page_s']:.1f} s | "
              f"{r['library_s']:.1f} s | **{r['ratio']:.2f}** | {r['updates_per_s']:.1f} | "
              f"{r['server_cpu_s']:.0f} / {r['browser_cpu_s']:.0f} s | "
              f"{ {True: 'yes', False: 'no', None: '–'}[r['picture_in_view']]} |")
    for r in results:
        if r["page"] == "activations":
            print(f"\nActivations, next unit ({r['clicks']} clicks, medians): summary line {r['summary_ms']:.0f} ms, "
                  f"page idle {r['idle_ms']:.0f} ms (target {r['target']})")


if __name__ == "__main__":
    main()
