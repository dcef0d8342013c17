"""Live video in Chromium: the fake camera (the chelsea photo as a y4m video) streamed to the server.

Offline: no STUN or TURN server is configured, so browser and server connect over localhost only.  The live
top-5 shows the photo's class (a cat), the frame rate shown is above 0, and Freeze hands the current frame to
the still-image analysis.  A screenshot of the live view goes to test-output/live.png.
"""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.browser import app
from tests.browser.conftest import OUTPUT

CATS = ("tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat")
RATE = re.compile(r"Live · ([0-9.]+) frames/s · latency (\d+) ms")


def test_live_video_shows_the_cameras_class_and_a_frame_rate_and_freezes(new_page):
    page = new_page()
    page.set_viewport_size({"width": 1440, "height": 900})
    app.wait_idle(page)
    app.choose_source(page, "Live video")
    expect(page.get_by_text("Press START to stream your camera")).to_be_visible()
    webrtc = page.frame_locator('iframe[title*="streamlit_webrtc"]')
    webrtc.get_by_role("button", name="START").click()
    status = page.get_by_text(RATE)
    expect(status).to_be_visible(timeout=90_000)
    # wait until a few frames have been drawn, then read what the page says
    page.wait_for_function("() => { const m = [...document.querySelectorAll('p')].map(p => p.innerText)"
                           ".find(t => /Live · [0-9.]+ frames\\/s/.test(t));"
                           " return m && parseFloat(m.match(/Live · ([0-9.]+)/)[1]) > 0; }", timeout=60_000)
    rate = float(RATE.search(status.inner_text()).group(1))
    assert rate > 0
    top = page.locator('[data-testid="stMarkdownContainer"]').filter(has_text=re.compile(r"^\d+% ")).first
    expect(top).to_be_visible()
    assert any(cat in top.inner_text() for cat in CATS), top.inner_text()
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / "live.png"))
    # Freeze: the newest frame becomes a still photo, analyzed in full (prediction chart, backward image)
    before = app.runs(page)
    app.main_button(page, "Freeze").click()
    app.wait_for_rerun(page, before)
    app.wait_idle(page)
    expect(page.get_by_role("button", name="Back to live video")).to_be_visible()
    expect(app.prediction_chart(page)).to_have_count(1, timeout=90_000)
    assert app.shown_predictions(page)[0][0] in CATS
    assert app.image_by_caption(page, "What the network sees (centre crop)").count() == 1
    app.assert_no_exception(page)
