"""Streamlit widgets shared by the pages: the model, the photo, layers and units.

One of the two modules that touch Streamlit (the other is :mod:`deepvis.ui_runs`,
the optimization pages' forms and live runs).

Conventions
-----------
* ``shared_model`` is cached with ``st.cache_resource``: one frozen model per
  (name, weights, seed, device), shared by every session.  Nothing here or in
  the pages may modify it (see :mod:`deepvis.graph`).
* Widget groups return plain Python values or small typed objects (bytes, a
  ``LoadedModel``, a layer name, an ``Target``), so the pages stay thin and
  never read ``st.session_state`` keys themselves; every failure a person can
  cause becomes one ``st.error`` line, never a traceback.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import streamlit as st
from PIL import Image

from deepvis.backprop import ModeSupport, mode_support
from deepvis.layers import groups
from deepvis.images import SAMPLE_NAMES, ImageDecodeError, decode_image, sample_bytes
from deepvis.models import DEFAULT_MODEL, REGISTRY, LoadedModel, ModelError, default_device, load_model
from deepvis.targets import OBJECTIVES, Target, class_names, resolve_unit

SOURCES = ("Sample photo", "Upload", "Camera", "Live video")
LIVE = "Live video"


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
        if loaded.notice:
            st.info(loaded.notice)
    return loaded


def image_input(key: str = "image", live: bool = False) -> tuple[bytes, str] | None:
    """Sample / upload / camera (/ live video with ``live``) picker; returns ``(bytes, label)`` or ``None``
    while nothing is chosen (live video: ``None``, and :func:`live_streaming` is True).  A photo the page has
    opened (``st.session_state[f"{key}_opened"] = (bytes, name)``) comes first, with a button to close it."""
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
        return None  # the page streams it (deepvis.ui_live); Freeze opens the newest frame as above
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


# --- Optimization and Comparison pages (issues 3 and 4) ------------------------------------------------------
# Keys: every widget group takes a ``key`` prefix and keeps its values in st.session_state under
# ``{key}_...`` so that a saved experiment can be put back into the widgets (see ``apply_experiment``).

def _init(key: str, value: object) -> None:
    if key not in st.session_state:
        st.session_state[key] = value


def layer_key(loaded: LoadedModel, key: str) -> str:
    return f"{key}_layer_{loaded.spec.name}"


def _group_chosen(loaded: LoadedModel, key: str) -> None:
    """A new block was chosen: show its last rectified layer (else its last layer)."""
    members = groups(loaded.layers)[st.session_state[f"{key}_group_{loaded.spec.name}"]]
    st.session_state[layer_key(loaded, key)] = next(
        (i.name for i in reversed(members) if i.rectified and i.is_spatial and i.shape[1] > 1), members[-1].name)


def layer_picker(loaded: LoadedModel, key: str, default: str, side_by_side: bool = True) -> str:
    """Block/stage, then a layer of it (both searchable by typing); returns the layer's node name.

    Each layer reads ``_swish_1 — ReLU6 after depthwise conv 5×5 → batch norm · 672 × 14 × 14`` and its full
    node name is shown under the pickers.  A stored module path (``_blocks.9``) becomes its output node.
    ``side_by_side=False`` stacks the two pickers (for a narrow column).
    """
    widget_key, group_key = layer_key(loaded, key), f"{key}_group_{loaded.spec.name}"
    by_group = groups(loaded.layers)
    try:
        current = loaded.layer(st.session_state.get(widget_key, default))
    except ValueError:
        current = loaded.layer(default)
    st.session_state[widget_key] = current.name
    st.session_state[group_key] = current.group
    left, right = st.columns([1, 2]) if side_by_side else (st.container(), st.container())
    left.selectbox("Block", list(by_group), key=group_key, on_change=_group_chosen, args=(loaded, key),
                   format_func=lambda g: f"{g} · {len(by_group[g])} layers",
                   help="Blocks and stages in the order the network computes them.")
    members = {info.name: info for info in by_group[st.session_state[group_key]]}
    name = right.selectbox("Layer (type to search)", list(members), key=widget_key,
                           format_func=lambda n: f"{members[n].short_name} — {members[n].description}",
                           help="Every operation of the traced forward graph. Rectified layers (after a "
                                "ReLU/ReLU6) show the sparse maps of the paper's live view.")
    st.caption(f"Layer `{name}` · {members[name].description}")
    return name


def _unit_format(loaded: LoadedModel, layer: str) -> Callable[[int], str]:
    classes = class_names(loaded, layer)
    return (lambda i: f"{i} · {classes[i]}") if classes else str


def _default_unit(loaded: LoadedModel, layer: str) -> int:
    classes = class_names(loaded, layer)
    try:
        return resolve_unit(loaded, layer, "flamingo") if classes else 0
    except ValueError:
        return 0


def _objective_picker(loaded: LoadedModel, key: str, layer: str) -> str:
    if not loaded.layer(layer).is_spatial:
        return "neuron"
    _init(f"{key}_objective", "neuron")
    return st.radio("Objective (maximized)", OBJECTIVES, key=f"{key}_objective", horizontal=True,
                    format_func={"neuron": "one neuron (centre)", "channel": "channel mean"}.get,
                    help="One activation at the centre of the channel's map, or the mean of the whole map.")


def target_picker(loaded: LoadedModel, key: str) -> Target:
    """Layer + unit (a class by name on the logits layer) + objective -> one ``Target``."""
    layer = layer_picker(loaded, key, loaded.logits_layer, side_by_side=False)
    info = loaded.layer(layer)
    if class_names(loaded, layer):
        if st.session_state.get(f"{key}_class") not in range(info.channels):
            st.session_state[f"{key}_class"] = _default_unit(loaded, layer)
        unit = st.selectbox("Class (type to search)", range(info.channels), key=f"{key}_class",
                            format_func=_unit_format(loaded, layer))
    else:
        if st.session_state.get(f"{key}_unit") not in range(info.channels):
            st.session_state[f"{key}_unit"] = 0
        noun = "Channel" if info.is_spatial else "Unit"
        unit = st.number_input(f"{noun} (0 – {info.channels - 1})", 0, info.channels - 1, key=f"{key}_unit")
    return Target(layer, int(unit), _objective_picker(loaded, key, layer))


def target_name(loaded: LoadedModel, target: Target) -> str:
    """``flamingo (class 130 of _fc)`` or ``_blocks.5 channel 12 · centre neuron`` (titles, sheet rows)."""
    classes = class_names(loaded, target.layer) if target.layer in {i.name for i in loaded.layers} else None
    if classes:
        return f"{classes[target.unit]} (class {target.unit} of {target.layer})"
    if len(loaded.layer(target.layer).shape) == 1:
        return f"{target.layer} unit {target.unit}"
    return f"{target.layer} channel {target.unit} · {'centre neuron' if target.objective == 'neuron' else 'mean'}"


def units_picker(loaded: LoadedModel, key: str) -> list[Target]:
    """Layer + several units (classes on the logits layer) -> one ``Target`` per unit (sheet rows)."""
    layer = layer_picker(loaded, key, loaded.logits_layer, side_by_side=False)
    info = loaded.layer(layer)
    chosen = [u for u in st.session_state.get(f"{key}_units", []) if u in range(info.channels)][:8]
    if not chosen:
        classes = class_names(loaded, layer)
        chosen = ([resolve_unit(loaded, layer, n) for n in ("flamingo", "strawberry", "goldfish") if n in classes]
                  if classes else []) or list(range(min(3, info.channels)))
    st.session_state[f"{key}_units"] = chosen
    units = st.multiselect("Units (rows of the sheet)", range(info.channels), key=f"{key}_units",
                           format_func=_unit_format(loaded, layer), max_selections=8)
    objective = _objective_picker(loaded, key, layer)
    return [Target(layer, int(u), objective) for u in units]


def chart_click(unit_key: str, chart_key: str) -> None:
    """A click on a bar of the chart drawn with ``chart_key`` makes that bar's channel the unit (a new click
    only, not the one the chart still stores)."""
    click_key = f"{unit_key}_last_click"
    chart = st.session_state.get(chart_key)
    if chart and chart.selection.points:
        clicked = int(chart.selection.points[0]["x"])
        if clicked != st.session_state.get(click_key):
            st.session_state[click_key] = st.session_state[unit_key] = clicked
