"""What the Training page draws of a run at a step: the layer's grid, a filter's history, the diagnoses, the
chart, the first layer and a probe image's activations (state and caches: :mod:`deepvis.app.training`).

Conventions
-----------
* The grid shows every filter's optimized image at the step (:mod:`deepvis.timeline`'s
  64 px tiles, enlarged to about :data:`GRID_PX` across; the chosen one framed in red); a
  click on a tile chooses the filter (``train_unit``), as on the Activations page
  (:func:`deepvis.app.grid.clickable_grid`).
* A filter's history has its own slider (``train_hist_step``, which follows the step slider
  until moved): the tile at that step, enlarged, and a strip of it over the steps (at
  most :data:`STRIP` of them, evenly spaced, the shown one framed in red).
* Downloads are made when clicked: the filter's history as an animated GIF, the layer's
  filters × steps sheet as a PNG (:func:`deepvis.timeline.sheet`).
* Diagnoses in words with their numbers: dead units and noisy filters as warnings,
  smooth filters as information.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from deepvis import timeline as tl
from deepvis.app import grid
from deepvis.app import training as tr
from deepvis.app import training_data as data
from deepvis.app.inputs import show_png
from deepvis.app.training_charts import health_layers, mark, timeline_figure
from deepvis.render import channel_grid, compose_sheet, gif_bytes, image_grid, png_bytes, upscale

GRID_PX = 720  # about how wide the layer's grid is drawn
BIG = 256  # px of the chosen filter's tile
STRIP = 12  # at most this many steps in a filter's strip
MARK = np.array([230, 40, 40], np.uint8)  # the frame of the shown step in the strip


def _grid_tile(channels: int) -> int:
    cols = math.ceil(math.sqrt(channels))
    return int(min(3 * tl.TILE, max(tl.TILE, GRID_PX // cols - 2)))


def layer_grid(shown: tr.Shown, step: int, unit: int, key: str) -> None:
    """Every filter's optimized image at ``step``, clickable (a click chooses ``train_unit``)."""
    layer = shown.pictures.layer
    channels = shown.ref.layer(layer).channels
    found = data.tiles_at(shown, step)
    images = [found.tiles[c] if found is not None and c < len(found.tiles) else None for c in range(channels)]
    image, layout = image_grid(images, _grid_tile(channels), highlight=unit)
    if unit < channels:
        _mark(image, *layout.origin(unit), layout.tile)
    grid.clickable_grid(image, layout, "train_unit", key)
    state = "" if found is not None else " — not computed yet (dark tiles)"
    st.caption(f"{shown.name} at step {step}: all {channels} filters of `{layer}`, each one's optimized image "
               f"({shown.pictures.preset}, seed {shown.pictures.seed}){state}. Click a tile for its history; "
               f"the framed one is filter {unit}.")


def _mark(image: np.ndarray, y: int, x: int, side: int, width: int = 3) -> None:
    """Frame the square at ``(y, x)`` in red, inside its edge (a white frame vanishes on white tiles)."""
    box = image[y:y + side, x:x + side]
    box[:width], box[-width:], box[:, :width], box[:, -width:] = MARK, MARK, MARK, MARK


def _strip(history: list[tuple[int, np.ndarray | None, float | None]], shown_step: int) -> np.ndarray:
    indices = list(range(len(history)))
    if len(indices) > STRIP:
        chosen = next(i for i, (s, _, _) in enumerate(history) if s == shown_step)
        indices = sorted({round(i * (len(history) - 1) / (STRIP - 1)) for i in range(STRIP)} | {chosen})
    images = []
    for i in indices:
        step, tile, _ = history[i]
        image = np.full((tl.TILE, tl.TILE, 3), 235, np.uint8) if tile is None else tile.copy()
        if step == shown_step:
            _mark(image, 0, 0, tl.TILE)
        images.append(image)
    return compose_sheet(np.stack(images), 1, len(images), col_labels=[f"step {history[i][0]}" for i in indices])


