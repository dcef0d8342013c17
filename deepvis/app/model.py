"""The shared model: one frozen network per (name, weights, seed, device), the sidebar that picks it, and
which backward modes it allows.

Conventions
-----------
* ``shared_model`` is cached with ``st.cache_resource``: every session gets the same
  object.  Nothing in the app may modify it (see :mod:`deepvis.graph`).
* Every page calls :func:`model_sidebar` first thing (the widgets keep their state
  across pages through their keys).  It is not drawn by the router because AppTest
  re-runs only the page script on reruns under ``st.navigation``.
* Weights that cannot be had give one ``st.error`` line, and the embedded
  EfficientNet-Lite0 (which works offline) is shown instead.
"""

from __future__ import annotations

import streamlit as st

from deepvis.backprop import ModeSupport, mode_support
from deepvis.models import DEFAULT_MODEL, REGISTRY, LoadedModel, ModelError, default_device, load_model


@st.cache_resource(show_spinner="Loading the model (once for every session)…", max_entries=4)
def shared_model(name: str, weights: str, seed: int, device: str) -> LoadedModel:
    return load_model(name, weights, device, seed)


def model_sidebar() -> LoadedModel:
    """Sidebar picker for model and weights; returns the shared model (falls back to the default)."""
    with st.sidebar:
        st.subheader("Model")
        name = st.selectbox("Network", list(REGISTRY), format_func=lambda n: REGISTRY[n].title, key="model_name")
        weights = st.radio("Weights", ("default", "random"), horizontal=True, key="model_weights",
                           format_func=lambda w: "pretrained (ImageNet)" if w == "default" else "random init",
                           help="Random weights show what an untrained network of the same shape responds to.")
        seed = 0
        if weights == "random":
            seed = int(st.number_input("Init seed", 0, 2**31 - 1, 0, key="model_seed"))
        device = str(default_device())
        try:
            loaded = shared_model(name, weights, seed, device)
        except ModelError as exc:
            st.error(str(exc))
            st.info("Showing the embedded EfficientNet-Lite0 instead; it works offline.")
            loaded = shared_model(DEFAULT_MODEL, "default", 0, device)
        st.caption(f"**{loaded.spec.title}** · {loaded.weights} weights · device **{loaded.device.type}** · "
                   f"{len(loaded.layers)} layers · input {loaded.spec.input_size}px")
        if loaded.notice:
            st.info(loaded.notice)
    return loaded


@st.cache_resource(show_spinner=False, max_entries=8)
def _mode_support(name: str, weights: str, seed: int, device: str) -> ModeSupport:
    loaded = shared_model(name, weights, seed, device)
    return mode_support(loaded.module, loaded.spec.input_size)


def backprop_modes(loaded: LoadedModel) -> ModeSupport:
    """Which backward modes this network allows (one dry pass per model, cached)."""
    return _mode_support(loaded.spec.name, loaded.weights, loaded.seed, str(loaded.device))

