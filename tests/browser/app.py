"""Helpers that drive and read the deepvis pages in a real browser (Playwright, sync API).

They find widgets by the labels a person sees and read back what the page shows:
the prediction chart's class labels and percentages, and the actual PNGs the page
displays (fetched from the server and decoded), so tests compare the page with the
library's own numbers instead of trusting that "something" appeared.
"""

from __future__ import annotations

import base64
import io
import re
import time
import weakref

import numpy as np
from PIL import Image
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Locator, Page, expect
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

APP = '[data-testid="stApp"]'
IDLE_JS = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  return !!app && app.dataset.testScriptState === 'notRunning'
      && app.dataset.testConnectionState === 'CONNECTED'
      && !document.querySelector('[data-stale="true"]');
}"""


# Script runs are counted from the server's own messages: every run ends with a
# ``script_finished`` ForwardMsg on the page's websocket. (The DOM's running/not-running
# attribute is not enough: when a quick run's start and end arrive together, React never
# renders "running".)
_FINISHED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_EARLY = ForwardMsg.ScriptFinishedStatus.Value("FINISHED_EARLY_FOR_RERUN")


# Streamlit's own elements, and a running run's live view (deepvis.app.stream), which draws its picture, caption
# and progress line itself.
IMAGES = '[data-testid="stImage"], [data-testid="deepvis-live-image"]'
CAPTIONS = '[data-testid="stImageCaption"], [data-testid="deepvis-live-caption"]'
PROGRESS = '[data-testid="stProgress"], [data-testid="deepvis-live-progress"]'

def track_runs(page: Page) -> None:
    """Count the script runs that finish for ``page`` (call before its first ``goto``)."""
    counter = [0]

    def on_frame(payload: bytes | str) -> None:
        if isinstance(payload, str):
            return
        try:
            message = ForwardMsg.FromString(bytes(payload))
        except Exception:  # not a ForwardMsg (nothing else is expected on this socket)
            return
        if message.WhichOneof("type") == "script_finished" and message.script_finished != _EARLY:
            counter[0] += 1

    page.on("websocket", lambda socket: socket.on("framereceived", on_frame))
    _FINISHED[page] = counter


def runs(page: Page) -> int:
    """Script runs (or fragment runs) finished so far for ``page``."""
    return _FINISHED[page][0]


def wait_for_rerun(page: Page, before: int, timeout_ms: float = 90_000) -> None:
    """Wait until a script run that finished after ``before = runs(page)`` has been drawn."""
    deadline = time.monotonic() + timeout_ms / 1000
    while runs(page) <= before:
        if time.monotonic() > deadline:
            raise AssertionError(f"no script run finished within {timeout_ms / 1000:.0f} s")
        page.wait_for_timeout(50)  # lets Playwright deliver websocket events
    wait_idle(page, timeout_ms)


def wait_idle(page: Page, timeout_ms: float = 90_000) -> None:
    """Wait until the script has finished and no element on the page is stale."""
    page.wait_for_function(IDLE_JS, timeout=timeout_ms, polling=100)


def assert_no_exception(page: Page) -> None:
    """No Streamlit exception box and no Python traceback text anywhere on the page."""
    expect(page.locator('[data-testid="stException"]')).to_have_count(0)
    text = page.locator(APP).inner_text()
    assert "Traceback" not in text and 'File "' not in text, text[-3000:]


def errors(page: Page) -> Locator:
    return page.locator('[data-testid="stAlertContentError"]')


def radio_option(page: Page, group_label: str, option: str) -> Locator:
    return page.locator('[data-testid="stRadio"]').filter(has_text=group_label).get_by_text(option, exact=True)


def choose_source(page: Page, source: str) -> None:
    """Pick "Sample photo", "Upload" or "Camera" in the image-source radio."""
    wait_idle(page)
    before = runs(page)
    radio_option(page, "Image source", source).click()
    wait_for_rerun(page, before)
    if source == "Upload":
        expect(page.locator('[data-testid="stFileUploaderDropzoneInput"]')).to_have_count(1)
    elif source == "Camera":
        expect(page.locator('[data-testid="stCameraInputButton"]')).to_be_visible()
        # A photo taken before the fake camera delivers its first frame is black: wait for real video.
        page.wait_for_function("() => { const v = document.querySelector('video');"
                               " return v && v.readyState >= 2 && v.videoWidth > 0 && v.currentTime > 0.5; }",
                               timeout=60_000)
    wait_idle(page)


def combobox(page: Page, label: str) -> Locator:
    return page.get_by_role("combobox", name=label, exact=True)


def choose_in_selectbox(page: Page, label: str, option_text: str) -> None:
    """Open the selectbox labelled ``label`` and click the option whose text starts with ``option_text``."""
    combobox(page, label).click()
    page.get_by_role("option").filter(has_text=re.compile("^" + re.escape(option_text))).first.click()
    expect(combobox(page, label)).to_have_value(re.compile("^" + re.escape(option_text)))


def upload(page: Page, filename: str, data: bytes, mime: str = "application/octet-stream") -> None:
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
        files=[{"name": filename, "mimeType": mime, "buffer": data}])


def prediction_chart(page: Page) -> Locator:
    return page.locator('[data-testid="stPlotlyChart"]').filter(has_text="Top-5 predictions")


def shown_predictions(page: Page) -> list[tuple[str, float]]:
    """(label, probability) pairs as the chart shows them, best first."""
    chart = prediction_chart(page)
    expect(chart).to_have_count(1)
    expect(chart.locator(".ytick text")).to_have_count(5)
    labels = chart.locator(".ytick text").all_text_contents()
    texts = chart.locator(".bartext, .bars .point text").all_text_contents()
    probs = [float(t.strip().rstrip("%")) / 100 for t in texts if t.strip().endswith("%")]
    # The chart lists the classes bottom-up (best on top).
    return list(zip(labels[::-1], probs[::-1])) if len(probs) == len(labels) else [(l, float("nan")) for l in labels[::-1]]


def wait_for_predictions(page: Page, top_label: str, timeout_ms: float = 90_000) -> None:
    """Wait until the chart shows ``top_label`` as its best class and the page is idle."""
    chart = prediction_chart(page)
    expect(chart.locator(".ytick text").last).to_have_text(top_label, timeout=timeout_ms)
    wait_idle(page, timeout_ms)


def image_by_caption(page: Page, caption: str) -> Locator:
    return page.locator(IMAGES).filter(has_text=caption).locator("img")


def fetch_image(page: Page, img: Locator) -> np.ndarray:
    """The pixels of a displayed ``<img>``, fetched from the server and decoded."""
    expect(img).to_have_count(1)
    img.evaluate("el => el.decode ? el.decode() : true")  # loaded and decodable by the browser
    assert img.evaluate("el => el.complete && el.naturalWidth > 0"), "the image did not load in the browser"
    src = img.evaluate("el => new URL(el.getAttribute('src'), document.baseURI).href")
    response = page.request.get(src)
    assert response.ok, f"{src}: HTTP {response.status}"
    assert response.headers.get("content-type", "").startswith("image/png"), response.headers.get("content-type")
    return np.asarray(Image.open(io.BytesIO(response.body())))


def set_number(page: Page, label: str, value: int) -> None:
    fill_number(page, label, value)


def selected_option(page: Page, label: str) -> str:
    """The text a selectbox labelled ``label`` shows for its current choice."""
    return combobox(page, label).input_value().strip()


def current_layer(page: Page) -> str:
    """The chosen layer's full node name, from the caption under the layer pickers ("Layer `name` · …")."""
    caption = page.locator('[data-testid="stCaptionContainer"]', has_text="Layer ").locator("code").first
    expect(caption).to_have_count(1)
    return caption.inner_text().strip()