def history(shown: tr.Shown, unit: int, key: str) -> None:
    """The filter's optimized image at every step: its own slider, the tile enlarged, the strip, downloads."""
    found = data.unit_history(shown, unit)
    steps = [s for s, _, _ in found]
    hist_key = f"{key}_hist_step"
    if st.session_state.get(hist_key) not in steps:
        st.session_state[hist_key] = st.session_state.get("train_step", steps[-1]) \
            if st.session_state.get("train_step") in steps else steps[-1]
    at = st.select_slider("Its history (step)", steps, key=hist_key) if len(steps) > 1 else steps[0]
    step, tile, objective = found[steps.index(at)]
    layer = shown.pictures.layer
    if tile is None:
        st.caption(f"Filter {unit}'s optimized image at step {step} is not computed yet.")
    else:
        show_png(upscale(tile, BIG, smooth=False), caption=f"{layer} filter {unit} at step {step} · objective "
                 f"{objective:.4g}")
    show_png(_strip(found, at))
    computed = [t for _, t, _ in found if t is not None]
    gif, sheet = st.columns(2)
    gif.download_button("History (animated GIF)", lambda: gif_bytes([upscale(t, 192, smooth=False) for t in computed],
                        duration_ms=400), f"{shown.name}_{layer}_{unit}.gif", "image/gif", on_click="ignore",
                        disabled=not computed, key=f"{key}_gif", width="stretch")
    sheet.download_button("Layer over steps (PNG)", lambda: png_bytes(tl.sheet(shown.view, shown.pictures, shown.ref)),
                          f"{shown.name}_{layer}_steps.png", "image/png", on_click="ignore", key=f"{key}_sheet",
                          width="stretch", help="Every filter (rows) at every step (columns).")


def diagnoses(shown: tr.Shown, step: int) -> None:
    """What the measures up to ``step`` say, in words, each with its numbers."""
    found = data.diagnoses(shown, step)
    if not found and tl.read_measures(shown.view, step) is None:
        st.caption(f"{shown.name}: the diagnoses appear once step {step}'s measures are computed.")
    for d in found:
        text = f"{d.text}.  \n*Evidence ({d.layer}):* {data.evidence_text(d.evidence)}"
        if d.kind in ("dead", "noisy"):
            st.warning(text, icon=":material/warning:")
        else:
            st.info(text, icon=":material/check_circle:")


@dataclass
class _Chart:
    figure: go.Figure
    lock: threading.Lock


@st.cache_resource(show_spinner=False, max_entries=16)
def _chart(_summaries: list[tuple[str, dict]], signature: tuple, layers: tuple[str, ...]) -> _Chart:
    return _Chart(timeline_figure(_summaries, _summaries[0][1]["steps"][0], layers), threading.Lock())


def chart(runs: list[tr.Shown], step: int, layer: str) -> None:
    """The runs' scalars and measures over all steps, the step marked (the figure is built once per set of
    measures and shared; only its marker moves, under a lock)."""
    summaries = [(s.name, data.summary(s)) for s in runs]
    measured = list(dict.fromkeys(n for _, found in summaries for n in found["layers"]))
    layers = tuple(health_layers(runs[0].ref, measured, layer))
    signature = tuple((name, json.dumps(found, sort_keys=True)) for name, found in summaries)
    shared = _chart(summaries, signature, layers)
    with shared.lock:  # the figure is shared by every session: move the marker and send it in one go
        mark(shared.figure, step)
        st.plotly_chart(shared.figure, key="train_chart")
    if not measured:
        st.caption("Dead units, sparsity and weight noise appear as the measures are computed.")


def first_layer(shown: tr.Shown, step: int) -> None:
    image = data.first_filters(shown, step)
    if image is not None:
        show_png(upscale(image, 300, smooth=False) if max(image.shape[:2]) < 300 else image,
                 caption=f"{shown.name}'s first convolution at step {step}, each filter scaled about zero")


def probe(shown: tr.Shown, step: int, layer: str, unit: int) -> None:
    """A probe image (chosen) through the network at ``step``: the image, its predictions, the layer's channels."""
    count = data.probe_count(shown)
    index = int(st.selectbox("Probe image", range(count), key="train_probe",
                             format_func=lambda i: f"image {i} of {count}",
                             help="The run's fixed probe batch (or the bundled photos), as the network sees it."))
    found = data.probe_view(shown, step, layer, index)
    image_col, grid_col = st.columns([1, 2])
    guess = " · ".join(f"{label} {prob:.0%}" for label, prob in found.predictions)
    with image_col:
        show_png(upscale(found.image, 200, smooth=False) if max(found.image.shape[:2]) < 200 else found.image,
                 caption=f"predicted: {guess}")
    with grid_col:
        image, _ = channel_grid(found.activation, "channel", highlight=unit if unit < len(found.activation) else None)
        show_png(upscale(image, 400, smooth=False) if max(image.shape[:2]) < 400 else image,
                 caption=f"`{layer}` activations at step {step}, one tile per channel (each scaled to its own "
                         f"range); the framed one is filter {unit}")
