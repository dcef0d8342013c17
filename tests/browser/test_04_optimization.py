"""The Optimization page in Chromium: a run's picture is in view and changes while it runs, the history slider
browses it, and Stop ends a long run while keeping what it made. Small images (64 px) and few iterations keep it
quick."""

from __future__ import annotations

import os
import re
import time

import numpy as np
import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect

from deepvis import optimize as opt
from deepvis import presets
from deepvis.models import load_model
from deepvis.render import upscale
from deepvis.targets import Target, resolve_unit
from tests.browser import app

CAPTION = r"^iteration (\d+) · objective (\S+)"


def open_optimization(new_page, size: int, steps: int):
    page = new_page("optimization")
    expect(page.get_by_role("heading", name="Optimization")).to_be_visible(timeout=120_000)
    app.wait_idle(page)
    app.fill_in_popover(page, "Seed, size, display", "Image size (px)", size)
    app.open_expander(page, "Edit θ", reruns=True)
    app.fill_number(page, "Iterations", steps)
    return page


def one_caption(page) -> str:
    """The caption of the one image shown (waiting for the page to settle on one: the run's end may ask for one
    more rerun just after Stop's)."""
    deadline = time.monotonic() + 15
    while len(captions := app.image_captions(page, CAPTION)) != 1 and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert len(captions) == 1, f"one image caption expected, found {captions}"
    return captions[0]


def shown(page) -> tuple[int, float]:
    caption = one_caption(page)
    match = re.match(CAPTION, caption)
    return int(match.group(1)), float(match.group(2))


def history_slider(page):
    return page.locator('[data-testid="stSlider"]').filter(has_text="History (iteration)").get_by_role("slider")


def test_run_updates_live_and_history_slider_browses_it(new_page) -> None:
    steps = 199  # a few seconds to watch (60 took 1.5 s on 2 cores); runs this short snapshot every iteration
    page = open_optimization(new_page, 64, steps)
    page.set_viewport_size({"width": 1440, "height": 900})
    app.main_button(page, "Start").click()

    # While it runs, the picture (448 px) is in view without scrolling and it changes.
    seen: dict[str, str] = {}  # caption -> image source, while running
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        image = page.locator(app.IMAGES).filter(has_text=re.compile(CAPTION)).locator("img")
        if image.count() == 1 and app.progress_text(page):
            try:  # the picture is replaced every 0.4 s: it may go while it is read
                box, src = image.bounding_box(timeout=1_000), image.get_attribute("src", timeout=1_000)
                captions = app.image_captions(page, CAPTION)
            except PlaywrightError:
                box = None
            if box is not None and captions:
                assert box["width"] >= 448 and box["y"] >= 0 and box["y"] + box["height"] <= 900, box
                seen.setdefault(captions[0], src)
        if page.get_by_text(re.compile(rf"^Finished {steps} iterations")).count():
            break
        page.wait_for_timeout(100)
    expect(page.get_by_text(re.compile(rf"^Finished {steps} iterations"))).to_be_visible()
    app.wait_idle(page)
    assert len(set(seen.values())) >= 3, f"the picture did not change while running: {list(seen)}"

    slider = history_slider(page)
    expect(slider).to_have_count(1)
    last, _ = shown(page)
    assert last == steps - 1
    best = float(metric(page, "best objective"))
    best_at = int(metric(page, "best at iteration"))

    # Browse: the first image, then the best one; captions and images follow the slider.
    last_src = app.image_by_caption(page, "iteration").get_attribute("src")
    slider.focus()
    slider.press("Home")
    expect(caption_of(page, 0)).to_have_count(1, timeout=30_000)
    app.wait_idle(page)
    start, start_objective = shown(page)
    assert start == 0
    assert app.image_by_caption(page, "iteration").get_attribute("src") != last_src
    assert best > start_objective, "gradient ascent never raised the objective above its start"

    if best_at > (steps - 1) / 2:  # from the nearer end
        slider.press("End")
        for _ in range(steps - 1 - best_at):
            slider.press("ArrowLeft")
    else:
        for _ in range(best_at):
            slider.press("ArrowRight")
    expect(caption_of(page, best_at)).to_have_count(1, timeout=30_000)
    app.wait_idle(page)
    assert shown(page) == (best_at, best)  # the image at the best iteration scores the best objective
    app.assert_no_exception(page)


