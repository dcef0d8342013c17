"""The layer's grid: every channel as one tile (its activation, or in pattern mode its optimized image), a click
on a tile choosing the unit, and the unit stepper.

Conventions
-----------
* The unit lives in ``st.session_state[unit_key]``; the stepper, a grid click and a
  chart click (:func:`deepvis.app.pickers.chart_click`) all set it in a callback,
  which runs before the next script run draws the unit's widgets.
* Pattern mode (the toolbox's ``s`` key) reads each channel's optimized image from
  the disk cache (:mod:`deepvis.patterns`) under the unit column's preset; the missing
  ones are optimized on request, in batches, as a background job
  (:mod:`deepvis.app.jobs`) shared by every session asking for the same layer.
"""

from __future__ import annotations

import numpy as np
import streamlit as st
from streamlit_image_coordinates import streamlit_image_coordinates

from deepvis import collection as coll
from deepvis import patterns
from deepvis.activations import ImageAnalysis
from deepvis.app import atlases, jobs
from deepvis.app.unit_column import chosen_preset
from deepvis.models import LoadedModel
from deepvis.render import SCALINGS, GridLayout, channel_grid, image_grid, png_bytes
from deepvis.targets import Target


def _step(unit_key: str, delta: int, channels: int) -> None:
    st.session_state[unit_key] = (int(st.session_state.get(unit_key, 0)) + delta) % channels


def unit_stepper(unit_key: str, channels: int, label: str = "Unit (channel)") -> int:
    """◀ / number / ▶: the unit, stepping round the layer's channels."""
    if st.session_state.get(unit_key, 0) >= channels:
        st.session_state[unit_key] = 0
    back, number, forward = st.columns([1, 3, 1], vertical_alignment="bottom")
    back.button("◀", key=f"{unit_key}_prev", on_click=_step, args=(unit_key, -1, channels), help="Previous unit",
                width="stretch")
    forward.button("▶", key=f"{unit_key}_next", on_click=_step, args=(unit_key, 1, channels), help="Next unit",
                   width="stretch")
    return int(number.number_input(label, 0, channels - 1, key=unit_key))


def clickable_grid(image: np.ndarray, layout: GridLayout, unit_key: str, key: str) -> None:
    """Show the grid; a click on a tile makes its channel the unit (in the click's callback)."""
    def chosen() -> None:
        click = st.session_state.get(key)
        if click:
            scale = image.shape[1] / max(1, click["width"])
            channel = layout.channel_at(int(click["y"] * scale), int(click["x"] * scale))
            if channel is not None:
                st.session_state[unit_key] = channel

    # Compressed: the component's default sends the PNG uncompressed (a 782-px grid: 0.6 MB, 0.1 MB compressed) on
    # every rerun, and the browser decodes it again at each step to the next unit.
    streamlit_image_coordinates(image, key=key, width="stretch", on_click=chosen, png_compression_level=1)


def pattern_grid(loaded: LoadedModel, layer: str, unit: int, key: str) -> tuple[np.ndarray, GridLayout]:
    """Each channel's optimized image under the chosen preset, from the disk cache; the missing ones are
    optimized on request, in batches, as a background job."""
    choice, settings = chosen_preset(loaded, key)
    targets = [Target(layer, c) for c in range(loaded.layer(layer).shape[0])]
    thumbs = patterns.thumbnails(loaded, targets, settings)
    if any(t is None for t in thumbs):  # an atlas made under this preset fills the rest at once
        precomputed, where = atlases.thumbnails(loaded, layer, settings)
        used = sum(t is None and p is not None for t, p in zip(thumbs, precomputed))
        thumbs = [p if t is None else t for t, p in zip(thumbs, precomputed)]
        if used:
            st.caption(f"{used} of the {len(thumbs)} images are precomputed: from {where}.")
    missing = sum(t is None for t in thumbs)
    job = jobs.shared("patterns", coll.model_key(loaded), layer, choice, settings)
    if job.running:
        jobs.show(job, "Optimizing…", "channels")
    elif missing:
        jobs.report(job, "Optimizing")
        if st.button(f"Optimize the {missing} missing patterns ({settings.steps} iterations each)", key=f"{key}_fill",
                     type="primary", help="In batches of 8 on a background worker; each batch is kept on disk as it "
                     "ends, so an interruption loses at most one batch."):
            todo = [t for t, thumb in zip(targets, thumbs) if thumb is None]
            jobs.start(job, lambda: patterns.compute(loaded, todo, settings))
            jobs.show(job, "Optimizing…", "channels")
    return image_grid(thumbs, patterns.THUMB, highlight=unit)


def layer_grid(loaded: LoadedModel, result: ImageAnalysis, layer: str, unit: int, key: str) -> None:
    """Scaling and pattern mode, the clickable grid of every channel (unit ``unit`` framed), its caption and
    a download; a click chooses ``{key}_unit``."""
    scale_col, mode_col = st.columns([3, 2], vertical_alignment="bottom")
    scaling = scale_col.radio("Scaling", SCALINGS, horizontal=True, key=f"{key}_scaling",
                              format_func={"channel": "per channel", "layer": "shared across the layer"}.get)
    patterned = mode_col.toggle("Pattern mode", key=f"{key}_patterns", disabled=not result.is_spatial,
                                help="Show each channel's optimized image (what it wants to see) instead of its "
                                     "activation, as the toolbox's `s` key does.") and result.is_spatial
    if patterned:
        grid, layout = pattern_grid(loaded, layer, unit, key)
    else:
        grid, layout = channel_grid(result.activation, scaling, numbers=False, highlight=unit)
    clickable_grid(grid, layout, f"{key}_unit", f"{key}_grid")
    channels = result.activation.shape[0]
    st.caption(f"All {channels} channels of {layer}, one tile each in channel order (row by row), showing its "
               f"{'optimized image' if patterned else 'activation'}. Click a tile to choose its unit; the framed "
               f"tile is unit {unit}.")
    st.download_button("Download the grid (PNG)", png_bytes(grid), f"{loaded.spec.name}_{layer}.png", "image/png")
