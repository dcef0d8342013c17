"""Training: a recorded run (deepvis.Run) at any step — every filter's optimized image, one filter's history,
the diagnoses, the run's health over all steps, the first layer and a probe image — live while it trains."""

import streamlit as st

from deepvis.app import grid
from deepvis.app import training as tr
from deepvis.app import training_data as data
from deepvis.app import training_jobs as filling
from deepvis.app import training_runs as which
from deepvis.app import training_views as views
from deepvis.errors import DeepvisError

which.open_link()
with st.sidebar:
    st.subheader("Training run")
    path = which.run_picker("train_run", "Run")
    other = which.run_picker("train_cmp", "Second run") if st.toggle(
        "Compare with a second run", key="train_compare", help="Two runs side by side at the same step, e.g. "
        "the same network at two learning rates.") else None
    follow = st.toggle("Follow the run", True, key="train_follow",
                       help=f"Look for new snapshots every {tr.LIVE_S:g} s while it trains; no reload needed.")
    auto = st.toggle("Compute as snapshots arrive", True, key="train_auto",
                     help="Fill in missing measures and pictures on a background worker by itself.")
if path is None:
    st.title("Training")
    st.info("Choose a run in the sidebar: a folder `deepvis.Run` records (`python -m deepvis.examples.digits "
            "runs/digits` makes one), or start the app with `-- --runs DIR` to list the runs under DIR.")
    st.stop()
a = tr.open_shown(path)
b = tr.open_shown(other, "Second run: ") if other is not None else None
if a is None:
    if follow:
        tr.watch(lambda: tr.fingerprint(path), tr.fingerprint(path))
    st.stop()
with st.sidebar:
    a = a.with_layer(tr.pictures_picker(a))
layer = a.pictures.layer
if b is not None:
    try:
        b = b.with_layer(a.pictures) if b.ref.layer(layer) is not None else None
    except DeepvisError:
        st.warning(f"The second run, {b.name}, has no layer `{layer}`; showing {a.name} alone.")
        b = None
runs = [a] if b is None else [a, b]
seen = tuple(r.fingerprint() for r in runs)
with st.sidebar:
    for run, key in zip(runs, ("train_job", "train_job_b")):
        with tr.guarded(f"Computing {run.name}"):
            filling.compute_panel(run, auto, key)

st.markdown(f"**{a.name}** · {len(a.view.steps)} snapshots" + (f" · compared with **{b.name}**" if b else ""))
step = tr.step_slider(a, follow)
channels = a.ref.layer(layer).channels
tr.unit_from_link(channels)
if b is None:
    grid_col, unit_col = st.columns([1.45, 1], gap="medium")
    with unit_col:
        unit = grid.unit_stepper("train_unit", channels, "Filter")
        with tr.guarded("The filter's history"):
            views.history(a, unit, "train")
    with grid_col, tr.guarded("The layer's grid"):
        st.caption(data.scalars_text(a.view, step))
        views.layer_grid(a, step, unit, "train_grid")
    with unit_col, tr.guarded("The diagnoses"):
        views.diagnoses(a, step)
else:
    with st.columns([1, 2])[0]:
        unit = grid.unit_stepper("train_unit", channels, "Filter")
    for run, column, key in zip(runs, st.columns(2, gap="medium"), ("train", "train_b")):
        at = run.step_near(step)
        with column, tr.guarded(f"{run.name}'s grid"):
            st.markdown(f"**{run.name}** at step {at} · {data.scalars_text(run.view, at)}")
            views.layer_grid(run, at, unit, f"{key}_grid")
            views.diagnoses(run, at)
            views.history(run, unit, key)

st.subheader("Over training")
with tr.guarded("The chart"):
    views.chart(runs, step, layer)
first_col, probe_col = st.columns([1, 2], gap="medium")
with first_col, tr.guarded("The first layer"):
    st.subheader("First-layer filters")
    for run in runs:
        views.first_layer(run, run.step_near(step))
with probe_col, tr.guarded("The probe image"):
    st.subheader("A probe image through it")
    views.probe(a, step, layer, unit)
which.write_link(a.view.path, step, layer, unit, b.view.path if b else None)
if follow:
    tr.watch(lambda: tuple(r.fingerprint() for r in runs), seen)