def metric(page, label: str) -> str:
    box = page.locator('[data-testid="stMetric"]').filter(has=page.get_by_text(label, exact=True))
    return box.locator('[data-testid="stMetricValue"]').inner_text().strip()


def caption_of(page, iteration: int):
    return page.locator('[data-testid="stImageCaption"]').filter(has_text=re.compile(rf"^iteration {iteration} ·"))


def test_stop_ends_a_long_run_and_keeps_its_history(new_page) -> None:
    steps = 199  # long enough to stop half-way, short enough to snapshot every iteration
    page = open_optimization(new_page, 64, steps)
    app.main_button(page, "Start").click()
    expect(page.get_by_text(re.compile(rf"^iteration ([3-9]|\d\d+) of {steps}"))).to_be_visible(timeout=120_000)
    app.main_button(page, "Stop").click()

    stopped = page.get_by_text(re.compile(rf"^Stopped after (\d+) of {steps} iterations"))
    expect(stopped).to_be_visible(timeout=60_000)
    app.wait_idle(page)
    done = int(re.search(r"after (\d+)", stopped.inner_text()).group(1))
    assert 3 <= done < steps
    iteration, objective = shown(page)
    assert iteration <= done
    expect(history_slider(page)).to_have_count(1)  # the history is there to browse
    # What the real run kept is what the library computes for that iteration (same seed, unit and settings):
    # the shown image is the one evaluated at `iteration`, i.e. the last image of a run of iteration + 1 steps.
    loaded = load_model(device="cpu")
    target = Target(loaded.logits_layer, resolve_unit(loaded, loaded.logits_layer, "flamingo"))
    settings = presets.resolve("efficientnet_lite0", "3")  # the page's default: Lite0's calibrated row 3
    row = opt.run(loaded, target, settings.replace(steps=iteration + 1), seed=0, size=64).rows[0]
    assert objective == pytest.approx(row.final, rel=1e-3, abs=1e-3)
    caption = one_caption(page)
    got = app.fetch_image(page, app.image_by_caption(page, caption))
    # Shown scaled about zero (the default display); the page enlarges small images, nearest neighbour.
    want = upscale(row.image("last", "zero"), 448, smooth=False)
    assert got.shape == want.shape and np.mean(np.abs(got.astype(int) - want.astype(int)) > 2) < 1e-2
    expect(app.prediction_chart(page)).to_have_count(0)
    app.assert_no_exception(page)


def test_a_deep_link_opens_the_page_inside_the_app(new_page) -> None:
    """A bookmarked /optimization in a new session runs the router (wide layout, the app's own navigation),
    not a bare script found in a `pages/` folder."""
    page = open_optimization(new_page, 64, 5)
    nav = page.locator('[data-testid="stSidebarNav"]')
    expect(nav.get_by_text("Activations", exact=True)).to_be_visible()
    expect(nav.get_by_text("streamlit app", exact=True)).to_have_count(0)


def _server_cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_run_whose_tab_was_closed_stops_by_itself(new_page, app_server) -> None:
    """Closing the tab mid-run: the server stops that run once the session has been gone a while (3 s in these
    tests), and stops spending the CPU on it."""
    page = open_optimization(new_page, 64, 5000)
    app.main_button(page, "Start").click()
    expect(page.get_by_text(re.compile(r"^iteration ([3-9]|\d\d+) of 5000"))).to_be_visible(timeout=120_000)
    logged = len(app_server.log_text())
    page.context.close()
    deadline = time.monotonic() + 60
    while "stopped: its session has gone" not in app_server.log_text()[logged:]:
        assert time.monotonic() < deadline, f"the run went on after its tab closed:\n{app_server.log_tail()}"
        time.sleep(0.5)
    time.sleep(1.0)
    before = _server_cpu_seconds(app_server.process.pid)
    time.sleep(3.0)
    assert _server_cpu_seconds(app_server.process.pid) - before < 0.6  # a 64-px run would take ~2 CPU-s a second