VIEW_CAPTION = "What the network sees"


def view_src(page: Page) -> str | None:
    """The URL of the "what the network sees" image (a content hash), or None when absent."""
    img = image_by_caption(page, VIEW_CAPTION)
    return img.get_attribute("src") if img.count() == 1 else None


def wait_for_new_view(page: Page, old_src: str | None, timeout_ms: float = 90_000) -> None:
    """After an action that changes the photo: wait until the page shows a different view and is idle."""
    img = image_by_caption(page, VIEW_CAPTION)
    expect(img).to_have_count(1, timeout=timeout_ms)
    if old_src is not None:
        expect(img).not_to_have_attribute("src", old_src, timeout=timeout_ms)
    wait_idle(page, timeout_ms)


def number_input(page: Page, label: str, nth: int = 0) -> Locator:
    return page.get_by_role("spinbutton", name=label, exact=True).nth(nth)


def fill_number(page: Page, label: str, value: float, nth: int = 0) -> None:
    """Type ``value`` into the nth number input labelled ``label``, commit it (Enter) and wait
    for the rerun it causes; the value must still be there afterwards."""
    wait_idle(page)
    field = number_input(page, label, nth)
    before = runs(page)
    field.fill(str(value))
    field.press("Enter")
    wait_for_rerun(page, before)
    expect(field).to_have_value(str(value))


def image_captions(page: Page, pattern: str) -> list[str]:
    """Captions of the images whose caption matches the regular expression ``pattern``."""
    texts = page.locator(CAPTIONS).all_inner_texts()
    return [t.strip() for t in texts if re.search(pattern, t)]


