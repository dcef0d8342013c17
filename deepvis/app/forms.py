"""Streamlit widgets of the Optimization and Comparison pages: θ, their forms and live runs.

One of the two modules that touch Streamlit (the other is :mod:`deepvis.ui`).  About 400 lines: both
pages' forms share the θ editor and the live-run machinery, and splitting them would spread one page's
session state over two modules.

Conventions
-----------
* A page asks for its form (:func:`optimization_form`, :func:`comparison_form`) and
  gets a frozen object holding what the person chose; the widgets keep their values
  in ``st.session_state`` under keys that only this module spells (``{page}_…``,
  with ``page`` one of :data:`OPT`, :data:`CMP`).
* The θ editor is generated from :data:`deepvis.settings.THETA`; its preset selector
  offers the model's calibrated rows and the paper's Table 1 rows (:mod:`deepvis.presets`).
* Optimized images are drawn from the float history in the chosen display
  (:mod:`deepvis.display`, scaled about zero by default), so switching it never
  recomputes a run; a finished or stopped run's quality (:mod:`deepvis.quality`) is
  computed once and kept with the run.
* Long runs stream into a ``RunState`` (:func:`run_live`), kept in the session as
  each snapshot arrives, so what was made survives Stop, reruns and page switches;
  :func:`last_run` gives it back.  History frames are float16 and bounded
  (``FrameHistory``).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass

import numpy as np
import streamlit as st

from deepvis.errors import DeepvisError
from deepvis import presets, quality, render, ui
from deepvis.charts import PALETTE
from deepvis.display import DISPLAYS, show
from deepvis.history import FrameHistory, RunState, stream
from deepvis.models import DEFAULT_MODEL, REGISTRY, LoadedModel
from deepvis.experiment import Experiment
from deepvis.records import RunRecord, Snapshot
from deepvis.settings import LR_RULE, MAX_SIZE, MIN_SIZE, Settings, THETA, Theta
from deepvis.targets import Target

OPT, CMP = "opt", "cmp"  # the two pages' key prefixes
CUSTOM = "custom"


def preset_of(settings: Settings, model: str) -> str:
    """The preset key (``"3"``, ``"table1:3"``, :mod:`deepvis.presets`) these settings equal, else ``"custom"``."""
    return next((key for key, found in presets.choices(model).items() if found == settings), CUSTOM)


def preset_label(model: str, key: str) -> str:
    return "custom θ" if key == CUSTOM else presets.name(model, key)


def settings_name(settings: Settings, model: str) -> str:
    """``Lite0 row 3 (calibrated)``, ``Table 1 row 3 (verbatim), 200 it`` (only the iterations changed), ``custom``."""
    found = preset_of(settings, model)
    if found != CUSTOM:
        return presets.name(model, found)
    for key, preset in presets.choices(model).items():
        if preset.replace(steps=settings.steps) == settings:
            return f"{presets.name(model, key)}, {settings.steps} it"
    return "custom"


def set_settings(key: str, settings: Settings, model: str) -> None:
    """Put ``settings`` into the widgets of ``settings_editor(key)`` (call before they are drawn, or in a callback)."""
    for name, value in settings.to_dict().items():
        st.session_state[f"{key}_{name}"] = value
    st.session_state[f"{key}_preset"] = preset_of(settings, model)


def _read_settings(key: str) -> Settings:
    return Settings(**{theta.name: st.session_state[f"{key}_{theta.name}"] for theta in THETA})


def _preset_chosen(key: str, model: str) -> None:
    chosen = st.session_state[f"{key}_preset"]
    if chosen != CUSTOM:
        set_settings(key, presets.resolve(model, chosen), model)


def _theta_edited(key: str, model: str) -> None:
    try:
        st.session_state[f"{key}_preset"] = preset_of(_read_settings(key), model)
    except ValueError:
        st.session_state[f"{key}_preset"] = CUSTOM


def _theta_widget(key: str, theta: Theta, explain: bool, model: str) -> None:
    """One θ row as a widget of its kind (see :data:`deepvis.settings.THETA`), with its help text."""
    common = dict(key=f"{key}_{theta.name}", on_change=_theta_edited, args=(key, model),
                  help=None if explain else theta.help)
    if theta.enabled_by:
        common["disabled"] = not theta.enabled({t.name: st.session_state[f"{key}_{t.name}"] for t in THETA})
    if theta.kind == "choice":
        st.radio(theta.label, theta.choices, horizontal=True, **common)
    elif theta.kind == "percent":
        st.slider(theta.label, float(theta.low), float(theta.high), step=theta.step, **common)
    elif theta.kind == "int":
        st.number_input(theta.label, step=int(theta.step), **common)
    else:
        st.number_input(theta.label, step=theta.step, format="%g", **common)
    if explain:
        st.caption(theta.help)


PRESET_HELP = ("Calibrated rows: this network's own presets, found by `deepvis calibrate` (a random search over "
               "θ that keeps each Table 1 row's character, scored under random views of a second network; the quality line under "
               "each image comes from a third, which took no part). Table 1 rows: the paper's "
               "CaffeNet values, verbatim. Or your own θ.")


def settings_editor(key: str, model: str, default: str = "3", explain: bool = True) -> Settings | None:
    """A preset selector (calibrated rows and Table 1, :mod:`deepvis.presets`) and every θ; returns the
    settings, or ``None`` after one ``st.error`` line.

    Choosing a preset fills in its θ; editing any θ turns the selector to "custom" (or to the preset it
    now equals).  ``explain`` prints each θ's one-line explanation under it (otherwise it is the tooltip).
    """
    if f"{key}_preset" not in st.session_state or any(f"{key}_{t.name}" not in st.session_state for t in THETA):
        set_settings(key, presets.resolve(model, default), model)
    options = (*presets.choices(model), CUSTOM)
    if st.session_state[f"{key}_preset"] not in options:  # another model's preset: name what the θ now are
        _theta_edited(key, model)
    st.selectbox("Settings", options, key=f"{key}_preset", on_change=_preset_chosen, args=(key, model),
                 format_func=lambda p: preset_label(model, p), help=PRESET_HELP)
    box = st.container() if explain else st.expander("Edit θ")
    with box:
        grid = st.columns(2) if explain else [st.container()]
        for i, theta in enumerate(THETA):
            with grid[i * len(grid) // len(THETA)]:
                _theta_widget(key, theta, explain, model)
    try:
        return _read_settings(key)
    except ValueError as exc:
        st.error(f"Invalid settings: {exc}")
        return None


def color_header(index: int, title: str, caption: str) -> None:
    """A column header in ``PALETTE[index]`` (the colour of its line in the charts)."""
    color = PALETTE[index % len(PALETTE)]
    st.markdown(f'<div style="border-top: 5px solid {color}; padding-top: 4px; color: {color}; font-weight: 600">'
                f"{title}</div>", unsafe_allow_html=True)
    st.caption(caption)


def column_name(index: int, settings: Settings | None, model: str) -> str:
    """``A · Lite0 row 3 (calibrated)``, ``B · custom``, … (the header and legend name of column ``index``)."""
    return f"{chr(ord('A') + index)} · {settings_name(settings, model) if settings else 'invalid settings'}"


def run_live(key: str, start: Callable[[], Generator[Snapshot, None, None]],
             draw: Callable[[Snapshot], None], names: Sequence[str], history: FrameHistory | None = None,
             experiment: Experiment | None = None, **extra: object) -> RunState | None:
    """Start a run (``start()`` -> generator), store its ``RunState`` as ``st.session_state[f"{key}_run"]``
    and stream it.  A ``ValueError`` at the start (bad settings, target, size) becomes one ``st.error`` line;
    a failure during the run is kept in the state for ``run_status`` to show."""
    try:
        gen = start()
    except ValueError as exc:
        st.error(f"Cannot start: {exc}")
        return None
    st.session_state[f"{key}_runs"] = st.session_state.get(f"{key}_runs", 0) + 1
    state = RunState(st.session_state[f"{key}_runs"], tuple(names), history or FrameHistory(), experiment,
                     extra=dict(extra))
    st.session_state[f"{key}_run"] = state
    try:
        stream(gen, state, draw)
    except (ValueError, RuntimeError) as exc:  # RuntimeError: torch cannot run the network on this input
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = " (is the image too small for this network?)" if isinstance(exc, RuntimeError) else ""
        state.status, state.error = "failed", f"{first_line}{hint}"
    return state


def wind_down(state: RunState) -> bool:
    """While an interrupted run is still ending, say so and return True (the caller draws nothing more).

    A click during a run starts a new script run at once, in a new thread; the old one keeps computing
    until its next ``st`` call, where Streamlit stops it (its ``finally`` then marks the run stopped).
    A small fragment polls until then and reruns the page, which then shows the kept history.
    """
    if state.status == "running" and not state.thread.is_alive():
        state.status = "stopped"  # its thread ended without reaching the finally (e.g. the server stopped it)
    if not state.active:
        return False
    st.info(f"Stopping… the run ends at its next snapshot (iteration {state.record.iteration if state.record else 0}"
            f" of {state.total} so far); what it made is kept.")

    @st.fragment(run_every=0.5)
    def poll() -> None:
        if not state.active:
            st.rerun()

    poll()
    return True


def run_status(state: RunState) -> None:
    """One line on how the last run ended."""
    shown = state.record.iteration + 1 if state.record else 0
    seconds = state.record.seconds if state.record else 0.0
    if state.status == "stopped":
        st.info(f"Stopped after {shown} of {state.total} iterations; the images made so far are kept below.")
    elif state.status == "finished":
        st.caption(f"Finished {state.total} iterations in {seconds:.1f} s.")
    elif state.status == "failed":
        st.error(f"The run failed: {state.error}")


def frame_view(pixels: np.ndarray, mean: Sequence[float], mode: str, min_size: int = 224) -> np.ndarray:
    """What the pages show of one float image ``(H, W, 3)`` (pixel space): drawn in display ``mode``
    (:mod:`deepvis.display`), small images enlarged (nearest neighbour) to ``min_size``."""
    shown = show(pixels, mean, mode)
    return render.upscale(shown, min_size, smooth=False) if max(shown.shape[:2]) < min_size else shown


def display_picker(page: str) -> str:
    """How optimized images are shown (never recomputes a run): scaled about zero (default), plus mean, clipped."""
    return st.radio("Show images", tuple(DISPLAYS), key=f"{page}_display", horizontal=True,
                    format_func=lambda d: DISPLAYS[d].label,
                    help=" · ".join(f"{d.label}: {d.help}" for d in DISPLAYS.values()))


def run_quality(state: RunState, loaded: LoadedModel) -> list[quality.Quality]:
    """The quality of every row's best image, computed once per finished or stopped run (about 0.25 s a row
    on a CPU) and kept in the run's state."""
    if state.extra.get("quality_at") != state.record.iteration:
        with st.spinner("Scoring the images (judge network and robustness)…"):
            state.extra["quality"] = quality.assess_record(loaded, state.record)
        state.extra["quality_at"] = state.record.iteration
    return state.extra["quality"]


