"""The Comparison page in Chromium: three settings -> three columns from one batched run;
one history slider moves every column. Few iterations at 32 px keep it quick."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.browser import app

CAPTION = r"^iteration (\d+) · objective (\S+)"
COLUMNS, STEPS = 3, 6


def column_captions(page) -> list[tuple[int, float]]:
    found = [re.match(CAPTION, c) for c in app.image_captions(page, CAPTION)]
    return [(int(m.group(1)), float(m.group(2))) for m in found]


def column_images(page) -> list[str]:
    images = page.locator('[data-testid="stImage"]').filter(has_text=re.compile(CAPTION)).locator("img")
    return [img.get_attribute("src") for img in images.all()]


def test_three_settings_three_columns_one_slider_moves_all(new_page) -> None:
    page = new_page("comparison")
    expect(page.get_by_role("heading", name="Comparison")).to_be_visible(timeout=120_000)
    app.wait_idle(page)
    app.fill_in_popover(page, "Columns, seed, size, display", "Settings (columns)", COLUMNS)
    app.fill_in_popover(page, "Columns, seed, size, display", "Image size (px)", 32)
    expect(page.get_by_text("Edit θ", exact=True)).to_have_count(COLUMNS)
    for j in range(COLUMNS):
        app.open_expander(page, "Edit θ", nth=j, reruns=True)
        app.fill_number(page, "Iterations", STEPS, nth=j)

    app.main_button(page, "Start").click()
    expect(page.get_by_text(re.compile(rf"^Finished {STEPS} iterations"))).to_be_visible(timeout=180_000)
    # The finished run's history viewer draws after the quality verdicts: wait for its three captions.
    expect(page.locator('[data-testid="stImageCaption"]').filter(has_text=re.compile(rf"^iteration {STEPS - 1} ·"))
           ).to_have_count(COLUMNS, timeout=120_000)
    app.wait_idle(page)
    for letter in "ABC":
        expect(page.get_by_text(re.compile(rf"^{letter} · ")).first).to_be_visible()
    final = column_captions(page)
    assert [it for it, _ in final] == [STEPS - 1] * COLUMNS, final
    assert len({objective for _, objective in final}) > 1, "different settings gave identical results"

    slider = page.locator('[data-testid="stSlider"]').filter(has_text="History (iteration), all columns")
    thumb = slider.get_by_role("slider")
    thumb.focus()
    thumb.press("Home")
    expect(page.locator('[data-testid="stImageCaption"]').filter(has_text=re.compile(r"^iteration 0 ·"))
           ).to_have_count(COLUMNS, timeout=30_000)
    app.wait_idle(page)
    start = column_captions(page)
    assert [it for it, _ in start] == [0] * COLUMNS
    # Same seed, same starting noise: every column shows the same first image.  (Its score is the one the network
    # gave the view it saw, which each column's jitter J shifts by its own amount, so the scores may differ.)
    assert len(set(column_images(page))) == 1

    thumb.press("End")
    expect(page.locator('[data-testid="stImageCaption"]').filter(has_text=re.compile(rf"^iteration {STEPS - 1} ·"))
           ).to_have_count(COLUMNS, timeout=30_000)
    app.wait_idle(page)
    assert column_captions(page) == final
    app.assert_no_exception(page)
