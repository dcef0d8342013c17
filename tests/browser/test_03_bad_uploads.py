"""Odd and hostile uploads in the real page (a representative part of tests/corpus.py;
all of it goes through AppTest in tests/test_bad_input.py).

Refused files: one error line that says what is wrong, no exception box, no chart;
then a good upload in the same session works. Accepted odd files: the page shows
exactly what the library makes of them (right way up, in colour) and its predictions.
Each group runs in one browser session, one file after another, as a person would.
"""

from __future__ import annotations

import numpy as np
from playwright.sync_api import expect

from deepvis.images import decode_image, model_view, sample_bytes
from tests import corpus
from tests.browser import app

REFUSED = ["empty", "text_as_jpg", "html_as_png", "svg_as_png", "truncated_jpeg", "png_bomb"]
ACCEPTED = ["exif_orientation_6", "cmyk_jpeg", "animated_gif", "rgba_png", "strip_4000x20", "photo_8000x6000"]
GOOD = ["coffee", "rocket", "astronaut"]


def check_predictions(page, expected, what: str) -> None:
    shown = app.shown_predictions(page)
    assert [label for label, _ in shown] == [p.label for p in expected.predictions], f"{what}: page shows {shown}"


def test_refused_uploads_show_one_line_and_the_next_upload_works(new_page, reference) -> None:
    page = new_page()
    app.choose_source(page, "Upload")
    for number, name in enumerate(REFUSED):
        case = corpus.get(name)
        assert not case.ok
        app.upload(page, case.filename, case.data)
        error = app.errors(page)
        expect(error, f"{name}: no error shown").to_have_count(1, timeout=60_000)
        app.wait_idle(page)
        text = error.inner_text().strip()
        assert text.startswith("Cannot use this file"), f"{name}: {text!r}"
        assert "\n" not in text, f"{name}: the error is more than one line: {text!r}"
        assert any(word in text.lower() for word in case.error_words), f"{name}: {text!r}"
        expect(app.prediction_chart(page), f"{name}: a chart is still shown").to_have_count(0)
        app.assert_no_exception(page)

        good_name = GOOD[number % len(GOOD)]
        good = sample_bytes(good_name)
        app.upload(page, f"{good_name}.jpg", good, "image/jpeg")
        app.wait_for_new_view(page, None)
        expect(app.errors(page), f"the error from {name} stayed after a good upload").to_have_count(0)
        check_predictions(page, reference(good), f"{good_name} after {name}")
        app.assert_no_exception(page)


def test_odd_but_valid_uploads_are_shown_right(new_page, reference) -> None:
    page = new_page()
    app.choose_source(page, "Upload")
    src = None
    for name in ACCEPTED:
        case = corpus.get(name)
        assert case.ok
        app.upload(page, case.filename, case.data)
        app.wait_for_new_view(page, src)
        src = app.view_src(page)
        expect(app.errors(page), f"{name} was refused").to_have_count(0)
        check_predictions(page, reference(case.data), name)
        # What the person sees is the correctly decoded photo (tests/test_bad_input.py
        # checks decode_image itself: orientation, colours, size).
        view = app.fetch_image(page, app.image_by_caption(page, app.VIEW_CAPTION))
        np.testing.assert_array_equal(view, model_view(decode_image(case.data), reference.model.spec), err_msg=name)
        app.assert_no_exception(page)
