"""The θ editor: a preset selector and one widget per regularization and parametrization setting.

Conventions
-----------
* The widgets are generated from :data:`deepvis.settings.THETA` (its kind, limits and
  help text); their values live under ``{key}_{name}`` and the selector under
  ``{key}_preset``, so a saved experiment can be put back (:func:`set_settings`).
* The selector offers the model's calibrated rows, the paper's Table 1 rows and the
  later parametrizations (:mod:`deepvis.presets`), then ``custom``.  Choosing a preset
  fills in its θ; editing any θ turns the selector to ``custom`` (or to the preset it
  now equals).
* Invalid θ are one ``st.error`` line and no settings (``None``).
"""

from __future__ import annotations

import streamlit as st

from deepvis import presets
from deepvis.errors import DeepvisError
from deepvis.presets import CUSTOM, preset_of
from deepvis.models import LoadedModel
from deepvis.settings import THETA, Settings, Theta

ModelRef = str | LoadedModel  # a registry name or the loaded network (Table 1 rows scale to its input side)
UNNAMED = ""  # a preset selector's state until the editor names the θ it holds (never an option)

PRESET_HELP = ("Calibrated rows: this network's own presets, found by `deepvis calibrate` (a random search over "
               "θ that keeps each Table 1 row's character, scored under random views of a second network; the "
               "quality line under each image comes from a third, which took no part). Table 1 rows: the paper's "
               "CaffeNet values, verbatim. Or your own θ.")


def preset_label(model: ModelRef, key: str) -> str:
    return "custom θ" if key == CUSTOM else presets.name(model, key)


def set_settings(key: str, settings: Settings, model: ModelRef | None = None) -> None:
    """Put ``settings`` into the widgets of ``settings_editor(key)`` (call before they are drawn, or in a callback).
    Without ``model``, the preset they equal is named when the editor is drawn, against its network."""
    for theta in THETA:  # every field: to_dict leaves later fields out at their off value
        st.session_state[f"{key}_{theta.name}"] = getattr(settings, theta.name)
    st.session_state[f"{key}_preset"] = preset_of(settings, model) if model is not None else UNNAMED


def _read_settings(key: str) -> Settings:
    return Settings(**{theta.name: st.session_state[f"{key}_{theta.name}"] for theta in THETA})


def _preset_chosen(key: str, model: ModelRef) -> None:
    chosen = st.session_state[f"{key}_preset"]
    if chosen != CUSTOM:
        set_settings(key, presets.resolve(model, chosen), model)


def _theta_edited(key: str, model: ModelRef) -> None:
    try:
        st.session_state[f"{key}_preset"] = preset_of(_read_settings(key), model)
    except DeepvisError:
        st.session_state[f"{key}_preset"] = CUSTOM


def _theta_widget(key: str, theta: Theta, explain: bool, model: ModelRef) -> None:
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


def settings_editor(key: str, model: ModelRef, default: str = "3", explain: bool = True,
                    summary: bool = False, label: str = "visible", folded: bool | None = None) -> Settings | None:
    """A preset selector and every θ; returns the settings, or ``None`` after one ``st.error`` line.

    ``explain`` prints each θ's one-line explanation under it (otherwise it is the tooltip); ``folded`` puts
    the θ in an "Edit θ" expander, open while ``st.session_state[f"{key}_edit"]`` (default: when not
    explained); ``summary`` writes the values in one line
    under the selector; ``label`` is the selector's label visibility.
    """
    if f"{key}_preset" not in st.session_state or any(f"{key}_{t.name}" not in st.session_state for t in THETA):
        set_settings(key, presets.resolve(model, default), model)
    options = (*presets.choices(model), CUSTOM)
    if st.session_state[f"{key}_preset"] not in options:  # another model's preset, or UNNAMED: name the θ
        _theta_edited(key, model)
    st.selectbox("Settings", options, key=f"{key}_preset", on_change=_preset_chosen, args=(key, model),
                 format_func=lambda p: preset_label(model, p), help=PRESET_HELP, label_visibility=label)
    summary_line = st.empty() if summary else None
    # Folded: an expander whose open state is kept under f"{key}_edit" (so that Start can fold it away).
    box = st.expander("Edit θ", key=f"{key}_edit", on_change="rerun") if (not explain if folded is None else folded) \
        else st.container()
    with box:
        grid = st.columns(2) if explain else [st.container()]
        for i, theta in enumerate(THETA):
            with grid[i * len(grid) // len(THETA)]:
                _theta_widget(key, theta, explain, model)
    try:
        settings = _read_settings(key)
    except DeepvisError as exc:
        st.error(f"Invalid settings: {exc}")
        return None
    if summary_line is not None:
        summary_line.caption(settings.label)
    if presets.unregularized(settings):
        st.caption(presets.FOOLING_NOTE)
    return settings