def progress_text(page: Page) -> str | None:
    """The first progress bar's text, or None when there is none (or it went while being read)."""
    bar = page.locator(PROGRESS)
    try:
        return bar.first.inner_text(timeout=1_000).strip() if bar.count() else None
    except PlaywrightError:  # replaced or removed by a rerun between the count and the read
        return None


def main_button(page: Page, name: str) -> Locator:
    """A button in the page body (the header has its own "Stop" while a script runs)."""
    return page.get_by_test_id("stMainBlockContainer").get_by_role("button", name=name, exact=True)


def checked_option(page: Page, group_label: str) -> str:
    """The text of the chosen option of the radio group labelled ``group_label``."""
    group = page.locator('[data-testid="stRadio"]').filter(has=page.get_by_text(group_label, exact=True))
    return group.locator("input:checked").evaluate("el => el.closest('label').innerText").strip()


# --- the Activations dashboard: the clickable channel grid and the unit column ----------------------------

GRID_IFRAME = 'iframe[title*="image_coordinates"]'
SUMMARY = re.compile(r"^Unit (\d+) · max (\S+) · mean (\S+)")


def grid_iframe(page: Page) -> Locator:
    """The ``streamlit-image-coordinates`` iframe that draws the channel grid."""
    return page.locator(GRID_IFRAME)


def grid_img(page: Page) -> Locator:
    return page.frame_locator(GRID_IFRAME).locator("img")


def fetch_grid(page: Page, not_src: str | None = None, timeout_ms: float = 60_000) -> tuple[np.ndarray, str]:
    """The grid's pixels (decoded from the ``data:`` URL the component shows) and that URL.

    With ``not_src``, first wait until the component shows a different picture than that one.
    """
    expect(grid_iframe(page)).to_have_count(1, timeout=timeout_ms)
    img = grid_img(page)
    expect(img).to_have_attribute("src", re.compile(r"^data:image/png;base64,"), timeout=timeout_ms)
    if not_src is not None:
        expect(img).not_to_have_attribute("src", not_src, timeout=timeout_ms)
    img.evaluate("el => el.decode ? el.decode() : true")
    assert img.evaluate("el => el.complete && el.naturalWidth > 0"), "the grid did not load in the browser"
    src = img.get_attribute("src")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))), src


def summary_line(page: Page) -> Locator:
    """The unit column's ``**Unit 7** · max 1.87 · mean 0.246 · strongest at (y 13, x 8)`` line."""
    return page.locator('[data-testid="stMarkdownContainer"]').filter(has_text=SUMMARY)


def shown_unit(page: Page) -> tuple[int, float]:
    """(unit, max) as the summary line shows them."""
    line = summary_line(page)
    expect(line).to_have_count(1)
    match = SUMMARY.match(line.inner_text().strip())
    assert match, line.inner_text()
    return int(match[1]), float(match[2])


def wait_for_unit(page: Page, unit: int, timeout_ms: float = 60_000) -> None:
    """Wait until the summary line shows ``unit`` and the page is idle."""
    expect(summary_line(page)).to_have_text(re.compile(rf"^Unit {unit} · "), timeout=timeout_ms)
    wait_idle(page, timeout_ms)


def open_expander(page: Page, label: str, nth: int | None = None, reruns: bool = False) -> Locator:
    """Open the expander titled ``label`` (the ``nth`` of several, else the only one) if closed, and return it.

    ``reruns``: the expander reruns the script when it opens (``on_change="rerun"``); wait for that run to
    finish.  Otherwise the next widget edit can be sent while it runs, and a value that run's callbacks set
    (a θ editor's preset turning to "custom") is overwritten by the browser's stale copy of it.
    """
    expander = page.locator('[data-testid="stExpander"]').filter(has_text=label)
    if nth is None:
        expect(expander).to_have_count(1)
    else:
        expander = expander.nth(nth)
    details = expander.locator("details")
    if details.count() and details.get_attribute("open") is None:
        wait_idle(page)
        before = runs(page)
        expander.locator("summary").click()
        expect(details).to_have_attribute("open", re.compile(".*"))
        if reruns:
            wait_for_rerun(page, before)
    return expander


def fill_in_popover(page: Page, popover: str, label: str, value: float) -> None:
    """Open the popover whose button reads ``popover``, fill its number input ``label`` (:func:`fill_number`),
    and close it again (Escape)."""
    field = number_input(page, label)
    if not field.is_visible():
        main_button(page, popover).click()
        expect(field).to_be_visible()
    fill_number(page, label, value)
    if field.is_visible():
        page.keyboard.press("Escape")
        expect(field).to_be_hidden()
