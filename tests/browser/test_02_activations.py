"""The Activations page in Chromium, used the way a person uses it.

Every check compares what the page shows (chart labels and percentages, the PNGs it
displays, the unit's summary line) with the library's own analysis of the same photo.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from playwright.sync_api import expect

from deepvis.backprop import backprop
from deepvis.images import sample_bytes, to_batch
from deepvis.render import GridLayout, backprop_image, channel_grid, upscale
from tests.browser import app

CAT_CLASSES = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat
ZOOM = 224  # the unit column's activation map, backward image and their overlays


def assert_grid_matches(grid: np.ndarray, activation, unit: int) -> GridLayout:
    """The page's grid equals the library's (no numbers; ``unit``'s tile framed); returns its layout."""
    want, layout = channel_grid(activation, "channel", numbers=False, highlight=unit)
    assert grid.shape == want.shape, f"grid {grid.shape} vs {want.shape}"
    # Same model on the same CPU; allow one grey level where float rounding differs.
    assert np.mean(np.abs(grid.astype(int) - want.astype(int)) > 1) < 1e-3
    return layout


def framed(grid: np.ndarray, layout: GridLayout, channel: int) -> bool:
    """Whether the pad round ``channel``'s tile is drawn white (the chosen unit's frame)."""
    y, x, tile, edge = *layout.origin(channel), layout.tile, layout.pad
    ring = np.concatenate([grid[y - edge:y, x - edge:x + tile + edge].ravel(),
                           grid[y + tile:y + tile + edge, x - edge:x + tile + edge].ravel(),
                           grid[y:y + tile, x - edge:x].ravel(), grid[y:y + tile, x + tile:x + tile + edge].ravel()])
    return bool((ring == 255).all())


def assert_predictions_match(page, expected) -> None:
    shown = app.shown_predictions(page)
    assert [label for label, _ in shown] == [p.label for p in expected.predictions], shown
    for (label, prob), want in zip(shown, expected.predictions):
        assert abs(prob - want.prob) <= 0.0015, f"{label}: page shows {prob:.3f}, library gives {want.prob:.4f}"


def test_sample_photo_shows_its_predictions_view_and_layer_grid(new_page, reference) -> None:
    page = new_page()
    expect(app.prediction_chart(page)).to_be_visible(timeout=120_000)
    app.wait_idle(page)
    sample = app.selected_option(page, "Sample")
    layer = app.current_layer(page)
    expected = reference(sample_bytes(sample), layer)

    assert_predictions_match(page, expected)
    view = app.fetch_image(page, app.image_by_caption(page, "What the network sees"))
    np.testing.assert_array_equal(view, expected.view)

    grid, _ = app.fetch_grid(page)
    unit, shown_max = app.shown_unit(page)
    assert unit == 0, "a fresh session shows unit 0"
    assert_grid_matches(grid, expected.activation, unit)
    caption = page.locator('[data-testid="stCaptionContainer"]').filter(has_text="one tile each")
    expect(caption).to_contain_text(f"All {expected.activation.shape[0]} channels of {layer}")
    expect(caption).to_contain_text(f"the framed tile is unit {unit}.")
    assert shown_max == pytest.approx(float(expected.stats.max[unit]), rel=2e-3, abs=1e-3)
    app.assert_no_exception(page)

    other = next(name for name in ("coffee", "rocket", "astronaut") if name != sample)
    app.choose_in_selectbox(page, "Sample", other)
    expected = reference(sample_bytes(other), layer)
    app.wait_for_predictions(page, expected.predictions[0].label)
    assert_predictions_match(page, expected)
    app.assert_no_exception(page)


def test_uploaded_photo_gets_its_own_predictions(new_page, reference) -> None:
    page = new_page()
    app.choose_source(page, "Upload")
    data = sample_bytes("astronaut")
    app.upload(page, "my photo.jpg", data, "image/jpeg")
    expected = reference(data)
    app.wait_for_predictions(page, expected.predictions[0].label)
    assert_predictions_match(page, expected)
    view = app.fetch_image(page, app.image_by_caption(page, "What the network sees"))
    np.testing.assert_array_equal(view, expected.view)
    app.assert_no_exception(page)


def test_camera_photo_of_a_cat_is_classified_as_a_cat(new_page, reference) -> None:
    """Chromium's fake camera films the chelsea photo (see conftest); the page must see a cat."""
    page = new_page()
    app.choose_source(page, "Camera")
    expect(app.prediction_chart(page)).to_have_count(0)
    page.locator('[data-testid="stCameraInputButton"]').click()
    expect(app.prediction_chart(page)).to_be_visible(timeout=90_000)
    app.wait_idle(page)
    shown = app.shown_predictions(page)
    cats = {reference.model.class_names[i] for i in CAT_CLASSES}
    assert shown[0][0] in cats, f"camera photo classified as {shown}"
    assert sum(prob for label, prob in shown if label in cats) > 0.5, shown
    view = app.fetch_image(page, app.image_by_caption(page, "What the network sees"))
    assert view.shape == (224, 224, 3) and view.std() > 20  # a real picture, not a black frame
    app.assert_no_exception(page)


def hover_on_a_bar(page, overview, candidates: list[int]) -> tuple[int, tuple[float, float]]:
    """The first of ``candidates`` whose bar shows its own hover label when pointed at, and where to click."""
    label = overview.locator(".hoverlayer .hovertext")
    seen = []
    for unit in candidates:
        box = overview.locator(".barlayer .point path").nth(unit).bounding_box()
        assert box is not None, f"the overview bar of unit {unit} is not rendered"
        for dx in (0, -0.5, 0.5, -1, 1):
            where = (box["x"] + box["width"] / 2 + dx, box["y"] + box["height"] * 0.8)
            page.mouse.move(*where)
            expect(label).to_have_count(1)
            text = label.first.text_content()
            match = re.match(r"\(\s*(\d+)\s*,", text.strip())
            seen.append((unit, dx, text))
            if match and int(match[1]) == unit:
                return unit, where
    raise AssertionError(f"no bar could be pointed at on its own: {seen}")


@pytest.mark.parametrize("how", ["number", "overview click", "tile click"])
def test_choosing_a_unit_shows_it_up_close(new_page, reference, how: str) -> None:
    page = new_page()
    expect(app.prediction_chart(page)).to_be_visible(timeout=120_000)
    app.wait_idle(page)
    layer = app.current_layer(page)
    expected = reference(sample_bytes(app.selected_option(page, "Sample")), layer)
    maxima = expected.stats.max.numpy()
    before, before_src = app.fetch_grid(page)
    layout = assert_grid_matches(before, expected.activation, 0)
    assert framed(before, layout, 0)

    if how == "number":
        unit = int(expected.activation.shape[0]) - 3
        app.set_number(page, "Unit (channel)", unit)
    elif how == "overview click":
        overview = app.open_expander(page, "Max activation per channel")
        overview.scroll_into_view_if_needed()
        expect(overview.locator(".barlayer .point path")).to_have_count(len(maxima))
        # In the narrow column a bar can be thinner than a pixel: like a person, point at a tall bar, read
        # the hover label, and click once it names the bar pointed at. Not unit 0, which is already chosen.
        unit, where = hover_on_a_bar(page, overview, [int(u) for u in np.argsort(-maxima) if u != 0][:10])
        page.mouse.click(*where)
    else:
        # A tile in the third row and fourth column: both the row and the column must be right.
        unit = min(int(expected.activation.shape[0]) - 1, 2 * layout.cols + 3)
        img = app.grid_img(page)
        img.scroll_into_view_if_needed()
        shown_width, natural_width = img.evaluate("el => [el.clientWidth, el.naturalWidth]")
        assert natural_width == before.shape[1]
        scale = shown_width / natural_width
        y, x = layout.origin(unit)
        img.click(position={"x": (x + layout.tile / 2) * scale, "y": (y + layout.tile / 2) * scale})

    app.wait_for_unit(page, unit)
    shown_unit, shown_max = app.shown_unit(page)
    assert shown_unit == unit
    assert shown_max == pytest.approx(float(maxima[unit]), rel=2e-3, abs=1e-3)

    grid, _ = app.fetch_grid(page, not_src=before_src)
    assert_grid_matches(grid, expected.activation, unit)  # the chosen tile is framed
    assert framed(grid, layout, unit) and not framed(grid, layout, 0), "the frame did not move to the chosen tile"
    expect(page.locator('[data-testid="stCaptionContainer"]').filter(has_text="one tile each")).to_contain_text(
        f"the framed tile is unit {unit}.")

    zoom = app.fetch_image(page, app.image_by_caption(page, "Activation map"))
    blend = app.fetch_image(page, app.image_by_caption(page, "Overlaid on the input").first)
    assert zoom.shape[:2] == blend.shape[:2] == (ZOOM, ZOOM)
    # The brightest place of the enlarged map is where the library says the max is.
    height, width = expected.activation.shape[1:]
    y, x = expected.stats.argmax[unit].tolist()
    brightness = zoom[..., :3].astype(int).sum(axis=2)
    cell = brightness[y * ZOOM // height:(y + 1) * ZOOM // height, x * ZOOM // width:(x + 1) * ZOOM // width]
    assert cell.mean() >= np.percentile(brightness, 95) - 1
    app.assert_no_exception(page)


SEED_TEXT = {"the unit's activation map": "map", "its strongest position": "point"}


def assert_backward_image_matches(page, reference, expected, layer: str, unit: int) -> str:
    """The backward image shown for ``unit`` equals the library's, for the mode and filter the page shows."""
    caption = page.locator('[data-testid="stImageCaption"]').filter(has_text=" filter").first.inner_text().strip()
    mode, shown_filter = caption.removesuffix(" filter").split(", ")
    seed = SEED_TEXT[app.checked_option(page, "Start from")]
    batch = to_batch(expected.view, reference.model.spec.normalization)
    gradient = backprop(reference.model.module, batch, layer, unit, mode, seed)[0]
    want = upscale(backprop_image(gradient, shown_filter), ZOOM)
    got = app.fetch_image(page, app.image_by_caption(page, caption))
    assert got.shape == want.shape, (got.shape, want.shape)
    assert np.mean(np.abs(got.astype(int) - want.astype(int)) > 2) < 1e-3, f"{caption}: differs from the library"
    return mode


def test_unit_backward_image_follows_the_chosen_mode(new_page, reference) -> None:
    page = new_page()
    expect(app.prediction_chart(page)).to_be_visible(timeout=120_000)
    app.wait_idle(page)
    layer = app.current_layer(page)
    expected = reference(sample_bytes(app.selected_option(page, "Sample")), layer)
    unit = 4
    app.set_number(page, "Unit (channel)", unit)
    app.wait_for_unit(page, unit)
    expect(page.get_by_role("heading", name="Which pixels of this photo drive it")).to_be_visible(timeout=60_000)
    first = assert_backward_image_matches(page, reference, expected, layer, unit)

    other = next(m for m in ("guided", "deconv", "saliency") if m != first)
    app.radio_option(page, "Backward pass", other).click()
    expect(page.locator('[data-testid="stImageCaption"]').filter(has_text=f"{other}, ")).to_have_count(1, timeout=60_000)
    app.wait_idle(page)
    assert assert_backward_image_matches(page, reference, expected, layer, unit) == other

    # The seed and the filter change the picture too, each exactly as the library computes it.
    def backward_src() -> str:
        caption = page.locator('[data-testid="stImageCaption"]').filter(has_text=" filter").first.inner_text()
        return app.image_by_caption(page, caption.strip()).get_attribute("src")

    for group, option in (("Start from", "its strongest position"), ("Filter", "raw")):
        before = backward_src()
        app.radio_option(page, group, option).click()
        expect(page.locator('[data-testid="stImageCaption"]').filter(has_text=" filter").first).to_be_visible()
        page.wait_for_function("src => ![...document.querySelectorAll('img')].some(i => i.getAttribute('src') == src)",
                               arg=before, timeout=60_000)
        app.wait_idle(page)
        assert backward_src() != before, option
        assert assert_backward_image_matches(page, reference, expected, layer, unit) == other
    app.assert_no_exception(page)
