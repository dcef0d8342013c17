"""The one module that touches Streamlit: cached loaders and shared widget groups.

Conventions
-----------
* ``shared_model`` is cached with ``st.cache_resource``: one frozen model per
  (name, weights, seed, device), shared by every session.  Nothing here or in
  the pages may modify it (see :mod:`deepvis.hooks`).
* Widget groups return plain Python values (bytes, a ``LoadedModel``) so the
  pages stay thin; every failure a person can cause becomes one ``st.error``
  line, never a traceback.
"""

from __future__ import annotations

import numpy as np
import streamlit as st
from PIL import Image

from deepvis.backprop import ModeSupport, mode_support
from deepvis.images import SAMPLE_NAMES, ImageDecodeError, decode_image, sample_bytes
from deepvis.models import DEFAULT_MODEL, REGISTRY, LoadedModel, ModelError, default_device, load_model

SOURCES = ("Sample photo", "Upload", "Camera")


@st.cache_resource(show_spinner="Loading the model (once for every session)…", max_entries=4)
def shared_model(name: str, weights: str, seed: int, device: str) -> LoadedModel:
    return load_model(name, weights, device, seed)


def model_sidebar() -> LoadedModel:
    """Sidebar picker for model and weights; returns the shared model (falls back to the default).

    Every page calls this first thing (the widgets keep their state across pages
    through their keys).  It is not drawn by the router because AppTest re-runs
    only the page script on reruns under ``st.navigation``.
    """
    with st.sidebar:
        st.subheader("Model")
        name = st.selectbox("Network", list(REGISTRY), format_func=lambda n: REGISTRY[n].title, key="model_name")
        weights = st.radio("Weights", ("default", "random"), horizontal=True, key="model_weights",
                           format_func=lambda w: "pretrained (ImageNet)" if w == "default" else "random init",
                           help="Random weights show what an untrained network of the same shape responds to.")
        seed = 0
        if weights == "random":
            seed = int(st.number_input("Init seed", 0, 2**31 - 1, 0, key="model_seed"))
        device = str(default_device())
        try:
            loaded = shared_model(name, weights, seed, device)
        except ModelError as exc:
            st.error(str(exc))
            st.info("Showing the embedded EfficientNet-Lite0 instead; it works offline.")
            loaded = shared_model(DEFAULT_MODEL, "default", 0, device)
        st.caption(f"**{loaded.spec.title}** · {loaded.weights} weights · device **{loaded.device.type}** · "
                   f"{len(loaded.layers)} layers · input {loaded.spec.input_size}px")
    return loaded


def image_input(key: str = "image") -> tuple[bytes, str] | None:
    """Sample / upload / camera picker; returns ``(bytes, label)`` or ``None`` while nothing is chosen."""
    source = st.radio("Image source", SOURCES, horizontal=True, key=f"{key}_source")
    if source == "Sample photo":
        name = st.selectbox("Sample", SAMPLE_NAMES, key=f"{key}_sample")
        return sample_bytes(name), f"sample: {name}"
    if source == "Upload":
        upload = st.file_uploader("Upload a photo", type=None, key=f"{key}_upload",
                                  help="JPEG, PNG, GIF, WebP, BMP or TIFF; large photos are scaled down.")
    else:
        upload = st.camera_input("Take a photo", key=f"{key}_camera")
    if upload is None:
        st.info("Choose a file or take a photo to begin." if source == "Upload" else "Take a photo to begin.")
        return None
    return upload.getvalue(), upload.name


def decoded_image(data: bytes) -> Image.Image | None:
    """Decode with a one-line ``st.error`` on failure (the session keeps working)."""
    try:
        return decode_image(data)
    except ImageDecodeError as exc:
        st.error(f"Cannot use this file: {exc}")
        return None


def show_png(image: np.ndarray, caption: str | None = None, width: int | str = "content") -> None:
    """Show a uint8 image losslessly (PNG, never JPEG)."""
    from deepvis.render import png_bytes

    st.image(png_bytes(image), caption=caption, output_format="PNG", width=width)


@st.cache_resource(show_spinner=False, max_entries=8)
def _mode_support(name: str, weights: str, seed: int, device: str) -> ModeSupport:
    loaded = shared_model(name, weights, seed, device)
    return mode_support(loaded.module, loaded.spec.input_size)


def backprop_modes(loaded: LoadedModel) -> ModeSupport:
    """Which backward modes this network allows (one dry pass per model, cached)."""
    return _mode_support(loaded.spec.name, loaded.weights, loaded.seed, str(loaded.device))
