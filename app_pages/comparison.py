"""Comparison: one unit under 2-6 regularizer settings side by side, or units x settings as one sheet."""

import streamlit as st

from deepvis import charts, history, ui
from deepvis import optimize as opt
from deepvis.render import png_bytes

loaded = ui.model_sidebar()
st.title("Comparison")
st.caption("The same unit, the same starting noise, different regularization: all columns run together in one "
           "batch, so the settings are the only difference.")

files = st.expander("Save or load a comparison")
with files:
    ui.experiment_loader("cmp")
defaults = {"cmp_mode": "side", "cmp_k": 4, "cmp_seed": 0, f"cmp_size_{loaded.spec.name}": loaded.spec.input_size}
for key, value in defaults.items():  # set here, not as widget defaults, so a loaded comparison can override them
    st.session_state.setdefault(key, value)
mode = st.radio("Mode", ("side", "sheet"), key="cmp_mode", horizontal=True,
                format_func={"side": "one unit, settings side by side", "sheet": "units × settings sheet"}.get)
pick, shared = st.columns([2, 1], gap="large")
with pick:
    targets = [ui.target_picker(loaded, "cmp")] if mode == "side" else ui.units_picker(loaded, "cmp")
with shared:
    k = st.number_input("Settings (columns)", 2, 6, key="cmp_k")
    seed = st.number_input("Seed (same noise for every column)", 0, 2**31 - 1, key="cmp_seed")
    size = st.number_input("Image size (px)", opt.MIN_SIZE, opt.MAX_SIZE, step=16, key=f"cmp_size_{loaded.spec.name}")
    stretch = st.toggle("Contrast stretch", key="cmp_stretch", help="Stretch each image to the full 0–255 range.")

settings = []
for j, column in enumerate(st.columns(k)):
    with column:
        header = st.empty()
        settings.append(ui.settings_editor(f"cmp_s{j}", default=j % 4 + 1, explain=False))
        with header.container():
            ui.color_header(j, ui.column_name(j, settings[j]), settings[j].label if settings[j] else "")
st.caption(f"**Learning-rate rule:** {opt.LR_RULE}")

experiment = None
if not targets:
    st.info("Choose at least one unit for the sheet's rows.")
elif all(settings):
    experiment = opt.Experiment(tuple(targets), tuple(settings), seed, size, loaded.spec.name)
    with files:
        st.download_button("Save this comparison (JSON)", experiment.to_json(), "comparison.json", "application/json",
                           on_click="ignore")
        st.code(experiment.to_json(), language="json")
names = [ui.column_name(j, s) for j, s in enumerate(settings)]

start_col, stop_col, _ = st.columns([1, 1, 6])
start = start_col.button("Start", type="primary", key="cmp_start", disabled=experiment is None)
stop_col.button("Stop", key="cmp_stop", disabled=not start, help="Ends the run and keeps what was made.")
progress, live = st.empty(), st.empty()


def draw_live(snap: opt.Snapshot) -> None:
    progress.progress(snap.progress, text=f"iteration {snap.iteration + 1} of {snap.total} · {len(names)} settings"
                      + (f" × {len(targets)} units" if mode == "sheet" else "") + " in one batch")
    with live.container():
        if mode == "sheet":
            ui.show_png(ui.sheet_image(snap.images, [ui.target_name(loaded, t) for t in targets], names, stretch))
            return
        for j, column in enumerate(st.columns(len(names))):
            column.image(png_bytes(ui.frame_view(snap.images[j], stretch)), output_format="PNG", width="stretch",
                         caption=f"{names[j][0]} · objective {snap.objectives[j]:.4g}")
        st.plotly_chart(charts.curves_figure(snap.record, names))


if start:
    rows = experiment.rows()
    ui.run_live("cmp", lambda: opt.optimize(loaded, *rows, seed=seed, size=size,
                                            every=history.snapshot_every(max(s.steps for s in settings))),
                draw_live, names, history.FrameHistory(max_frames=2) if mode == "sheet" else None, experiment,
                mode=mode, rows=[ui.target_name(loaded, t) for t in targets])
    live.empty()


@st.fragment
def history_viewer(state: history.RunState, stretch: bool) -> None:
    iterations = state.history.iterations
    shown = iterations[-1]
    if len(iterations) > 1:
        shown = st.select_slider("History (iteration), all columns", iterations, value=shown,
                                 key=f"cmp_history_{state.run_id}")
    frame = state.history.at(shown)
    for j, column in enumerate(st.columns(len(state.names))):
        with column:
            ui.color_header(j, state.names[j], state.experiment.settings[j].label)
            done = f" · finished after {frame.steps[j] + 1}" if frame.finished[j] else ""
            st.image(png_bytes(ui.frame_view(frame.images[j], stretch)), output_format="PNG", width="stretch",
                     caption=f"iteration {frame.steps[j]} · objective {frame.objectives[j]:.4g}{done}")
    st.plotly_chart(charts.curves_figure(state.record, state.names, marker=shown), key="cmp_chart")


state = st.session_state.get("cmp_run")
if state is not None:
    st.subheader(state.extra["rows"][0] if state.extra["mode"] == "side" else "Units × settings")
    if ui.wind_down(state):
        st.stop()
    ui.run_status(state)
if state is not None and state.record is not None:
    if state.extra["mode"] == "sheet":
        sheet = ui.sheet_image(state.history.frames[-1].images, state.extra["rows"], state.names, stretch)
        ui.show_png(sheet, caption="Rows: units · columns: settings (the paper's figure layout)")
        st.download_button("Download the sheet (PNG)", png_bytes(sheet), "sheet.png", "image/png", on_click="ignore")
    else:
        history_viewer(state, stretch)
        st.dataframe(ui.summary_rows(state.record, state.names), hide_index=True)
