"""A stand-in for the Optimization page's live view with no optimizer behind it (for ``bench_pages --only
browser-load``): the same two fragments at the same rates as :func:`deepvis.app.runs.live`, one drawing a new
448-px picture with its caption every ``IMAGE_EVERY`` s, the other a new 560 × 300 curve picture every
``CHART_EVERY`` s; the pictures are made once, so the server does next to nothing and what the page costs is the
browser's."""

import numpy as np
import streamlit as st

from deepvis.app.runs import CHART_EVERY, IMAGE_EVERY, LIVE_SIZE


@st.cache_resource
def pictures() -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(0)
    small = [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(8)]
    images = [np.kron(s, np.ones((2, 2, 1), dtype=np.uint8)) for s in small]  # 448 px, sharp pixels like the page
    curves = [np.full((300, 560, 3), 255 - 20 * i, dtype=np.uint8) for i in range(8)]
    return images, curves


st.set_page_config(layout="wide")
st.title("Optimization")
images, curves = pictures()
left, right = st.columns([LIVE_SIZE, 1000 - LIVE_SIZE], gap="medium")


@st.fragment(run_every=IMAGE_EVERY)
def picture() -> None:
    n = st.session_state["n"] = st.session_state.get("n", 0) + 1
    st.progress((n % 100) / 100, text=f"iteration {n} of 300")
    st.image(images[n % len(images)], caption=f"iteration {n} · objective {n / 10:.3g}", width=LIVE_SIZE)


@st.fragment(run_every=CHART_EVERY)
def chart() -> None:
    m = st.session_state["m"] = st.session_state.get("m", 0) + 1
    st.image(curves[m % len(curves)], caption="objective", width=560)


with left:
    picture()
with right:
    chart()
