"""Where a page's photo comes from (sample, upload, camera, live video), decoding it, and showing images.

Conventions
-----------
* :func:`image_input` returns ``(bytes, label)`` or ``None`` while nothing is chosen.
  A photo the page has opened (``st.session_state[f"{key}_opened"] = (bytes, name)``:
  a frozen live frame, a point of the layer map; :func:`open_photo`) comes first, with a button to close it.
  Opened from inside a fragment, it reruns the whole page at the fragment's next run (:func:`follow_opened`).
* A file that is not a photo is one ``st.error`` line (:func:`decoded_image`); the
  session keeps working.
* Images the network sees are shown losslessly (PNG, :func:`show_png`); a small network's
  pictures (its view, backward images, optimized images) are first enlarged by a whole
  factor with no smoothing (:func:`enlarged`), so its pixels stay visible as pixels.
"""

from __future__ import annotations

import hashlib

import numpy as np
import streamlit as st
from PIL import Image

from deepvis.activations import ImageAnalysis, analyze
from deepvis.collection import model_key
from deepvis.images import SAMPLE_NAMES, ImageDecodeError, decode_image, sample_bytes
from deepvis.models import LoadedModel
from deepvis.render import png_bytes, upscale

ZOOM = 224  # the side pictures are enlarged to (at least)
SOURCES = ("Sample photo", "Upload", "Camera", "Live video")
LIVE = "Live video"


def image_input(key: str = "image", live: bool = False) -> tuple[bytes, str] | None:
    """Sample / upload / camera (/ live video with ``live``) picker; returns ``(bytes, label)`` or ``None``
    while nothing is chosen (live video: ``None``, and :func:`live_streaming` is True)."""
    sources = SOURCES if live else SOURCES[:-1]
    source = st.radio("Image source", sources, horizontal=True, key=f"{key}_source",
                      help="Live video streams your camera to the network (the paper's webcam view); Camera takes "
                           "snapshots." if live else None)
    opened = st.session_state.get(f"{key}_opened")
    if opened is not None:  # a photo put here by the page: a frozen live frame, a point of the map
        st.caption(f"Photo: {opened[1]}")
        st.button("Back to live video" if source == LIVE else "Close this photo", key=f"{key}_close",
                  on_click=lambda: st.session_state.pop(f"{key}_opened"))
        return opened
    if source == LIVE:
        return None  # the page streams it (deepvis.app.live); Freeze opens the newest frame as above
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


def open_photo(key: str, data: bytes, name: str) -> None:
    """Make ``data`` the page's photo (in a widget's callback); see :func:`follow_opened`."""
    st.session_state[f"{key}_opened"] = (data, name)
    st.session_state[f"{key}_opened_new"] = True


def follow_opened(key: str) -> None:
    """At the top of a fragment: a photo just opened by one of its widgets reruns the whole page to show it
    (a callback cannot rerun the page itself)."""
    if st.session_state.pop(f"{key}_opened_new", False):
        st.rerun(scope="app")


def live_streaming(key: str) -> bool:
    """Whether ``image_input(key, live=True)`` is on live video with no frozen frame open."""
    return st.session_state.get(f"{key}_source") == LIVE and st.session_state.get(f"{key}_opened") is None


def decoded_image(data: bytes) -> Image.Image | None:
    """Decode with a one-line ``st.error`` on failure (the session keeps working)."""
    try:
        return decode_image(data)
    except ImageDecodeError as exc:
        st.error(f"Cannot use this file: {exc}")
        return None


def analysis(loaded: LoadedModel, data: bytes, layer: str, key: str) -> ImageAnalysis | None:
    """The photo ``data`` decoded and analyzed at ``layer`` (:func:`deepvis.activations.analyze`), or ``None``
    after a one-line error.  The session's last analysis is kept under ``{key}_analysis`` and reused while the
    network, the photo and the layer stay the same, so choosing another unit runs no forward pass."""
    wanted = (model_key(loaded), hashlib.sha1(data).hexdigest(), layer)  # model_key: name, weights, tensors' hash
    kept = st.session_state.get(f"{key}_analysis")
    if kept is not None and kept[0] == wanted:
        return kept[1]
    image = decoded_image(data)
    if image is None:
        return None
    with st.spinner("Running the network…"):
        result = analyze(loaded, image, layer)
    st.session_state[f"{key}_analysis"] = (wanted, result)
    return result


def show_png(image: np.ndarray, caption: str | None = None, width: int | str = "content") -> None:
    """Show a uint8 image losslessly (PNG, never JPEG)."""
    st.image(png_bytes(image), caption=caption, output_format="PNG", width=width)


def enlarged(image: np.ndarray, size: int = ZOOM) -> np.ndarray:
    """A network-sized picture ``(h, w[, 3])`` uint8 for the page: below ``size`` px, enlarged by the whole factor
    that reaches ``size`` with no smoothing (28 px -> 224 px, 8 x 8 screen pixels per pixel); otherwise resized
    to ``size`` as before (:func:`deepvis.render.upscale`; unchanged at ``size``)."""
    side = max(image.shape[:2])
    if side >= size:
        return upscale(image, size)
    factor = -(-size // side)
    return image.repeat(factor, axis=0).repeat(factor, axis=1)