def quality_caption(verdict: quality.Quality, best_step: int) -> str:
    mark = "legible" if verdict.legible else "not legible"
    return f"**Quality** of the best image (iteration {best_step}) — {verdict.label} · {mark}"


def summary_rows(record: RunRecord, names: Sequence[str], verdicts: Sequence[quality.Quality]) -> list[dict]:
    """Per row: its parametrization, the best objective with the best image's quality score beside it, then
    the other objectives, iterations, the judge's verdict, final norm and std."""
    names = [names[b % len(names)] for b in range(len(record.rows))]  # a sheet: every unit under each setting
    return [{"unit": row.target.unit, "setting": name, "parametrization": row.settings.param,
             "best objective": row.best_objective, "quality score": q.score, "final objective": row.final,
             "best iteration": row.best_step, "argmax from": row.argmax_step, "judge rank": q.rank,
             "judge p": q.prob, "robustness": q.robustness, "legible": q.legible, "final norm": float(row.norms[-1]),
             "final std": float(row.stds[-1]), "iterations": row.steps_done}
            for row, name, q in zip(record.rows, names, verdicts)]


def sheet_image(pixels: np.ndarray, mean: Sequence[float], row_names: Sequence[str], col_names: Sequence[str],
                mode: str) -> np.ndarray:
    """Rows x columns of ``(R*C, H, W, 3)`` float images (row-major) as one labelled image (small ones enlarged)."""
    shown = np.stack([frame_view(image, mean, mode, min_size=128) for image in pixels])
    return render.compose_sheet(shown, len(row_names), len(col_names), row_names, col_names)


