"""Pickers of what to look at: a layer (block, then layer), a unit or class, a target or several, and a
click on a chart's bar.

Conventions
-----------
* Every picker takes a ``key`` prefix and keeps its values under ``{key}_…`` so that a
  saved experiment can be put back into the widgets (:func:`deepvis.app.forms.apply_experiment`).
  The layer's key also names the model (:func:`layer_key`): each network keeps its own.
* A stored layer the model lacks, or a unit out of range, falls back to the default
  silently (links warn about theirs, :mod:`deepvis.app.links`).
* Class names label the units of the logits layer (:func:`deepvis.targets.class_names`).
"""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from deepvis.errors import DeepvisError
from deepvis.layers import groups
from deepvis.models import LoadedModel
from deepvis.objectives import with_diversity
from deepvis.targets import OBJECTIVES, Target, Term, class_names, resolve_unit


def _init(key: str, value: object) -> None:
    if key not in st.session_state:
        st.session_state[key] = value


def layer_key(loaded: LoadedModel, key: str) -> str:
    return f"{key}_layer_{loaded.spec.name}"


def _group_chosen(loaded: LoadedModel, key: str) -> None:
    """A new block was chosen: show its last rectified layer (else its last layer)."""
    members = groups(loaded.layers)[st.session_state[f"{key}_group_{loaded.spec.name}"]]
    st.session_state[layer_key(loaded, key)] = next(
        (i.name for i in reversed(members) if i.rectified and i.is_spatial and i.shape[1] > 1), members[-1].name)


def layer_picker(loaded: LoadedModel, key: str, default: str, side_by_side: bool = True) -> str:
    """Block/stage, then a layer of it (both searchable by typing); returns the layer's node name.

    Each layer reads ``_swish_1 — ReLU6 after depthwise conv 5×5 → batch norm · 672 × 14 × 14`` and its full
    node name is shown under the pickers.  A stored module path (``_blocks.9``) becomes its output node.
    ``side_by_side=False`` stacks the two pickers (for a narrow column).
    """
    widget_key, group_key = layer_key(loaded, key), f"{key}_group_{loaded.spec.name}"
    by_group = groups(loaded.layers)
    try:
        current = loaded.layer(st.session_state.get(widget_key, default))
    except DeepvisError:
        current = loaded.layer(default)
    st.session_state[widget_key] = current.name
    st.session_state[group_key] = current.group
    left, right = st.columns([1, 2]) if side_by_side else (st.container(), st.container())
    left.selectbox("Block", list(by_group), key=group_key, on_change=_group_chosen, args=(loaded, key),
                   format_func=lambda g: f"{g} · {len(by_group[g])} layers",
                   help="Blocks and stages in the order the network computes them.")
    members = {info.name: info for info in by_group[st.session_state[group_key]]}
    name = right.selectbox("Layer (type to search)", list(members), key=widget_key,
                           format_func=lambda n: f"{members[n].short_name} — {members[n].description}",
                           help="Every operation of the traced forward graph. Rectified layers (after a "
                                "ReLU/ReLU6) show the sparse maps of the paper's live view.")
    st.caption(f"Layer `{name}` · {members[name].description}")
    return name


def _unit_format(loaded: LoadedModel, layer: str) -> Callable[[int], str]:
    classes = class_names(loaded, layer)
    return (lambda i: f"{i} · {classes[i]}") if classes else str


def _default_unit(loaded: LoadedModel, layer: str) -> int:
    classes = class_names(loaded, layer)
    try:
        return resolve_unit(loaded, layer, "flamingo") if classes else 0
    except DeepvisError:
        return 0


def _objective_picker(loaded: LoadedModel, key: str, layer: str) -> str:
    if not loaded.layer(layer).is_spatial:
        return "neuron"
    _init(f"{key}_objective", "neuron")
    return st.radio("Objective (maximized)", OBJECTIVES, key=f"{key}_objective", horizontal=True,
                    format_func={"neuron": "one neuron (centre)", "channel": "channel mean"}.get,
                    help="One activation at the centre of the channel's map, or the mean of the whole map.")


def target_picker(loaded: LoadedModel, key: str, side_by_side: bool = False, one_line: bool = False) -> Target:
    """Layer + unit (a class by name on the logits layer) + objective -> one ``Target``; ``side_by_side``
    puts the layer's group and the layer on one line, ``one_line`` the unit too."""
    layer_box, unit_box = st.columns([2, 1]) if one_line else (st.container(), st.container())
    with layer_box:
        layer = layer_picker(loaded, key, loaded.logits_layer, side_by_side=side_by_side or one_line)
    with unit_box:
        return Target(layer, _unit_picker(loaded, key, layer), _objective_picker(loaded, key, layer))


