"""Every filter of a layer, optimized together and watched live: the Optimization page's "whole layer" mode.

Conventions
-----------
* The first ``N`` channels of a layer (``Target(layer, c)``, the centre neuron, as pattern mode's grid) run
  in **one batch** under one preset, seed and size, beside the page (:func:`deepvis.app.runs.start_run`).
* While it runs, the grid of every filter's newest image redraws every
  :data:`deepvis.app.runs.IMAGE_EVERY` s.  What is kept and shown of each image is the part its centre neuron
  sees (:func:`deepvis.patterns.field_of`, as pattern mode's thumbnails: an early filter's pattern is a few
  pixels in the middle), shrunk to at most :data:`TILE` px a side (:class:`deepvis.history.FrameHistory` with
  ``box`` and ``side``), so a 32-filter run keeps about 100 frames.
* Once it has ended, a slider runs over the whole grid's history; a click on a tile opens that filter's own
  history (its slider, its image enlarged, its objective curve).
* A run that finished is kept as the layer's pattern-mode images (:func:`deepvis.patterns.keep`): pattern
  mode on the Activations page shows them without computing them again (at seed 0, the network's own size
  and a preset's θ, which is what pattern mode asks for).
* Widget keys start with :data:`KEY`.
"""

from __future__ import annotations

import streamlit as st

from deepvis import charts, history, patterns
from deepvis import optimize as opt
from deepvis.app import runs
from deepvis.app.forms import run_controls
from deepvis.app.grid import clickable_grid
from deepvis.app.pickers import layer_picker
from deepvis.history import Frame, FrameHistory, RunState
from deepvis.models import LoadedModel
from deepvis.records import RunRecord
from deepvis.render import image_grid, png_bytes, upscale
from deepvis.targets import Target

KEY = "lay"
TILE = 96  # pixels a side of each filter's image in the kept history and the grid
HISTORY_BYTES = 64 * 2**20


def _form(loaded: LoadedModel) -> tuple:
    """Layer, how many filters, preset (θ one click away), seed, size and display; Start/Stop columns."""
    left, right = st.columns([3, 2], gap="large")
    with left:
        layer = layer_picker(loaded, KEY, loaded.default_layer)
        channels = loaded.layer(layer).shape[0]
        count = st.number_input(f"Filters: the first N of {channels}", 1, channels, min(channels, 32),
                                key=f"{KEY}_count_{layer}", help="All of them run together, in one batch.")
    with right:
        settings, seed, size, display, buttons = run_controls(KEY, loaded)
    return layer, int(count), settings, seed, size, display, buttons


def _grid(frame: Frame, display: str, highlight: int | None = None) -> tuple:
    """Every filter's image as a tile, enlarged with no smoothing (an early layer's are a few pixels)."""
    return image_grid([upscale(tile, TILE, smooth=False) for tile in frame.view(display)], TILE, highlight=highlight)


def _progress_line(state: RunState) -> str:
    return (f"iteration {state.progress[1]} of {state.total} · {len(state.names)} filters of "
            f"{state.extra['layer']} in one batch")


def _live_grid(state: RunState, frame: Frame) -> tuple:
    return _grid(frame, state.extra["display"])[0], f"iteration {frame.iteration} · every filter's newest image"


def _keep_patterns(state: RunState, loaded: LoadedModel) -> None:
    """Once per finished run: every filter's best image becomes its pattern-mode entry."""
    if state.status == "finished" and not state.extra.get("kept"):
        state.extra["kept"] = patterns.keep(loaded, state.record, state.extra["settings"], state.extra["seed"],
                                            state.extra["size"])


@st.fragment
def _viewer(state: RunState, loaded: LoadedModel, display: str) -> None:
    """The ended run: a slider over the whole grid's history; a tile's own history beside it."""
    iterations = state.history.iterations
    grid_col, tile_col = st.columns([3, 2], gap="medium")
    with grid_col:
        shown = iterations[-1]
        if len(iterations) > 1:
            shown = st.select_slider("History (iteration), every filter", iterations, value=shown,
                                     key=f"{KEY}_history_{state.run_id}")
        unit_key = f"{KEY}_tile_{state.run_id}"
        unit = st.session_state.setdefault(unit_key, 0)
        grid, layout = _grid(state.history.at(shown), display, highlight=unit)
        clickable_grid(grid, layout, unit_key, f"{KEY}_grid_{state.run_id}")
        top, left, bottom, right = state.extra["box"]
        st.caption(f"Iteration {shown}: the first {len(state.names)} filters of {state.extra['layer']}, row by "
                   f"row, each showing the {bottom - top} × {right - left} px its centre neuron sees. Click a tile "
                   f"to open its history.")
        st.download_button("Download the grid (PNG)", png_bytes(grid), f"{state.extra['layer']}_{shown}.png",
                           "image/png", on_click="ignore")
    with tile_col:
        row = state.record.rows[unit]
        st.subheader(f"Filter {unit}")
        own = st.select_slider("Its history (iteration)", iterations, value=shown, key=f"{KEY}_own_{state.run_id}")
        frame = state.history.at(own)
        st.image(png_bytes(runs.frame_view(frame.pixels[unit], frame.mean, display, 384)), output_format="PNG",
                 caption=f"filter {unit} · iteration {own} · objective {frame.objectives[unit]:.4g}", width=384)
        single = RunRecord((row,), state.record.seed, state.record.size, state.record.iteration, state.record.seconds)
        st.plotly_chart(charts.curves_figure(single, [f"filter {unit}"], marker=own, height=260),
                        key=f"{KEY}_chart_{state.run_id}")


def layer_mode(loaded: LoadedModel) -> None:
    """The whole-layer mode: its form, the live grid while it runs, the viewer once it has ended."""
    layer, count, settings, seed, size, display, buttons = _form(loaded)
    targets = [Target(layer, c) for c in range(count)]

    def begin() -> RunState | None:
        box = patterns.field_of(loaded, targets[0], size)  # what the centre neuron sees: kept and shown
        return runs.start_run(
            KEY, lambda: opt.optimize(loaded, targets, settings, seed=seed, size=size,
                                      every=history.snapshot_every(settings.steps)),
            [str(c) for c in range(count)], FrameHistory(HISTORY_BYTES, side=TILE, box=box), layer=layer,
            settings=settings, seed=seed, size=size, display=display, box=box)

    runs.start_stop(KEY, ready=settings is not None, where=buttons, fold=[f"{KEY}_edit"], begin=begin)
    state = runs.last_run(KEY)
    if state is None:
        return
    state.extra["display"] = display
    if state.active:
        runs.live(state, _live_grid, _progress_line, stacked=True, width="content", lossless=True)
        return
    runs.run_status(state)
    if state.record is not None:
        _keep_patterns(state, loaded)
        if state.extra.get("kept"):
            st.caption(f"Kept as the pattern-mode images of {state.extra['layer']} (Activations page, pattern mode, "
                       "with this preset" + (", seed 0 and the network's own size)." if state.extra["seed"] == 0 and
                                             state.extra["size"] == loaded.spec.input_size else
                                             "; pattern mode shows seed 0 at the network's own size)."))
        _viewer(state, loaded, display)