def apply_experiment(key: str, experiment: Experiment) -> None:
    """Put a loaded experiment into the comparison widgets (call from a callback, before they are drawn)."""
    if experiment.model in REGISTRY:
        st.session_state["model_name"] = experiment.model
    first = experiment.targets[0]
    st.session_state[f"{key}_layer_{experiment.model}"] = first.layer
    st.session_state[f"{key}_class"] = st.session_state[f"{key}_unit"] = first.unit
    st.session_state[f"{key}_units"] = [t.unit for t in experiment.targets]
    st.session_state[f"{key}_objective"] = first.objective
    st.session_state[f"{key}_mode"] = "sheet" if len(experiment.targets) > 1 else "side"
    st.session_state[f"{key}_k"] = len(experiment.settings)
    for j, settings in enumerate(experiment.settings):
        set_settings(f"{key}_s{j}", settings, experiment.model)
    st.session_state[f"{key}_seed"] = experiment.seed
    size = experiment.size or REGISTRY.get(experiment.model, REGISTRY[DEFAULT_MODEL]).input_size
    st.session_state[f"{key}_size_{experiment.model}"] = size


def _experiment_uploaded(key: str) -> None:
    upload = st.session_state.get(f"{key}_upload")
    st.session_state.pop(f"{key}_load_error", None)
    if upload is None:
        return
    try:
        experiment = Experiment.from_json(upload.getvalue())
        if not 2 <= len(experiment.settings) <= 6:
            raise DeepvisError(f"A comparison has 2 to 6 settings; this file has {len(experiment.settings)}.")
        if len({t.layer for t in experiment.targets}) > 1 or len({t.objective for t in experiment.targets}) > 1:
            raise DeepvisError("The units of a sheet must share one layer and one objective.")
    except ValueError as exc:
        st.session_state[f"{key}_load_error"] = f"Cannot load {upload.name}: {exc}"
        return
    apply_experiment(key, experiment)


