"""Comparison: one unit under 2-6 regularizer settings side by side, or units x settings as one sheet."""

import streamlit as st

from deepvis import charts, history
from deepvis import optimize as opt
from deepvis.app import forms, inputs, model, pickers, runs
from deepvis.render import png_bytes

loaded = model.model_sidebar()
st.title("Comparison", help="The same unit, the same starting noise, different regularization or parametrization: "
         "columns of one parametrization run together in one batch, so the settings are the only difference.")

form, buttons = forms.comparison_form(loaded)
names, targets, mode, display = form.names, form.targets, form.mode, form.display
runs.start_stop(forms.CMP, ready=form.experiment is not None, where=buttons,
                fold=[f"{forms.CMP}_s{j}_edit" for j in range(len(names))], begin=lambda: runs.start_run(
    forms.CMP, lambda: opt.optimize(loaded, *form.experiment.rows(), seed=form.seed, size=form.size, photo=form.photo,
                                    every=history.snapshot_every(max(s.steps for s in form.experiment.settings))),
    names, history.FrameHistory(max_frames=2) if mode == "sheet" else None, form.experiment, scored=loaded, mode=mode,
    rows=[pickers.target_name(loaded, t) for t in targets]))


def progress_line(state: history.RunState) -> str:
    return (f"iteration {state.progress[1]} of {state.total} · {len(state.names)} settings"
            + (f" × {len(state.extra['rows'])} units" if state.extra["mode"] == "sheet" else "") + form.batching)


def picture(state: history.RunState, frame: history.Frame) -> tuple:
    """Every column side by side as one picture, each objective in its label: far lighter for the browser than
    a picture per column."""
    rows = state.extra["rows"] if state.extra["mode"] == "sheet" else [""]
    labels = state.names if state.extra["mode"] == "sheet" else [
        f"{name[0]} · objective {value:.4g}" for name, value in zip(state.names, frame.objectives)]
    return (runs.sheet_image(frame.pixels, frame.mean, rows, labels, display),
            f"iteration {frame.iteration} · objective " + " · ".join(f"{v:.4g}" for v in frame.objectives))


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
if state is not None and not state.active:
    st.subheader(state.extra["rows"][0] if state.extra["mode"] == "side" else "Units × settings")
if state is not None and state.active:
    runs.live(state, picture, progress_line,
              lambda state: png_bytes(charts.curves_picture(state.record, state.names, width=900)), stacked=True,
              width="stretch")
elif state is not None:
    runs.run_status(state)
if state is not None and not state.active and state.record is not None:
    verdicts = runs.run_quality(state, loaded)
    if state.extra["mode"] == "sheet":
        last = state.history.frames[-1]
        sheet = runs.sheet_image(last.pixels, last.mean, state.extra["rows"], state.names, display)
        inputs.show_png(sheet, caption="Rows: units · columns: settings (the paper's figure layout)")
        st.download_button("Download the sheet (PNG)", png_bytes(sheet), "sheet.png", "image/png", on_click="ignore")
    else:
        history_viewer(state, display, verdicts)
    runs.summary_table(state, verdicts)
