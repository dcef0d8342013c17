"""Optimization: synthesize the image a unit "wants to see" (regularized gradient ascent, paper section 3)."""

import streamlit as st

from deepvis import charts, history, render
from deepvis import optimize as opt
from deepvis.app import forms, model, pickers, runs
from deepvis.display import npy_bytes
from deepvis.render import png_bytes
from deepvis.records import Snapshot

loaded = model.model_sidebar()
st.title("Optimization")
st.caption("Start from noise and change the image, step by step, so that one unit fires as strongly as "
           "possible; four regularizers (Table 1 of the paper) keep the result recognizable. The later "
           "parametrizations (Fourier, MACO, accentuation of a photo) are presets too.")
form = forms.optimization_form(loaded)
start = runs.start_stop(forms.OPT, ready=form.runnable)
progress, live = st.empty(), st.empty()


def draw_live(snap: Snapshot) -> None:
    progress.progress(snap.progress, text=f"iteration {snap.iteration + 1} of {snap.total}")
    with live.container():
        image_col, chart_col = st.columns([1, 2])
        image_col.image(png_bytes(runs.frame_view(snap.pixels[0], snap.mean, form.display)), output_format="PNG",
                        caption=f"iteration {snap.iteration} · objective {snap.objectives[0]:.4g}")
        chart_col.plotly_chart(charts.curves_figure(snap.record, ["objective"], norms=True))


if start:
    runs.run_live(forms.OPT, lambda: opt.optimize(loaded, form.target, form.settings, seed=form.seed,
                                                  size=form.size, photo=form.photo,
                                                  every=history.snapshot_every(form.settings.steps)),
                  draw_live, [pickers.target_name(loaded, form.target)])
    live.empty()  # the viewer below takes over


@st.fragment
def history_viewer(state: history.RunState, display: str) -> None:
    iterations = state.history.iterations
    shown = iterations[-1]
    if len(iterations) > 1:
        shown = st.select_slider("History (iteration)", iterations, value=shown, key=f"opt_history_{state.run_id}")
    frame, row = state.history.at(shown), state.record.rows[0]
    image_col, chart_col = st.columns([1, 2])
    image_col.image(png_bytes(runs.frame_view(frame.pixels[0], frame.mean, display)), output_format="PNG",
                    caption=f"iteration {shown} · objective {frame.objectives[0]:.4g}")
    with chart_col:
        st.plotly_chart(charts.curves_figure(state.record, ["objective"], marker=shown, norms=True), key="opt_chart")
        a, b, c = st.columns(3)
        a.metric("best objective", f"{row.best_objective:.4g}")
        b.metric("best at iteration", row.best_step)
        c.metric("argmax of its layer from", "never" if row.argmax_step is None else row.argmax_step,
                 help="The first iteration at which this unit was the largest of its layer (for a class: the "
                      "network's top-1 class).")


state = runs.last_run(forms.OPT)
if state is not None:
    st.subheader(state.names[0])
    if runs.wind_down(state):
        st.stop()
    runs.run_status(state)
if state is not None and state.record is not None:
    history_viewer(state, form.display)
    row = state.record.rows[0]
    runs.quality_line(runs.run_quality(state, loaded)[0], row.best_step)
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
