"""The Activations page's panels about one unit and the shown photo: its backward image, the layer's Grad-CAM,
its weights, the photo's occlusion map, and the first layer's filters.

Conventions
-----------
* Each panel takes the model, the photo as the network sees it (``view``, uint8
  ``(H, W, 3)``), the layer and unit, and a ``key`` prefix for its widgets.
* Pictures are enlarged to 224 px (a small network's by a whole factor, with no
  smoothing: :func:`deepvis.app.inputs.enlarged`) and sent as PNG; downloads are the
  pictures at the network's resolution (or the float map, ``.npy``).
* A backward pass or occlusion the network cannot do is one ``st.error`` line
  (``DeepvisError``); the occlusion map is computed on request under a progress bar and
  kept for the photo, patch, stride and target.
"""

from __future__ import annotations

import hashlib

import numpy as np
import streamlit as st

from deepvis.app.inputs import enlarged, show_png
from deepvis.app.jobs import with_bar
from deepvis.app.model import backprop_modes, shared_model
from deepvis.backprop import SEEDS, backward
from deepvis.display import npy_bytes
from deepvis.errors import DeepvisError
from deepvis.gradcam import METHOD_NAMES, gradcam, picture
from deepvis.models import LoadedModel
from deepvis.occlusion import default_window, occlude, patch_choices
from deepvis.render import (BACKPROP_FILTERS, backprop_image, backprop_overlay, heat_colors, overlay, png_bytes,
                            to_uint8, upscale, weight_tiles)
from deepvis.weights import conv_weights, filter_tiles, kernel_norms


def backprop_panel(loaded: LoadedModel, view: np.ndarray, layer: str, unit: int, key: str) -> None:
    """Which pixels of the photo drive the unit: the mode (saliency, deconvnet, guided backprop, as the network
    allows), the seed and the filter chosen here; the backward image, it over the photo, and a download."""
    support = backprop_modes(loaded)
    if support.reason:
        st.info(support.reason)
    mode = st.radio("Backward pass", support.modes, horizontal=True, key=f"{key}_bp_mode",
                    help="saliency: the plain gradient · deconv: only positive gradients pass each ReLU · "
                         "guided: positive gradients where the ReLU was active")
    seed = st.radio("Start from", SEEDS, horizontal=True, key=f"{key}_bp_seed",
                    format_func={"map": "the unit's activation map", "point": "its strongest position"}.get)
    shown = st.radio("Filter", BACKPROP_FILTERS, index=BACKPROP_FILTERS.index("norm_blur"), horizontal=True,
                     key=f"{key}_bp_filter", help="raw: the gradient itself (often faint) · gray · norm: per-pixel "
                     "strength · norm_blur: that strength, blurred (what the paper's toolbox shows)")
    try:
        with st.spinner("Backward pass…"):
            gradient = backward(loaded, view, layer, unit, mode, seed)
    except DeepvisError as exc:
        st.error(str(exc))
        return
    picture, blend = st.columns(2)
    picture.image(png_bytes(enlarged(backprop_image(gradient, shown))), caption=f"{mode}, {shown} filter",
                  output_format="PNG", width="stretch")
    with blend:
        show_png(enlarged(backprop_overlay(view, gradient)), caption="Overlaid on the input", width="stretch")
    st.download_button("Download the backward image (PNG)", png_bytes(backprop_image(gradient, shown)),
                       f"{loaded.spec.name}_{layer}_{unit}_{mode}.png", "image/png")


def gradcam_panel(loaded: LoadedModel, view: np.ndarray, layer: str, predictions: list, key: str) -> None:
    """Where this layer's maps hold the evidence for a class (:mod:`deepvis.gradcam`): the method and one of the
    photo's top classes chosen here; the map over the photo (or the Guided Grad-CAM image), the map at the
    layer's own resolution, and a download."""
    if not loaded.layer(layer).is_spatial:
        st.caption(f"Grad-CAM needs a layer with spatial maps; {layer} is a vector. Choose a convolutional layer.")
        return
    method = st.radio("Method", tuple(METHOD_NAMES), horizontal=True, key=f"{key}_cam_method",
                      format_func=METHOD_NAMES.get, help="Grad-CAM: the maps weighted by their mean gradient · "
                      "Grad-CAM++: by their positive gradients, pixel-weighted · Guided Grad-CAM: guided backprop "
                      "times the Grad-CAM map")
    labels = {p.index: f"{p.label} ({100 * p.prob:.1f} %)" for p in predictions}
    if st.session_state.get(f"{key}_cam_class") not in labels:  # first visit, or another photo's classes
        st.session_state[f"{key}_cam_class"] = predictions[0].index
    chosen = st.selectbox("Class", list(labels), format_func=labels.get, key=f"{key}_cam_class",
                          help="One of the photo's five most probable classes (the top one by default).")
    try:
        with st.spinner("Grad-CAM…"):
            cam = _gradcam(loaded.spec.name, loaded.weights, loaded.seed, str(loaded.device), view, layer, chosen,
                           method)
    except DeepvisError as exc:
        st.error(str(exc))
        return
    shown, coarse = st.columns(2)
    caption = "Guided Grad-CAM (grey = 0)" if cam.guided is not None else "Over the input"
    shown.image(png_bytes(enlarged(picture(cam, view))), caption=caption, output_format="PNG", width="stretch")
    height, width = cam.map.shape
    coarse.image(png_bytes(upscale(heat_colors(to_uint8(cam.map)), 224, smooth=False)), output_format="PNG",
                 caption=f"The map at the layer's {height} × {width} (bright = most evidence)", width="stretch")
    st.download_button("Download the map (float .npy)", npy_bytes(cam.map), f"gradcam_{layer}_{cam.unit}.npy",
                       "application/octet-stream", on_click="ignore", key=f"{key}_cam_npy")