def experiment_loader(key: str) -> None:
    """A file uploader that puts a saved comparison (JSON) back into the widgets; bad files -> one st.error."""
    st.file_uploader("Load a saved comparison (JSON)", type=["json"], key=f"{key}_upload",
                     on_change=_experiment_uploaded, args=(key,))
    if st.session_state.get(f"{key}_load_error"):
        st.error(st.session_state[f"{key}_load_error"])


def accentuation_photo(page: str, settings: Sequence[Settings | None]) -> tuple[np.ndarray | None, bool]:
    """Where a row accentuates a photo (``param == "accentuate"``): a photo picker (sample, upload, camera).
    Returns ``(photo (H, W, 3) uint8 or None, whether the run can start)``; a bad file is one ``st.error``."""
    if not any(s is not None and s.param == "accentuate" for s in settings):
        return None, True
    with st.expander("Photo to accentuate (feature accentuation starts from it)", expanded=True):
        chosen = ui.image_input(f"{page}_accent")
        image = ui.decoded_image(chosen[0]) if chosen is not None else None
        photo = np.asarray(image) if image is not None else None
        if image is not None:
            st.image(image, caption=chosen[1], width=160)
    return photo, photo is not None


# --- The pages' forms -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class OptimizationForm:
    """What the Optimization page's person chose; ``settings`` is ``None`` after an invalid θ (error shown)."""

    target: Target
    settings: Settings | None
    seed: int
    size: int
    display: str
    photo: np.ndarray | None = None  # the photo an accentuation starts from
    ready: bool = True  # False while an accentuation has no photo

    @property
    def runnable(self) -> bool:
        return self.settings is not None and self.ready


def optimization_form(loaded: LoadedModel) -> OptimizationForm:
    """The unit, seed, size and display on the left, θ on the right, the learning-rate rule below."""
    left, right = st.columns([1, 2], gap="large")
    with left:
        target = ui.target_picker(loaded, OPT)
        seed = st.number_input("Seed (initial noise)", 0, 2**31 - 1, 0, key=f"{OPT}_seed")
        size = st.number_input("Image size (px)", MIN_SIZE, MAX_SIZE, loaded.spec.input_size, step=16,
                               key=f"{OPT}_size_{loaded.spec.name}")
        display = display_picker(OPT)
    with right:
        settings = settings_editor(OPT, loaded.spec.name)
    photo, ready = accentuation_photo(OPT, [settings])
    st.caption(f"**Learning-rate rule** (pixels): {LR_RULE}")
    return OptimizationForm(target, settings, int(seed), int(size), display, photo, ready)


