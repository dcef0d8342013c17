"""The map of a layer's representation in Chromium: pointing at a point shows that photo's thumbnail, and
clicking it makes it the page's photo.

The thumbnail is compared with :func:`deepvis.embed.thumbnail` of the photo the point's own hover label names
(the same data URL, byte for byte), so a thumbnail of the wrong photo, or none, fails.
"""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import expect

from deepvis import embed
from deepvis.collection import default_collection
from tests.browser import app
from tests.browser.conftest import OUTPUT

SCREENSHOT = OUTPUT / "representation_map.png"
FLOATING = """() => [...document.querySelectorAll('body > img')].map(i => i.src)"""  # the hover's pictures


def test_pointing_at_a_point_shows_its_thumbnail_and_a_click_opens_its_photo(new_page) -> None:
    page = new_page()
    page.set_viewport_size({"width": 1440, "height": 1000})
    expect(app.prediction_chart(page)).to_be_visible(timeout=120_000)
    app.wait_idle(page)
    expander = app.open_expander(page, "Map of this layer over the collection", reruns=True)  # drawn once opened
    index_button = expander.get_by_role("button", name=re.compile(r"^Index 17 photos"))
    chart = expander.locator(".js-plotly-plot")
    expect(index_button.or_(chart).first).to_be_visible(timeout=120_000)
    if index_button.count():
        index_button.click()
    expect(chart).to_have_count(1, timeout=300_000)
    app.wait_idle(page, 120_000)
    chart.scroll_into_view_if_needed()
    points = chart.locator(".scatterlayer .point")
    expect(points).to_have_count(17)

    box = points.nth(2).bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    label = chart.locator(".hoverlayer .hovertext")
    expect(label).to_have_count(1, timeout=10_000)
    name = label.locator("tspan.line").first.text_content()  # its first line: the file name
    path = next(e.path for e in default_collection() if Path(e.path).name == name)
    page.wait_for_function(f"() => ({FLOATING})().length === 1", timeout=10_000)
    assert page.evaluate(FLOATING) == [embed.thumbnail(path, 128)]
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))

    page.mouse.move(5, 5)  # away: the thumbnail goes
    page.wait_for_function(f"() => ({FLOATING})().length === 0", timeout=10_000)

    before = app.runs(page)
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    app.wait_for_rerun(page, before)
    expect(page.get_by_text(f"Photo: {name}", exact=True)).to_have_count(1, timeout=60_000)
    expect(chart).to_have_count(1)  # the map stays, for the next point
    app.assert_no_exception(page)
