"""Every filter of a layer, live, in Chromium: the grid updates while the batch runs, a slider runs over the whole
grid's history, and a click on a tile opens that filter's own history with its own slider.  Eight filters of
``_blocks.0._swish`` at 64 px keep it quick."""

from __future__ import annotations

import re
import time

from playwright.sync_api import expect

from deepvis.render import grid_layout
from tests.browser import app

FILTERS, STEPS, SIZE = 8, 1000, 64  # about 3 s of run (199 took 0.75 s: too short to see two frames)
LIVE = re.compile(r"^iteration (\d+) · every filter's newest image")


def test_the_layer_grid_updates_live_and_a_tiles_history_opens_on_click(new_page) -> None:
    page = new_page("optimization")
    expect(page.get_by_role("heading", name="Optimization")).to_be_visible(timeout=120_000)
    app.wait_idle(page)
    page.get_by_text("every filter of a layer", exact=True).click()
    expect(page.get_by_text(re.compile(r"^Filters: the first N of"))).to_be_visible(timeout=60_000)
    app.wait_idle(page)
    app.choose_in_selectbox(page, "Block", "_blocks.0")
    app.wait_idle(page)
    app.choose_in_selectbox(page, "Layer (type to search)", "_swish")
    app.wait_idle(page)
    app.fill_number(page, "Filters: the first N of 32", FILTERS)
    app.fill_in_popover(page, "Seed, size, display", "Image size (px)", SIZE)
    app.open_expander(page, "Edit θ", reruns=True)
    app.fill_number(page, "Iterations", STEPS)

    app.main_button(page, "Start").click()
    seen: dict[int, str] = {}  # iteration -> the grid's source, while it runs
    deadline = time.monotonic() + 240
    finished = page.get_by_text(re.compile(rf"^Finished {STEPS} iterations"))
    while time.monotonic() < deadline and not finished.count():
        captions = app.image_captions(page, LIVE.pattern)
        if captions:
            try:
                src = app.image_by_caption(page, captions[0]).get_attribute("src", timeout=1_000)
                seen.setdefault(int(LIVE.match(captions[0]).group(1)), src)
            except Exception:  # the picture was replaced while it was read
                pass
        page.wait_for_timeout(100)
    expect(finished).to_be_visible(timeout=60_000)
    app.wait_idle(page)
    assert len(set(seen.values())) >= 2, f"the grid did not change while the layer ran: {sorted(seen)}"

    # The whole grid's history: back to the first iteration.
    slider = page.locator('[data-testid="stSlider"]').filter(has_text="History (iteration), every filter")
    expect(slider).to_have_count(1)
    handle = slider.get_by_role("slider")
    handle.focus()
    handle.press("Home")
    expect(page.locator('[data-testid="stCaptionContainer"]').filter(has_text=re.compile(r"^Iteration 0: the first")))\
        .to_have_count(1, timeout=30_000)
    app.wait_idle(page)

    # A click on the fourth tile opens its own history.
    expect(page.get_by_role("heading", name="Filter 0")).to_be_visible()
    img = app.grid_img(page)
    img.scroll_into_view_if_needed()
    shown_width, natural_width = img.evaluate("el => [el.clientWidth, el.naturalWidth]")
    layout = grid_layout(FILTERS, 96, 96, pad=2)  # as deepvis.render.image_grid lays tiles out
    scale = shown_width / natural_width
    y, x = layout.origin(3)
    img.click(position={"x": (x + layout.tile / 2) * scale, "y": (y + layout.tile / 2) * scale})
    expect(page.get_by_role("heading", name="Filter 3")).to_be_visible(timeout=60_000)
    app.wait_idle(page)
    own = page.locator('[data-testid="stSlider"]').filter(has_text="Its history (iteration)").get_by_role("slider")
    own.focus()
    own.press("Home")
    expect(page.locator('[data-testid="stImageCaption"]').filter(has_text=re.compile(r"^filter 3 · iteration 0 ·")))\
        .to_have_count(1, timeout=30_000)
    app.assert_no_exception(page)
