"""The forms of the Optimization and Comparison pages: what to optimize, with which θ, how to show it; and
saving and loading a comparison.

Conventions
-----------
* A page asks for its form (:func:`optimization_form`, :func:`comparison_form`) and
  gets a frozen object holding what the person chose; the widgets keep their values
  in ``st.session_state`` under keys that only the app wing spells (``{page}_…``,
  with ``page`` one of :data:`OPT`, :data:`CMP`).
* A comparison's columns each have their own θ editor (:mod:`deepvis.app.theta`,
  prefix ``cmp_s{j}``) and a header in the colour of its line in the charts.
* A saved comparison (JSON, :class:`deepvis.experiment.Experiment`) is put back into
  the widgets from the uploader's callback, before they are drawn; a bad file is one
  ``st.error`` line and leaves the widgets as they were.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import streamlit as st

from deepvis.app.inputs import decoded_image, image_input
from deepvis.app.pickers import compose_picker, layer_picker, target_picker, units_picker
from deepvis.app.model import offered
from deepvis.app.theta import ModelRef, set_settings, settings_editor
from deepvis.charts import PALETTE
from deepvis.display import DISPLAYS
from deepvis.errors import DeepvisError
from deepvis.experiment import Experiment
from deepvis.images import model_view
from deepvis.models import LoadedModel
from deepvis.inversion import inversion_target
from deepvis.presets import settings_name
from deepvis.settings import LR_RULE, MAX_SIZE, MIN_SIZE, Settings
from deepvis.targets import Target

OPT, CMP, INV = "opt", "cmp", "inv"  # the pages' key prefixes (INV: the Optimization page's inversion)


def display_picker(page: str) -> str:
    """How optimized images are shown (never recomputes a run): scaled about zero (default), plus mean, clipped."""
    return st.radio("Show images", tuple(DISPLAYS), key=f"{page}_display", horizontal=True,
                    format_func=lambda d: DISPLAYS[d].label,
                    help=" · ".join(f"{d.label}: {d.help}" for d in DISPLAYS.values()))


def color_header(index: int, title: str, caption: str) -> None:
    """A column header in ``PALETTE[index]`` (the colour of its line in the charts)."""
    color = PALETTE[index % len(PALETTE)]
    st.markdown(f'<div style="border-top: 5px solid {color}; padding-top: 4px; color: {color}; font-weight: 600">'
                f"{title}</div>", unsafe_allow_html=True)
    st.caption(caption)


def column_name(index: int, settings: Settings | None, model: ModelRef) -> str:
    """``A · Lite0 row 3 (calibrated)``, ``B · custom``, … (the header and legend name of column ``index``)."""
    return f"{chr(ord('A') + index)} · {settings_name(settings, model) if settings else 'invalid settings'}"


def accentuation_photo(page: str, settings: Sequence[Settings | None]) -> tuple[np.ndarray | None, bool]:
    """Where a row accentuates a photo (``param == "accentuate"``): a photo picker (sample, upload, camera).
    Returns ``(photo (H, W, 3) uint8 or None, whether the run can start)``; a bad file is one ``st.error``."""
    if not any(s is not None and s.param == "accentuate" for s in settings):
        return None, True
    with st.expander("Photo to accentuate (feature accentuation starts from it)", expanded=True):
        chosen = image_input(f"{page}_accent")
        image = decoded_image(chosen[0]) if chosen is not None else None
        photo = np.asarray(image) if image is not None else None
        if image is not None:
            st.image(image, caption=chosen[1], width=160)
    return photo, photo is not None


# --- saving and loading a comparison -------------------------------------------------------------------------

def apply_experiment(key: str, experiment: Experiment) -> None:
    """Put a loaded experiment into the comparison widgets (call from a callback, before they are drawn).

    Its network is chosen in the sidebar when this server offers it (the registry's, or one of the server's
    own); a missing size takes the loaded network's input side, and each column's preset is named against the
    loaded network when the editor is drawn (Table 1's rows depend on its input side)."""
    if offered(experiment.model):
        st.session_state["model_name"] = experiment.model
    first = experiment.targets[0]
    st.session_state[f"{key}_layer_{experiment.model}"] = first.layer
    st.session_state[f"{key}_class"] = st.session_state[f"{key}_unit"] = first.unit
    st.session_state[f"{key}_units"] = [t.unit for t in experiment.targets]
    st.session_state[f"{key}_objective"] = first.objective
    st.session_state[f"{key}_mode"] = "sheet" if len(experiment.targets) > 1 else "side"
    st.session_state[f"{key}_k"] = len(experiment.settings)
    for j, settings in enumerate(experiment.settings):
        set_settings(f"{key}_s{j}", settings)
    st.session_state[f"{key}_seed"] = experiment.seed
    if experiment.size:
        st.session_state[f"{key}_size_{experiment.model}"] = experiment.size
    else:  # the form's default: the loaded network's input side
        st.session_state.pop(f"{key}_size_{experiment.model}", None)


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
    except DeepvisError as exc:
        st.session_state[f"{key}_load_error"] = f"Cannot load {upload.name}: {exc}"
        return
    apply_experiment(key, experiment)


def experiment_loader(key: str) -> None:
    """A file uploader that puts a saved comparison (JSON) back into the widgets; a bad file leaves one line
    in ``st.session_state[f"{key}_load_error"]`` for the form to show."""
    st.file_uploader("Load a saved comparison (JSON)", type=["json"], key=f"{key}_upload",
                     on_change=_experiment_uploaded, args=(key,))


# --- the pages' forms -----------------------------------------------------------------------------------------

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
    targets: tuple[Target, ...] = ()  # the rows to run: the target composed, N of it with diversity

    @property
    def runnable(self) -> bool:
        return self.settings is not None and self.ready


def run_controls(page: str, loaded: LoadedModel, default: str = "3") -> tuple[Settings | None, int, int, str, tuple]:
    """The right-hand side of a compact optimization form: the preset with its values in one line and θ's full
    editor one click away, then a row for Start and Stop (its first two columns, returned for
    :func:`deepvis.app.runs.start_stop`) and the seed, size and display in a popover.
    Returns ``(settings, seed, size, display, buttons)``."""
    settings = settings_editor(page, loaded, default=default, folded=True, summary=True)
    *buttons, options = st.columns([1, 1, 2], vertical_alignment="center")
    with options.popover("Seed, size, display", width="stretch"):
        seed = st.number_input("Seed (initial noise)", 0, 2**31 - 1, 0, key=f"{page}_seed")
        size = st.number_input("Image size (px)", MIN_SIZE, MAX_SIZE, loaded.spec.input_size, step=16,
                               key=f"{page}_size_{loaded.spec.name}")
        display = display_picker(page)
        st.caption(f"**Learning-rate rule** (pixels): {LR_RULE}")
    return settings, int(seed), int(size), display, tuple(buttons)


def optimization_form(loaded: LoadedModel) -> tuple[OptimizationForm, tuple]:
    """Compact, so that a run's picture stays in view: the unit on the left, :func:`run_controls` on the right.
    Also returns the Start and Stop columns."""
    left, right = st.columns([3, 2], gap="large")
    with left:
        target = target_picker(loaded, OPT, side_by_side=True)
        rows = compose_picker(loaded, OPT, target)
    with right:
        settings, seed, size, display, buttons = run_controls(OPT, loaded)
    photo, ready = accentuation_photo(OPT, [settings])
    return OptimizationForm(rows[0], settings, seed, size, display, photo, ready, tuple(rows)), buttons


def inversion_form(loaded: LoadedModel) -> tuple[OptimizationForm, tuple]:
    """Inversion (Mahendran & Vedaldi 2015): a layer and a photo on the left, the run's controls on the right (the
    Fourier parametrization by default); the target is "this photo's representation at the layer"."""
    left, right = st.columns([3, 2], gap="large")
    with left:
        layer = layer_picker(loaded, INV, loaded.default_layer, side_by_side=True)
        chosen = image_input(f"{INV}_photo")
        image = decoded_image(chosen[0]) if chosen is not None else None
    with right:
        settings, seed, size, display, buttons = run_controls(INV, loaded, default="fourier")
    if image is None:
        return OptimizationForm(Target(layer, 0), settings, seed, size, display, None, False), buttons
    target = inversion_target(model_view(image, loaded.spec), layer)
    return OptimizationForm(target, settings, seed, size, display, None, True, (target,)), buttons


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
    network: ModelRef | None = None  # what presets are named against (the loaded network); else ``model``

    @property
    def names(self) -> list[str]:
        return [column_name(j, s, self.network or self.model) for j, s in enumerate(self.settings)]

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


def comparison_form(loaded: LoadedModel) -> tuple[ComparisonForm, tuple]:
    """Mode, units and one θ editor per column, compact so that a run's columns stay in view (the number of
    columns, seed, size and display one click away, and saving or loading).  Also returns the
    two columns for Start and Stop (:func:`deepvis.app.runs.start_stop`), on the mode's line."""
    defaults = {f"{CMP}_mode": "side", f"{CMP}_k": 4, f"{CMP}_seed": 0,
                f"{CMP}_size_{loaded.spec.name}": loaded.spec.input_size}
    for key, value in defaults.items():  # not widget defaults, so that a loaded comparison can override them
        st.session_state.setdefault(key, value)
    mode_col, *buttons, shared, saved = st.columns([5, 1, 1, 3, 2], vertical_alignment="bottom")
    mode = mode_col.radio("Mode", ("side", "sheet"), key=f"{CMP}_mode", horizontal=True,
                          format_func={"side": "one unit, settings side by side",
                                       "sheet": "units × settings sheet"}.get)
    with shared.popover("Columns, seed, size, display", width="stretch"):
        k = st.number_input("Settings (columns)", 2, 6, key=f"{CMP}_k")
        seed = st.number_input("Seed (same noise for every column)", 0, 2**31 - 1, key=f"{CMP}_seed")
        size = st.number_input("Image size (px)", MIN_SIZE, MAX_SIZE, step=16,
                               key=f"{CMP}_size_{loaded.spec.name}")
        display = display_picker(CMP)
        st.caption(f"**Learning-rate rule** (pixels): {LR_RULE}")
    files = saved.popover("Save or load", width="stretch")
    with files:
        experiment_loader(CMP)
    if st.session_state.get(f"{CMP}_load_error"):  # in the page, not the popover, so it is seen
        st.error(st.session_state[f"{CMP}_load_error"])
    targets = [target_picker(loaded, CMP, one_line=True)] if mode == "side" else units_picker(loaded, CMP)
    settings = []
    for j, column in enumerate(st.columns(k)):
        with column:
            header = st.empty()
            settings.append(settings_editor(f"{CMP}_s{j}", loaded, default=str(j % 4 + 1), explain=False,
                                            label="collapsed"))
            with header.container():
                color_header(j, column_name(j, settings[j], loaded), settings[j].label if settings[j] else "")
    photo, ready = accentuation_photo(CMP, settings)
    form = ComparisonForm(mode, tuple(targets), tuple(settings), int(seed), int(size), display, loaded.spec.name,
                          photo, ready, loaded)
    if not targets:
        st.info("Choose at least one unit for the sheet's rows.")
    elif form.experiment is not None:
        with files:
            st.download_button("Save this comparison (JSON)", form.experiment.to_json(), "comparison.json",
                               "application/json", on_click="ignore")
            st.code(form.experiment.to_json(), language="json")
    return form, tuple(buttons)