@st.cache_data(show_spinner=False, max_entries=16)
def _gradcam(name: str, weights: str, seed: int, device: str, view: np.ndarray, layer: str, chosen: int,
             method: str):
    """The panel's map, once per (model, photo, layer, class, method): it does not change with the unit, and the
    page runs again at every step to the next unit."""
    return gradcam(shared_model(name, weights, seed, device), view, layer, chosen, method)


def weights_panel(loaded: LoadedModel, layer: str, unit: int) -> None:
    """The raw weights behind ``unit`` (:mod:`deepvis.weights`): its filter's kernels, and their norms."""
    found = conv_weights(loaded, layer)
    if found is None or unit >= found.weight.shape[0]:
        st.caption(f"{layer} has no single convolution above it (an addition, a pooling or a linear layer).")
        return
    tiles, _ = filter_tiles(found, unit)
    shape = " × ".join(map(str, found.weight.shape[1:]))
    kind = "depthwise: one kernel" if found.depthwise else f"{found.weight.shape[1]} kernels, one per input channel"
    st.image(png_bytes(upscale(tiles, 224, smooth=False)), output_format="PNG", width="stretch",
             caption=f"Filter {unit} of {found.conv} ({shape}; {kind}), scaled about zero: grey = 0")
    if not found.depthwise and found.weight.shape[1] > 1:
        st.bar_chart(kernel_norms(found)[unit], height=140, x_label="input channel", y_label="kernel norm")


def first_layer_title(loaded: LoadedModel) -> str:
    """The expander title of :func:`first_layer_filters`: RGB tiles, or gray ones for a grayscale network."""
    return f"First-layer filters as {'RGB' if loaded.spec.channels == 3 else 'gray'} tiles"


def first_layer_filters(loaded: LoadedModel) -> None:
    """The first convolution's filters as RGB tiles (gray for a grayscale network; the paper's conv1 picture)."""
    try:
        weight = loaded.first_conv.weight
    except DeepvisError as exc:  # no convolution on the input: nothing to draw
        st.caption(str(exc))
        return
    tiles, _ = weight_tiles(weight)
    show_png(tiles, caption=f"{tuple(weight.shape)} weights, each scaled about zero")


def occlusion_panel(loaded: LoadedModel, view: np.ndarray, layer: str, unit: int, key: str) -> None:
    """Zeiler & Fergus's occlusion map of the shown photo (:mod:`deepvis.occlusion`): patch, stride and target
    chosen here, computed on request with a progress bar, kept for the photo, drawn over it."""
    pick_patch, pick_stride, pick_target = st.columns(3)
    side = view.shape[0]
    default_patch, default_stride = default_window(side)
    patches = tuple(patch_choices(side))
    strides = tuple(sorted({max(1, default_stride // 2), default_stride, default_patch}))
    for name, options, default in (("patch", patches, default_patch), ("stride", strides, default_stride)):
        if st.session_state.get(f"{key}_occ_{name}") not in options:  # first visit, or another network's size
            st.session_state[f"{key}_occ_{name}"] = default
    patch = pick_patch.select_slider("Patch (px)", patches, key=f"{key}_occ_patch")
    stride = pick_stride.select_slider("Stride (px)", strides, key=f"{key}_occ_stride")
    target = pick_target.radio("Target", ("top class", f"unit {unit}"), key=f"{key}_occ_target",
                               help="How much covering each part lowers the top class's probability, or this "
                                    "unit's activation summed over its map.")
    aim = (layer, unit) if target != "top class" else (None, None)
    wanted = (hashlib.sha1(view.tobytes()).hexdigest(), loaded.spec.name, loaded.weights, patch, stride, *aim)
    kept = st.session_state.get(f"{key}_occ_result")
    if kept is None or kept[0] != wanted:
        if not st.button("Compute the occlusion map", key=f"{key}_occ_go"):
            st.caption("A grey square (the model's mean colour) slides over the photo; the map shows how much the "
                       "target drops where it covers." + (" About 1.5 s at patch 32, stride 16 on a 2-core CPU for "
                                                          "the embedded network." if side >= 224 else ""))
            return
        try:
            kept = (wanted, with_bar(occlude(loaded, view, patch, stride, *aim), "Occluding…", "squares"))
        except DeepvisError as exc:
            st.error(str(exc))
            return
        st.session_state[f"{key}_occ_result"] = kept
    result = kept[1]
    drops = np.clip(result.drops, 0, None)
    heat, blend = st.columns(2)
    heat.image(png_bytes(upscale(heat_colors(to_uint8(drops)), 224)), caption="Drop (bright = covering hurts most)",
               output_format="PNG", width="stretch")
    blend.image(png_bytes(upscale(overlay(enlarged(view), drops), 224)), caption="Overlaid on the input",
                output_format="PNG", width="stretch")
    st.caption(f"{result.target}: {result.baseline:.4g} on the whole photo; the largest mean drop is "
               f"{result.drops.max():.4g} ({result.windows} squares).")
    st.download_button("Download the map (float .npy)", npy_bytes(result.drops), f"occlusion_{patch}_{stride}.npy",
                       "application/octet-stream", on_click="ignore", key=f"{key}_occ_npy")
