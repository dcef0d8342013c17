"""The Activations dashboard in Chromium: one screen, links to a unit, and a unit's top images.

* At 1440 × 900 the channel grid and the chosen unit's summary and activation map fit on the
  first screen (its screenshot, test-output/activations_dashboard.png, is the README picture's source).
* A link with model, weights, layer and unit opens that unit, and the URL follows the unit shown.
* Indexing the bundled photos runs in the background and ends in the unit's top 9 crops, in
  exactly the order and with the values the library's index gives.
"""

from __future__ import annotations

import re
import time

from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from playwright.sync_api import expect

from deepvis import index, units
from deepvis.collection import DEFAULT_NAME
from tests.browser import app
from tests.browser.conftest import OUTPUT

SCREEN = {"width": 1440, "height": 900}
SCREENSHOT = OUTPUT / "activations_dashboard.png"  # copied by hand to docs/ for the README
LINK = "?model=efficientnet_lite0&weights=default&layer=_blocks.5._swish_1&unit=7"
CROP_CAPTION = r"^#\d+ · "
GRID_SIZED = f"""() => {{
  const frame = document.querySelector('{app.GRID_IFRAME}');
  const img = frame && frame.contentDocument && frame.contentDocument.querySelector('img');
  return !!img && img.complete && img.naturalWidth > 0
      && Math.abs(frame.getBoundingClientRect().height - img.getBoundingClientRect().height) <= 2;
}}"""


def wait_loaded(page) -> None:
    expect(app.prediction_chart(page)).to_be_visible(timeout=120_000)
    expect(app.summary_line(page)).to_have_count(1, timeout=60_000)
    app.wait_idle(page)


def test_grid_and_unit_fit_on_the_first_screen(new_page, app_url: str) -> None:
    page = new_page(wait=False)
    page.set_viewport_size(SCREEN)
    page.goto(app_url)
    wait_loaded(page)
    app.fetch_grid(page)  # the grid has been drawn
    zoom = app.image_by_caption(page, "Activation map")
    expect(zoom).to_have_count(1)
    zoom.evaluate("el => el.decode ? el.decode() : true")
    try:  # the component sets its iframe's height once its picture has loaded
        page.wait_for_function(GRID_SIZED, timeout=30_000, polling=100)
    except PlaywrightTimeoutError:
        pass  # reported below, with the sizes
    assert page.evaluate("() => [window.scrollX, window.scrollY]") == [0, 0]

    for name, element in (("channel grid", app.grid_iframe(page)), ("summary line", app.summary_line(page)),
                          ("activation map", zoom)):
        box = element.bounding_box()
        assert box is not None, f"the {name} is not rendered"
        assert box["width"] > 0 and box["height"] > 0, f"the {name} has no size: {box}"
        assert 0 <= box["x"] and box["x"] + box["width"] <= SCREEN["width"], f"the {name} is cut off sideways: {box}"
        assert 0 <= box["y"] and box["y"] + box["height"] <= SCREEN["height"], f"the {name} is below the screen: {box}"

    # The component sizes its iframe to the picture: none of the grid may be cut off at the bottom.
    frame, picture = app.grid_iframe(page).bounding_box(), app.grid_img(page).bounding_box()
    assert picture["y"] + picture["height"] <= frame["y"] + frame["height"] + 1, (picture, frame)

    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))  # the viewport only, as a person sees it
    app.assert_no_exception(page)


def test_a_link_opens_its_unit_and_the_url_follows_the_unit(new_page) -> None:
    page = new_page(LINK)
    wait_loaded(page)
    assert app.current_layer(page) == "_blocks.5._swish_1"
    app.wait_for_unit(page, 7)
    expect(app.number_input(page, "Unit (channel)")).to_have_value("7")
    expect(page.locator('[data-testid="stAlert"]')).to_have_count(0)  # the link named nothing unknown

    before = app.runs(page)
    forward = page.locator(".st-key-act_unit_next").get_by_role("button", name="▶", exact=True)
    expect(forward).to_have_count(1)
    forward.click()
    app.wait_for_rerun(page, before)
    app.wait_for_unit(page, 8)
    deadline = time.monotonic() + 30
    while "unit=8" not in page.url.split("?", 1)[-1].split("&"):
        assert time.monotonic() < deadline, f"the URL did not follow the unit: {page.url}"
        page.wait_for_timeout(100)
    assert "layer=_blocks.5._swish_1" in page.url and "model=efficientnet_lite0" in page.url, page.url
    app.assert_no_exception(page)


def test_indexing_the_bundled_photos_shows_the_units_top_nine(new_page, reference, app_server,
                                                               monkeypatch) -> None:
    page = new_page()
    wait_loaded(page)
    layer = app.current_layer(page)
    unit, _ = app.shown_unit(page)

    button = app.main_button(page, f"Index 17 photos for {layer}")
    button.scroll_into_view_if_needed()
    expect(button).to_be_visible()
    started = time.monotonic()
    button.click()
    crops = page.locator('[data-testid="stImageCaption"]').filter(has_text=re.compile(CROP_CAPTION))
    expect(page.locator('[data-testid="stProgress"]').or_(crops).first).to_be_visible(timeout=60_000)
    expect(crops).to_have_count(9, timeout=300_000)
    app.wait_idle(page, 120_000)
    print(f"indexing and the top 9 took {time.monotonic() - started:.1f} s")

    monkeypatch.setenv("DEEPVIS_CACHE", str(app_server.cache))  # read the index the server wrote
    hits = index.top(index.index_path(reference.model, DEFAULT_NAME), layer, unit, 9)
    assert len(hits) == 9
    assert app.image_captions(page, CROP_CAPTION) == [units.hit_label(rank, hit) for rank, hit in
                                                     enumerate(hits, 1)]
    expect(app.main_button(page, f"Index 17 photos for {layer}")).to_have_count(0)
    app.assert_no_exception(page)