def _unit_picker(loaded: LoadedModel, key: str, layer: str) -> int:
    info = loaded.layer(layer)
    if class_names(loaded, layer):
        if st.session_state.get(f"{key}_class") not in range(info.channels):
            st.session_state[f"{key}_class"] = _default_unit(loaded, layer)
        unit = st.selectbox("Class (type to search)", range(info.channels), key=f"{key}_class",
                            format_func=_unit_format(loaded, layer))
    else:
        if st.session_state.get(f"{key}_unit") not in range(info.channels):
            st.session_state[f"{key}_unit"] = 0
        noun = "Channel" if info.is_spatial else "Unit"
        unit = st.number_input(f"{noun} (0 – {info.channels - 1})", 0, info.channels - 1, key=f"{key}_unit")
    return int(unit)


def target_name(loaded: LoadedModel, target: Target) -> str:
    """``flamingo (class 130 of _fc)`` or ``_blocks.5 channel 12 · centre neuron`` (titles, sheet rows); a composed
    objective by its expression."""
    if target.composed:
        return target.label
    classes = class_names(loaded, target.layer) if target.layer in {i.name for i in loaded.layers} else None
    if classes:
        return f"{classes[target.unit]} (class {target.unit} of {target.layer})"
    if len(loaded.layer(target.layer).shape) == 1:
        return f"{target.layer} unit {target.unit}"
    return f"{target.layer} channel {target.unit} · {'centre neuron' if target.objective == 'neuron' else 'mean'}"


def units_picker(loaded: LoadedModel, key: str) -> list[Target]:
    """Layer + several units (classes on the logits layer) -> one ``Target`` per unit (sheet rows)."""
    layer = layer_picker(loaded, key, loaded.logits_layer, side_by_side=False)
    info = loaded.layer(layer)
    chosen = [u for u in st.session_state.get(f"{key}_units", []) if u in range(info.channels)][:8]
    if not chosen:
        classes = class_names(loaded, layer)
        chosen = ([resolve_unit(loaded, layer, n) for n in ("flamingo", "strawberry", "goldfish") if n in classes]
                  if classes else []) or list(range(min(3, info.channels)))
    st.session_state[f"{key}_units"] = chosen
    units = st.multiselect("Units (rows of the sheet)", range(info.channels), key=f"{key}_units",
                           format_func=_unit_format(loaded, layer), max_selections=8)
    objective = _objective_picker(loaded, key, layer)
    return [Target(layer, int(u), objective) for u in units]


def chart_click(unit_key: str, chart_key: str) -> None:
    """A click on a bar of the chart drawn with ``chart_key`` makes that bar's channel the unit (a new click
    only, not the one the chart still stores)."""
    click_key = f"{unit_key}_last_click"
    chart = st.session_state.get(chart_key)
    if chart and chart.selection.points:
        clicked = int(chart.selection.points[0]["x"])
        if clicked != st.session_state.get(click_key):
            st.session_state[click_key] = st.session_state[unit_key] = clicked


def compose_picker(loaded: LoadedModel, key: str, target: Target) -> list[Target]:
    """"Minus another unit" of the same layer (with its weight) and "diversity (N images)": the rows to run, one
    per image (:mod:`deepvis.objectives`)."""
    info = loaded.layer(target.layer)
    minus, weight_col, images, spread = st.columns([3, 2, 2, 2], vertical_alignment="bottom")
    other = minus.number_input("minus another unit (−1: none)", -1, info.channels - 1, value=-1, key=f"{key}_minus",
                               help="Subtract another unit of this layer: what this unit sees and that one does not.")
    weight = weight_col.number_input("its weight", 0.0, 5.0, 0.5, 0.1, key=f"{key}_minus_w")
    count = images.number_input("diversity (N images)", 1, 6, 1, key=f"{key}_div_n",
                                help="N images of the objective, each from its own seed, pushed apart by a diversity "
                                     "term on this layer's Gram matrices (Olah et al. 2017); 1: off.")
    strength = spread.number_input("diversity weight", 0.1, 10.0, 3.0, 0.1, key=f"{key}_div_w")
    if other >= 0 and weight > 0:
        target = Target(target.layer, target.unit, target.objective, target.position,
                        terms=(Term(-weight, target.layer, "unit", unit=int(other), objective=target.objective),))
    return [target] if count < 2 else with_diversity(target, strength, int(count))
