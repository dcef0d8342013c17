"""An atlas's viewer in Chromium from file://, with no server: the layers, a layer's unit grid, a click on a
unit to its page (a stable address inside the bundle) with its optimized image, its top-k crops and table."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import expect

from deepvis import atlas, presets
from deepvis.progress import drain


def test_the_viewer_opens_from_file_and_a_click_shows_a_unit(browser, lite0, tmp_path) -> None:
    layer = "_blocks.0._swish"
    short = presets.resolve(lite0, "3").replace(steps=20)
    drain(atlas.build(lite0, "samples", [layer, "_blocks.1._swish"], tmp_path / "atlas", k=4, optimize=short,
                      size=32))
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    try:
        page.goto((tmp_path / "atlas" / "index.html").as_uri())
        expect(page.get_by_role("heading", name="Atlas of efficientnet_lite0")).to_be_visible()
        page.get_by_role("link", name=layer, exact=True).click()
        expect(page.get_by_role("heading", name=layer)).to_be_visible()
        cells = page.locator(".cell img")
        expect(cells).to_have_count(32)
        page.locator(f".cell a[href$='/{layer}/5.html']").click()
        assert page.url == (tmp_path / "atlas" / "units" / layer / "5.html").as_uri()
        expect(page.get_by_role("heading", name=f"{layer}, unit 5")).to_be_visible()
        hits = atlas.top(tmp_path / "atlas", layer, 5, 4)
        rows = page.locator("table tr").all_inner_texts()[1:]
        assert [r.split("\t")[2] for r in rows] == [Path(h.path).name for h in hits]
        assert [r.split("\t")[3] for r in rows] == [f"(y {h.y}, x {h.x})" for h in hits]
        # Every picture on the page is there and drawn (its file is inside the bundle).
        sizes = page.locator("img").evaluate_all("els => els.map(e => [e.complete, e.naturalWidth])")
        assert len(sizes) == 3 and all(done and width > 0 for done, width in sizes)
        page.get_by_role("link", name="6 ▶").click()
        expect(page.get_by_role("heading", name=f"{layer}, unit 6")).to_be_visible()
    finally:
        context.close()
