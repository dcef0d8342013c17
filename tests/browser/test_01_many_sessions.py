"""Several people on one server at once (runs first, so it also meets the cold start:
the sessions load the shared model and draw their first charts at the same moment).

Each page uploads a different photo at the same time while another page runs an
optimization on the same model; each must show exactly its own photo and its own
predictions - no cross-talk through the shared model - and the optimization goes on.
"""

from __future__ import annotations

import re

import numpy as np
from playwright.sync_api import expect

from deepvis.images import SAMPLE_NAMES, sample_bytes
from tests import corpus
from tests.browser import app


def test_four_sessions_at_once_each_see_their_own_photo(new_page, reference, app_url: str) -> None:
    photos = {f"{name}.jpg": sample_bytes(name) for name in SAMPLE_NAMES}
    photos["quadrants.jpg"] = corpus.photo_bytes(480, 360)
    names = list(photos)
    assert len(names) >= 4

    # Open every page before waiting for any, so their first runs overlap.
    pages = [new_page(wait=False) for _ in names]
    for page in pages:
        page.goto(app_url, wait_until="commit")
    for page in pages:
        expect(app.prediction_chart(page)).to_be_visible(timeout=180_000)
        app.wait_idle(page)
        app.assert_no_exception(page)
        app.choose_source(page, "Upload")

    optimizing, started_at = start_optimization(new_page)
    for round_number in range(2):  # the second round gives every page another photo
        order = names[round_number:] + names[:round_number]
        old = [app.view_src(page) for page in pages]
        for page, name in zip(pages, order):  # all uploads in flight together
            app.upload(page, name, photos[name], "image/jpeg")
        for page, name, src in zip(pages, order, old):
            app.wait_for_new_view(page, src, timeout_ms=120_000)
            expected = reference(photos[name])
            shown = app.shown_predictions(page)
            assert [label for label, _ in shown] == [p.label for p in expected.predictions], f"{name}: {shown}"
            for (label, prob), want in zip(shown, expected.predictions):
                assert abs(prob - want.prob) <= 0.0015, f"{name} {label}: {prob} vs {want.prob}"
            view = app.fetch_image(page, app.image_by_caption(page, app.VIEW_CAPTION))
            np.testing.assert_array_equal(view, expected.view, err_msg=name)
            app.assert_no_exception(page)

    # The optimization kept going beside them, and Stop still ends it cleanly.
    stop = app.main_button(optimizing, "Stop")
    if stop.is_enabled():  # (a fast machine may have finished all 199 iterations already)
        stop.click()
    ended = optimizing.get_by_text(re.compile(r"^(Stopped after|Finished) \d+"))
    expect(ended).to_be_visible(timeout=120_000)
    assert int(re.search(r"\d+", ended.inner_text()).group()) > started_at + 1, ended.inner_text()
    app.assert_no_exception(optimizing)


def start_optimization(new_page):
    page = new_page("optimization")
    expect(page.get_by_role("heading", name="Optimization")).to_be_visible(timeout=120_000)
    app.wait_idle(page)
    app.fill_in_popover(page, "Seed, size, display", "Image size (px)", 64)
    app.open_expander(page, "Edit θ", reruns=True)
    app.fill_number(page, "Iterations", 199)
    app.main_button(page, "Start").click()
    running = page.get_by_text(re.compile(r"^iteration [1-9]\d* of 199"))
    expect(running).to_be_visible(timeout=120_000)
    return page, int(re.search(r"\d+", running.inner_text()).group())
