"""Live video: grid updates per second, on the server alone and end to end in Chromium.

Run by hand from the repository root:

    python -m bench.bench_live [--threads 2] [--frames 40] [--layers _blocks.3._swish_1,_blocks.9._swish_1,_fc]
                               [--browser] [--seconds 20]

* **Server side**: one 640 × 480 camera frame (scikit-image's chelsea) through
  :func:`deepvis.live.analyze_frame` (the model's centre crop at 224 px, one forward pass to the layer and the
  logits, the layer's channel grid) plus the three JPEGs the page sends per frame (view, grid, the unit's map and
  overlay), ``--frames`` times after a warm-up; the median per frame and its rate.  The floor is the bare
  forward pass of the same batch through the same (BatchNorm-folded) graph module.
* **End to end** (``--browser``): ``streamlit run`` on a free port and the system Chromium with a fake camera
  filming the same photo (a y4m file), Live video on the Activations page for ``--seconds``; the frame rate and
  latency are what the page itself shows (:class:`deepvis.live.Meter`: frames drawn per second over the last
  2 s, and a frame's age from its arrival, at its fastest, to its result being drawn).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from deepvis import live
from deepvis.activations import capture
from deepvis.images import model_view, to_batch
from deepvis.models import load_model
from deepvis.render import heat_colors, overlay, jpeg_bytes, to_uint8, upscale

REPO = Path(__file__).resolve().parents[1]


def server_side(layers: list[str], frames: int) -> None:
    from PIL import Image
    from skimage import data

    loaded = load_model(device="cpu")
    photo = np.asarray(Image.fromarray(data.chelsea()).resize((640, 480)))
    print("| layer | shape | analysis + JPEGs ms | frames/s | forward alone ms (floor) |")
    print("|---|---|---:|---:|---:|")
    for layer in layers:
        def frame() -> None:
            result = live.analyze_frame(loaded, photo, layer, unit=0)
            jpeg_bytes(result.analysis.view)
            jpeg_bytes(result.grid)
            if result.analysis.is_spatial:
                channel = result.analysis.channel_map(0)
                jpeg_bytes(np.concatenate([upscale(heat_colors(to_uint8(channel)), 224, smooth=False),
                                          upscale(overlay(result.analysis.view, channel), 224)], axis=1))

        batch = to_batch(model_view(Image.fromarray(photo), loaded.spec), loaded.spec.normalization)

        def forward() -> None:
            capture(loaded.module, batch, [layer, loaded.logits_layer], folded=True)

        for job in (frame, forward):
            job()
        times = {"frame": [], "forward": []}
        for _ in range(frames):
            for name, job in (("frame", frame), ("forward", forward)):
                started = time.perf_counter()
                job()
                times[name].append(time.perf_counter() - started)
        per_frame, fwd = statistics.median(times["frame"]), statistics.median(times["forward"])
        shape = tuple(loaded.layer(layer).shape)
        print(f"| `{layer}` | {' × '.join(map(str, shape))} | {1000 * per_frame:.1f} | {1 / per_frame:.1f} | "
              f"{1000 * fwd:.1f} |", flush=True)


def end_to_end(seconds: float) -> None:
    import io
    import socket
    import urllib.request

    from PIL import Image
    from playwright.sync_api import sync_playwright

    from deepvis.images import sample_bytes
    from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, write_y4m

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    scratch = Path(tempfile.mkdtemp())
    video = scratch / "camera.y4m"
    write_y4m(video, Image.open(io.BytesIO(sample_bytes("chelsea"))))
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.port", str(port),
                               "--server.headless", "true"], cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env={**os.environ, "DEEPVIS_CACHE": str(scratch / "cache")})
    url = f"http://localhost:{port}"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                                 args=[*CHROMIUM_ARGS, f"--use-file-for-fake-video-capture={video}"])
            page = browser.new_context(viewport={"width": 1440, "height": 900}, permissions=["camera"]).new_page()
            page.set_default_timeout(120_000)
            page.goto(url)
            page.locator('[data-testid="stRadio"]').filter(has_text="Image source").get_by_text(
                "Live video", exact=True).click()
            page.frame_locator('iframe[title*="streamlit_webrtc"]').get_by_role("button", name="START").click()
            status = page.get_by_text(re.compile(r"^Live · "))
            status.wait_for()
            readings = []
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                time.sleep(2.0)
                found = re.search(r"([0-9.]+) frames/s · latency (\d+) ms · (\d+) frames shown, (\d+) dropped"
                                  r" · analysis (\d+) ms", status.inner_text())
                if found:
                    readings.append(tuple(float(v) for v in found.groups()))
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=15)
    steady = readings[len(readings) // 2:] or readings
    fps = statistics.median(r[0] for r in steady)
    latency = statistics.median(r[1] for r in steady)
    analysis = statistics.median(r[4] for r in steady)
    last = readings[-1]
    print(f"\nEnd to end in Chromium, `_blocks.9._swish_1` (the page's default layer), {seconds:.0f} s: "
          f"{fps:.1f} frames/s shown, latency {latency:.0f} ms, analysis {analysis:.0f} ms (medians of the second "
          f"half's readings); {last[2]:.0f} frames shown, {last[3]:.0f} dropped.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--layers", default="_blocks.3._swish_1,_blocks.9._swish_1,_fc")
    parser.add_argument("--browser", action="store_true")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, CPU\n")
    server_side(args.layers.split(","), args.frames)
    if args.browser:
        end_to_end(args.seconds)


if __name__ == "__main__":
    main()
