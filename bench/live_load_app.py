"""A stand-in for the Optimization page's live view with no optimizer behind it (for ``bench_pages --only
browser-load``): one fragment every ``IMAGE_EVERY`` s, as :func:`deepvis.app.runs.live` draws it, with a new
448-px picture and its caption on the left and, on the right, the progress line and a 560 × 300 curve picture
that changes every ``CHART_EVERY`` s (re-sent unchanged in between); the pictures are made once, so the server
does next to nothing and what the page costs is the browser's."""

import time

import numpy as np
import streamlit as st

from deepvis.app.runs import CHART_EVERY, IMAGE_EVERY, LIVE_SIZE
from deepvis.render import png_bytes


@st.cache_resource
def pictures() -> tuple[list[bytes], list[bytes]]:
    rng = np.random.default_rng(0)
    small = [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(8)]
    images = [png_bytes(np.kron(s, np.ones((2, 2, 1), dtype=np.uint8))) for s in small]  # 448 px, sharp pixels
    curves = [png_bytes(np.full((300, 560, 3), 255 - 20 * i, dtype=np.uint8)) for i in range(8)]
    return images, curves


st.set_page_config(layout="wide")
st.title("Optimization")
images, curves = pictures()


@st.fragment(run_every=IMAGE_EVERY)
def view() -> None:
    n = st.session_state["n"] = st.session_state.get("n", 0) + 1
    left, right = st.columns([LIVE_SIZE, 1000 - LIVE_SIZE], gap="medium")
    left.image(images[n % len(images)], caption=f"iteration {n} · objective {n / 10:.3g}", width=LIVE_SIZE)
    right.progress((n % 100) / 100, text=f"iteration {n} of 300")
    right.image(curves[int(time.monotonic() / CHART_EVERY) % len(curves)], output_format="PNG")


view()
