"""The URL names the unit shown: reading a link once per session, and keeping the URL in step.

Conventions
-----------
* The query parameters ``model``, ``weights``, ``layer`` and ``unit`` say which unit is
  shown.  :func:`open_link` reads them once per session, before any widget is drawn,
  and puts them into the widgets' state; :func:`write_link` keeps the URL in step
  afterwards, so a unit can be bookmarked, shared and reopened.
* A parameter that names nothing (an unknown model, a layer the model lacks, a unit
  out of range) is dropped with one ``st.warning`` line.
"""

from __future__ import annotations

import streamlit as st

from deepvis.app.model import offered
from deepvis.errors import DeepvisError
from deepvis.models import LoadedModel


def open_link(page: str) -> None:
    """Put the URL's model, weights, layer and unit into the widgets' state, once per session."""
    if st.session_state.get(f"{page}_link_read"):
        return
    st.session_state[f"{page}_link_read"] = True
    params = st.query_params
    model = params.get("model")
    if model is not None and not offered(model):
        st.warning(f"The link names an unknown model {model!r}; showing the default one.")
        return
    if model:
        st.session_state["model_name"] = model
    if params.get("weights") in ("default", "random"):
        st.session_state["model_weights"] = params["weights"]
    if params.get("layer"):
        st.session_state[f"{page}_link_layer"] = params["layer"]
    if params.get("unit", "").isdigit():
        st.session_state[f"{page}_link_unit"] = int(params["unit"])


def linked_layer(loaded: LoadedModel, page: str, layer_key: str) -> None:
    """Apply a linked layer (after the model is known); one warning if the model has no such layer."""
    wanted = st.session_state.pop(f"{page}_link_layer", None)
    if wanted is None:
        return
    try:
        st.session_state[layer_key] = loaded.layer(wanted).name
    except DeepvisError:
        st.warning(f"The link's layer {wanted!r} is not a layer of {loaded.spec.title}; showing the default one.")


def linked_unit(page: str, unit_key: str, channels: int) -> None:
    """Apply a linked unit (once the layer's channels are known); one warning if it is out of range."""
    wanted = st.session_state.pop(f"{page}_link_unit", None)
    if wanted is None:
        return
    if wanted < channels:
        st.session_state[unit_key] = wanted
    else:
        st.warning(f"The link's unit {wanted} does not exist here (units 0-{channels - 1}); showing unit 0.")


def write_link(loaded: LoadedModel, layer: str, unit: int) -> None:
    """Keep the URL on the unit shown (so it can be bookmarked, shared and reopened)."""
    wanted = {"model": loaded.spec.name, "weights": loaded.weights, "layer": layer, "unit": str(unit)}
    if {k: st.query_params.get(k) for k in wanted} != wanted:
        st.query_params.update(wanted)
