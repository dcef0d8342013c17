"""The Training page in Chromium: ``streamlit run streamlit_app.py -- --runs DIR`` with two recorded, computed
runs (:func:`tests.test_app_training.make_runs`: measured for real, flat ``conv1`` pictures that encode the
filter and the step).  A link opens a run at a step; the step slider moves the grid and the filter's history;
a click on a tile opens that filter's history; no exception on the page or traceback in the server's log.

This test starts its own server (the shared ``app_server`` runs without ``--runs``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import pytest
from playwright.sync_api import expect

from deepvis.app.training_views import _grid_tile
from deepvis.render import grid_layout, upscale
from tests.browser import app
from tests.browser.conftest import OUTPUT, Server, serve
from tests.test_app_training import STEPS, make_runs, tile


@pytest.fixture(scope="module")
def training_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, Path]]]:
    root = tmp_path_factory.mktemp("training-runs")
    runs = make_runs(root / "runs")
    OUTPUT.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "DEEPVIS_RUNS"}  # the root comes from --runs only
    for server in serve(OUTPUT / "streamlit-training.log", root / "cache", ["--runs", str(root / "runs")], env):
        yield server, runs


def grid_caption(page):
    return page.locator('[data-testid="stCaptionContainer"]').filter(has_text="filters of conv1")


def filter_caption(page, unit: int, step: int):
    return page.locator('[data-testid="stImageCaption"]').filter(
        has_text=re.compile(rf"^conv1 filter {unit} at step {step} ·"))


def test_a_link_opens_a_run_the_slider_steps_and_a_click_opens_a_filters_history(browser, training_server) -> None:
    server, runs = training_server
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(30_000)
    page = context.new_page()
    app.track_runs(page)
    try:
        query = urlencode({"run": str(runs["good"]), "step": STEPS[1], "layer": "conv1", "unit": 0})
        page.goto(f"{server.url}/training?{query}")
        expect(grid_caption(page)).to_contain_text(f"good at step {STEPS[1]}: all 16 filters", timeout=120_000)
        expect(filter_caption(page, 0, STEPS[1])).to_have_count(1)
        app.wait_idle(page, 60_000)
        expect(app.combobox(page, "Run")).to_have_value("good")

        # The step slider: one step on; the grid and the filter's history follow.
        slider = page.locator('[data-testid="stSlider"]').filter(has_text="Step").first.get_by_role("slider")
        slider.focus()
        slider.press("ArrowRight")
        expect(grid_caption(page)).to_contain_text(f"good at step {STEPS[2]}:")
        expect(filter_caption(page, 0, STEPS[2])).to_have_count(1)
        app.wait_idle(page)
        shown = app.fetch_image(page, app.image_by_caption(page, f"conv1 filter 0 at step {STEPS[2]} ·"))
        assert np.array_equal(shown[..., :3], upscale(tile(0, 2), 256, smooth=False))

        # A click on the tile in the second row, third column opens filter 6's history.
        layout = grid_layout(16, _grid_tile(16), _grid_tile(16))
        unit = layout.cols + 2
        img = app.grid_img(page)
        img.scroll_into_view_if_needed()
        shown_width, natural_width = img.evaluate("el => [el.clientWidth, el.naturalWidth]")
        scale = shown_width / natural_width
        y, x = layout.origin(unit)
        img.click(position={"x": (x + layout.tile / 2) * scale, "y": (y + layout.tile / 2) * scale})
        expect(filter_caption(page, unit, STEPS[2])).to_have_count(1)
        expect(grid_caption(page)).to_contain_text(f"the framed one is filter {unit}")
        app.wait_idle(page)
        assert f"unit={unit}" in page.url and f"step={STEPS[2]}" in page.url

        # Its own slider browses its history back to the first step, the step slider staying where it is.
        history = page.locator('[data-testid="stSlider"]').filter(has_text="Its history").get_by_role("slider")
        history.focus()
        history.press("Home")
        expect(filter_caption(page, unit, STEPS[0])).to_have_count(1)
        expect(grid_caption(page)).to_contain_text(f"good at step {STEPS[2]}:")
        app.wait_idle(page)
        shown = app.fetch_image(page, app.image_by_caption(page, f"conv1 filter {unit} at step {STEPS[0]} ·"))
        assert np.array_equal(shown[..., :3], upscale(tile(unit, 0), 256, smooth=False))

        app.assert_no_exception(page)
        assert "Traceback" not in server.log_text(), server.log_tail()
    except BaseException:
        page.screenshot(path=str(OUTPUT / "training-failed.png"), full_page=True)
        raise
    finally:
        context.close()
