"""The app serving a network of one's own, in Chromium: ``streamlit run streamlit_app.py -- --models FILE``
with the gray 1x28x28 digits network (``tests/nets/digits.py:GrayNet``, trained by the ``gray_net``
fixture) configured.  The sidebar offers it first and shows it; the Activations page draws its grid and
predictions naming digits, with no exception or traceback on the page or in the server's log.

This test starts its own server (the shared ``app_server`` runs without a models file).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import expect

from tests.browser import app
from tests.browser.conftest import OUTPUT, Server, serve

TITLE = "Digits (my own)"


@pytest.fixture(scope="module")
def own_server(gray_net: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("own-network")
    models = folder / "models.toml"
    models.write_text(
        f'[models.digits]\ntitle = "{TITLE}"\nmodel = "{Path(gray_net["file"]).as_posix()}:GrayNet"\n'
        f'weights = "{Path(gray_net["weights"]).as_posix()}"\nclasses = "{Path(gray_net["classes"]).as_posix()}"\n'
        'input = "1x28x28"\nmean = [0.5]\nstd = [0.5]\n')
    OUTPUT.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "DEEPVIS_MODELS"}  # the file comes from --models only
    yield from serve(OUTPUT / "streamlit-own-network.log", folder / "cache", ["--models", str(models)], env)


def test_the_servers_own_network_is_offered_first_and_its_activations_page_works(browser, own_server) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(30_000)
    page = context.new_page()
    app.track_runs(page)
    try:
        page.goto(own_server.url)
        expect(app.prediction_chart(page)).to_be_visible(timeout=120_000)
        app.wait_idle(page, 120_000)

        # The sidebar: the user's network first, and chosen.
        sidebar = page.get_by_test_id("stSidebar")
        expect(app.combobox(page, "Network")).to_have_value(TITLE)
        app.combobox(page, "Network").click()
        options = page.get_by_role("option").all_inner_texts()
        assert options and options[0].strip() == TITLE, options
        page.keyboard.press("Escape")
        expect(sidebar.get_by_text("input 1x28x28")).to_be_visible()

        # The grid (an image in its component's frame) and the predictions, naming digits.
        grid, _ = app.fetch_grid(page)
        assert grid.ndim >= 2 and min(grid.shape[:2]) >= 100 and grid.std() > 0
        expect(page.locator('[data-testid="stCaptionContainer"]').filter(has_text="one tile each")).to_have_count(1)
        shown = app.shown_predictions(page)
        assert len(shown) == 5 and all(label.startswith("digit ") for label, _ in shown), shown
        view = app.fetch_image(page, app.image_by_caption(page, app.VIEW_CAPTION))
        assert view.shape[:2] == (224, 224)  # the 28 px view, enlarged 8 times with no smoothing
        assert np.array_equal(view, view[::8, ::8].repeat(8, axis=0).repeat(8, axis=1))

        app.assert_no_exception(page)
        assert "Traceback" not in own_server.log_text(), own_server.log_tail()
    except BaseException:
        page.screenshot(path=str(OUTPUT / "own-network-failed.png"), full_page=True)
        raise
    finally:
        context.close()
