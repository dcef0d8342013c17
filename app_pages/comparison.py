"""Comparison: one unit under 2-6 regularizer settings side by side, or units x settings as one sheet."""

import streamlit as st

from deepvis import charts, history
from deepvis import optimize as opt
from deepvis.app import forms, inputs, model, pickers, runs
from deepvis.render import png_bytes
from deepvis.records import Snapshot

loaded = model.model_sidebar()
st.title("Comparison")
st.caption("The same unit, the same starting noise, different regularization or parametrization: columns of "
           "one parametrization run together in one batch, so the settings are the only difference.")

form = forms.comparison_form(loaded, st.expander("Save or load a comparison"))
names, targets, mode, display = form.names, form.targets, form.mode, form.display
start = runs.start_stop(forms.CMP, ready=form.experiment is not None)
progress, live = st.empty(), st.empty()


def draw_live(snap: Snapshot) -> None:
    progress.progress(snap.progress, text=f"iteration {snap.iteration + 1} of {snap.total} · {len(names)} settings"
                      + (f" × {len(targets)} units" if mode == "sheet" else "") + form.batching)
    with live.container():
        if mode == "sheet":
            rows = [pickers.target_name(loaded, t) for t in targets]
            inputs.show_png(runs.sheet_image(snap.pixels, snap.mean, rows, names, display))
            return
        pixels = snap.pixels  # (B, H, W, C), stacked once per snapshot
        for j, column in enumerate(st.columns(len(names))):
            column.image(png_bytes(runs.frame_view(pixels[j], snap.mean, display)), output_format="PNG",
                         width="stretch",
                         caption=f"{names[j][0]} · objective {snap.objectives[j]:.4g}")
        st.plotly_chart(charts.curves_figure(snap.record, names))


if start:
    experiment = form.experiment
    runs.run_live(forms.CMP, lambda: opt.optimize(
        loaded, *experiment.rows(), seed=form.seed, size=form.size, photo=form.photo,
        every=history.snapshot_every(max(s.steps for s in experiment.settings))),
        draw_live, names, history.FrameHistory(max_frames=2) if mode == "sheet" else None, experiment,
        mode=mode, rows=[pickers.target_name(loaded, t) for t in targets])
    live.empty()


@st.fragment
def history_viewer(state: history.RunState, display: str, verdicts: list) -> None:
    iterations = state.history.iterations
    shown = iterations[-1]
    if len(iterations) > 1:
        shown = st.select_slider("History (iteration), all columns", iterations, value=shown,
                                 key=f"cmp_history_{state.run_id}")
    frame = state.history.at(shown)
    pixels = frame.pixels
    for j, column in enumerate(st.columns(len(state.names))):
        with column:
            forms.color_header(j, state.names[j], state.experiment.settings[j].label)
            done = f" · finished after {frame.steps[j] + 1}" if frame.finished[j] else ""
            st.image(png_bytes(runs.frame_view(pixels[j], frame.mean, display)), output_format="PNG",
                     width="stretch", caption=f"iteration {frame.steps[j]} · objective {frame.objectives[j]:.4g}{done}")
            runs.quality_line(verdicts[j], state.record.rows[j].best_step)
    st.plotly_chart(charts.curves_figure(state.record, state.names, marker=shown), key="cmp_chart")


state = runs.last_run(forms.CMP)
if state is not None:
    st.subheader(state.extra["rows"][0] if state.extra["mode"] == "side" else "Units × settings")
    if runs.wind_down(state):
        st.stop()
    runs.run_status(state)
if state is not None and state.record is not None:
    verdicts = runs.run_quality(state, loaded)
    if state.extra["mode"] == "sheet":
        last = state.history.frames[-1]
        sheet = runs.sheet_image(last.pixels, last.mean, state.extra["rows"], state.names, display)
        inputs.show_png(sheet, caption="Rows: units · columns: settings (the paper's figure layout)")
        st.download_button("Download the sheet (PNG)", png_bytes(sheet), "sheet.png", "image/png", on_click="ignore")
    else:
        history_viewer(state, display, verdicts)
    runs.summary_table(state, verdicts)
