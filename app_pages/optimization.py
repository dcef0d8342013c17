"""Optimization: synthesize the image a unit "wants to see" (regularized gradient ascent, paper section 3)."""

import streamlit as st

from deepvis import charts, history, render
from deepvis import optimize as opt
from deepvis.app import forms, layer_run, model, pickers, runs
from deepvis.display import npy_bytes
from deepvis.history import Frame, RunState
from deepvis.render import png_bytes

loaded = model.model_sidebar()
title, what = st.columns([2, 3], vertical_alignment="bottom")
title.title("Optimization", help="Start from noise and change the image, step by step, so that one unit fires as "
            "strongly as possible; four regularizers (Table 1 of the paper) keep the result recognizable. The later "
            "parametrizations (Fourier, MACO, accentuation of a photo) are presets too.")
mode = what.segmented_control("Optimize", ["one unit", "every filter of a layer", "a photo's representation"],
                              default="one unit", key="opt_what", label_visibility="collapsed",
                              help="A photo's representation: the image whose activations at a layer match the "
                                   "photo's (inversion, Mahendran & Vedaldi 2015): what the layer keeps of it.")
if mode == "every filter of a layer":
    layer_run.layer_mode(loaded)
    st.stop()
key = forms.INV if mode == "a photo's representation" else forms.OPT
form, buttons = forms.inversion_form(loaded) if key == forms.INV else forms.optimization_form(loaded)
runs.start_stop(key, ready=form.runnable, where=buttons, fold=[f"{key}_edit"], begin=lambda: runs.start_run(
    key, lambda: opt.optimize(loaded, list(form.targets), form.settings, seed=form.seed, size=form.size,
                              photo=form.photo, every=history.snapshot_every(form.settings.steps)),
    [pickers.target_name(loaded, form.target)], scored=loaded if key == forms.OPT else None))
state = runs.last_run(key)


def picture(state: RunState, frame: Frame, enlarge: bool = True) -> tuple:
    """The image(s) of ``frame`` at :data:`runs.LIVE_SIZE` px (a diverse batch as a grid) and their caption; one
    image at its own size unless ``enlarge`` (the running view leaves enlarging to the browser)."""
    n = len(frame.pixels)
    tile = runs.LIVE_SIZE // min(n, 2) if enlarge or n > 1 else 0
    pictures = [runs.frame_view(p, frame.mean, form.display, tile) for p in frame.pixels]
    values = " · ".join(f"{v:.4g}" for v in frame.objectives)
    shown = pictures[0] if n == 1 else render.image_grid(pictures, tile)[0]
    return shown, f"iteration {frame.iteration} · objective{'s' if n > 1 else ''} {values}"


def draw_image(state: RunState, frame: Frame) -> None:
    shown, caption = picture(state, frame)
    st.image(png_bytes(shown), output_format="PNG", width=runs.LIVE_SIZE, caption=caption)


def progress_line(state: RunState) -> str:
    return f"iteration {state.progress[1]} of {state.total} · {state.names[0]}"


def draw_chart(state: RunState, marker: int | None = None) -> None:
    """The finished run's interactive chart (a running run draws a light picture of it)."""
    st.plotly_chart(charts.curves_figure(state.record, ["objective"], marker=marker, norms=True), key=f"{key}_chart")


@st.fragment
def history_viewer(state: RunState) -> None:
    """The finished (or stopped) run: its image at any iteration of the history, the curves marked there."""
    picture, chart = runs.picture_columns()
    iterations = state.history.iterations
    with chart:
        st.subheader(state.names[0])
        runs.run_status(state)
        shown = iterations[-1]
        if len(iterations) > 1:
            shown = st.select_slider("History (iteration)", iterations, value=shown, key=f"{key}_history_{state.run_id}")
        draw_chart(state, marker=shown)
        row = state.record.rows[0]
        a, b, c = st.columns(3)
        a.metric("best objective", f"{row.best_objective:.4g}")
        b.metric("best at iteration", row.best_step)
        if key != forms.INV:  # an inversion has no unit of its own
            c.metric("argmax of its layer from", "never" if row.argmax_step is None else row.argmax_step,
                     help="The first iteration at which this unit was the largest of its layer (for a class: the "
                          "network's top-1 class).")
    with picture:
        if key == forms.INV:  # the photo beside what was recovered from its representation
            runs.inversion_pair(loaded, state.record, form.display)
        draw_image(state, state.history.at(shown))
        if key != forms.INV:
            runs.quality_line(runs.run_quality(state, loaded)[0], row.best_step)
        if len(state.record.rows) > 1:
            st.caption(runs.diversity_line(loaded, state.record))


if state is not None and state.active:
    runs.live(state, lambda state, frame: picture(state, frame, enlarge=False), progress_line,
              lambda state: png_bytes(charts.curves_picture(state.record, ["objective"])))
elif state is not None and state.record is None:
    runs.run_status(state)
if state is not None and not state.active and state.record is not None:
    history_viewer(state)
    row = state.record.rows[0]
    name = f"{row.target.layer}_{row.target.unit}"
    final, best = (png_bytes(runs.frame_view(x, row.mean, form.display, 0)) for x in (row.last_x, row.best_x))
    a, b, c, d = st.columns(4)
    a.download_button("Final image (PNG)", final, f"{name}_final.png", "image/png", on_click="ignore")
    b.download_button("Best image (PNG)", best, f"{name}_best.png", "image/png", on_click="ignore")
    c.download_button("Best image (float .npy)", npy_bytes(row.best_x), f"{name}_best.npy", "application/octet-stream",
                      on_click="ignore", help="x in the optimizer's pixel space: 0–255 units with the model's mean "
                      f"{tuple(round(v, 1) for v in row.mean)} subtracted; {row.best_x.shape} float32.")
    d.download_button("History (animated GIF)", lambda: render.gif_bytes(
        [runs.frame_view(f.pixels[0], f.mean, form.display, 0) for f in state.history.frames]), f"{name}.gif",
        "image/gif", on_click="ignore")