@dataclass(frozen=True)
class ComparisonForm:
    """What the Comparison page's person chose: units (rows) x settings (columns) and how to show them."""

    mode: str  # "side": one unit, settings side by side; "sheet": units x settings
    targets: tuple[Target, ...]
    settings: tuple[Settings | None, ...]  # None where a column's θ is invalid (its error is shown)
    seed: int
    size: int
    display: str
    model: str
    photo: np.ndarray | None = None  # the photo accentuate columns start from
    ready: bool = True  # False while an accentuate column has no photo

    @property
    def names(self) -> list[str]:
        return [column_name(j, s, self.model) for j, s in enumerate(self.settings)]

    @property
    def batching(self) -> str:
        """How the columns run: " in one batch", or " (one batch per parametrization)" when they mix."""
        mixed = len({s.param for s in self.settings if s is not None}) > 1
        return " (one batch per parametrization)" if mixed else " in one batch"

    @property
    def experiment(self) -> Experiment | None:
        """The runnable experiment, or ``None`` while a unit is missing or a column's θ is invalid."""
        if not self.targets or not all(self.settings) or not self.ready:
            return None
        return Experiment(self.targets, self.settings, self.seed, self.size, self.model)


def comparison_form(loaded: LoadedModel, files: st.delta_generator.DeltaGenerator) -> ComparisonForm:
    """Mode, units, columns, seed, size and one θ editor per column; ``files`` holds the load/save widgets."""
    with files:
        experiment_loader(CMP)
    defaults = {f"{CMP}_mode": "side", f"{CMP}_k": 4, f"{CMP}_seed": 0,
                f"{CMP}_size_{loaded.spec.name}": loaded.spec.input_size}
    for key, value in defaults.items():  # not widget defaults, so that a loaded comparison can override them
        st.session_state.setdefault(key, value)
    mode = st.radio("Mode", ("side", "sheet"), key=f"{CMP}_mode", horizontal=True,
                    format_func={"side": "one unit, settings side by side", "sheet": "units × settings sheet"}.get)
    pick, shared = st.columns([2, 1], gap="large")
    with pick:
        targets = [ui.target_picker(loaded, CMP)] if mode == "side" else ui.units_picker(loaded, CMP)
    with shared:
        k = st.number_input("Settings (columns)", 2, 6, key=f"{CMP}_k")
        seed = st.number_input("Seed (same noise for every column)", 0, 2**31 - 1, key=f"{CMP}_seed")
        size = st.number_input("Image size (px)", MIN_SIZE, MAX_SIZE, step=16,
                               key=f"{CMP}_size_{loaded.spec.name}")
        display = display_picker(CMP)
    settings = []
    for j, column in enumerate(st.columns(k)):
        with column:
            header = st.empty()
            settings.append(settings_editor(f"{CMP}_s{j}", loaded.spec.name, default=str(j % 4 + 1), explain=False))
            with header.container():
                color_header(j, column_name(j, settings[j], loaded.spec.name), settings[j].label if settings[j] else "")
    photo, ready = accentuation_photo(CMP, settings)
    st.caption(f"**Learning-rate rule** (pixels): {LR_RULE}")
    form = ComparisonForm(mode, tuple(targets), tuple(settings), int(seed), int(size), display, loaded.spec.name,
                          photo, ready)
    if not targets:
        st.info("Choose at least one unit for the sheet's rows.")
    elif form.experiment is not None:
        with files:
            st.download_button("Save this comparison (JSON)", form.experiment.to_json(), "comparison.json",
                               "application/json", on_click="ignore")
            st.code(form.experiment.to_json(), language="json")
    return form


def start_stop(page: str, ready: bool) -> bool:
    """The Start and Stop buttons; True when Start was clicked (Stop just interrupts the running script)."""
    start_col, stop_col, _ = st.columns([1, 1, 6])
    start = start_col.button("Start", type="primary", key=f"{page}_start", disabled=not ready)
    stop_col.button("Stop", key=f"{page}_stop", disabled=not start, help="Ends the run and keeps what was made.")
    return start


def last_run(page: str) -> RunState | None:
    """The page's latest run in this session (running, stopped, finished or failed), if any."""
    return st.session_state.get(f"{page}_run")
