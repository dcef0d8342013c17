"""The shared model: one frozen network per (name, weights, seed, device), the sidebar that picks it, and
which backward modes it allows.

Conventions
-----------
* ``shared_model`` is cached with ``st.cache_resource``: every session gets the same
  object.  Nothing in the app may modify it (see :mod:`deepvis.graph`).
* Every page calls :func:`model_sidebar` first thing (the widgets keep their state
  across pages through their keys).  It is not drawn by the router because AppTest
  re-runs only the page script on reruns under ``st.navigation``.
* The sidebar offers the server's own networks first (the models files named by
  ``streamlit run streamlit_app.py -- --models FILE`` and ``DEEPVIS_MODELS``; see
  :mod:`deepvis.models_file`), then the registry.  The browser only ever picks one of
  these names: it can never name code to import.
* A user's network takes its configured weights, a seeded random init or a state dict
  uploaded in the sidebar (``.safetensors``/``.pt``/``.pth``, at most
  :data:`MAX_UPLOAD_MB`, read with ``weights_only``); an upload is named
  ``upload:<sha256 prefix>``, so the cache keys on its content.
* Anything that cannot be loaded gives one ``st.error`` line and the session goes on: a
  bad upload falls back to the configured weights, a network that cannot be built (or
  registry weights that cannot be had) to the embedded EfficientNet-Lite0.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path

import streamlit as st

from deepvis.app import script_paths
from deepvis.backprop import ModeSupport, mode_support
from deepvis.checkpoints import WEIGHT_SUFFIXES, read_state_dict
from deepvis.errors import DeepvisError, one_line
from deepvis.models import DEFAULT_MODEL, REGISTRY, WEIGHT_CHOICES, LoadedModel, ModelError, default_device
from deepvis.models_file import Description, register, user_networks
from deepvis.networks import load

MAX_UPLOAD_MB = 200
UPLOAD = "upload:"
_UPLOADS: OrderedDict[str, tuple[str, bytes]] = OrderedDict()  # sha256 prefix -> (file name, bytes); the newest 4


def _networks() -> dict[str, Description]:
    files = script_paths("--models")
    return register(files) if files else user_networks()


def own_networks() -> dict[str, Description]:
    """The server's own networks by name; one ``st.error`` line (and none) when a models file is bad."""
    try:
        return _networks()
    except DeepvisError as exc:
        st.error(one_line(exc))
        return {}


def offered(name: str) -> bool:
    """Whether this server offers the network ``name`` (the registry's, or one of its own)."""
    try:
        return name in REGISTRY or name in _networks()
    except DeepvisError:
        return False


@st.cache_resource(show_spinner="Loading the model (once for every session)…", max_entries=4)
def shared_model(name: str, weights: str, seed: int, device: str) -> LoadedModel:
    if name not in REGISTRY and name not in user_networks():
        raise ModelError(f"{name} is not a network this server offers")
    if weights.startswith(UPLOAD):
        if weights[len(UPLOAD):] not in _UPLOADS:
            raise ModelError("the uploaded weights are no longer held; upload the file again")
        filename, data = _UPLOADS[weights[len(UPLOAD):]]
        return load(name, weights, device, seed, state_dict=read_state_dict(data, filename))
    return load(name, weights, device, seed)


def _weight_labels(description: Description) -> dict[str, str]:
    configured = description.weights
    if configured not in WEIGHT_CHOICES:
        default = f"configured ({Path(configured).name})"
    else:
        default = "pretrained" if description.model.startswith("timm:") else "as built"
    return {"default": default, "random": "random init", "upload": "upload…"}


def _upload() -> str | None:
    """The uploaded state dict's weights name, or ``None`` (nothing uploaded, or one ``st.error`` line)."""
    file = st.file_uploader(f"State dict ({', '.join(WEIGHT_SUFFIXES)}; at most {MAX_UPLOAD_MB} MB)",
                            type=[s.lstrip(".") for s in WEIGHT_SUFFIXES], key="model_upload",
                            max_upload_size=MAX_UPLOAD_MB)
    if file is None:
        st.caption("Showing the configured weights until a file is uploaded.")
        return None
    if file.size > MAX_UPLOAD_MB * 2**20:
        st.error(f"{file.name} is larger than {MAX_UPLOAD_MB} MB; showing the configured weights.")
        return None
    known = st.session_state.get("model_upload_hash")
    if known is not None and known[0] == file.file_id and known[1] in _UPLOADS:
        key = known[1]  # hashed on an earlier rerun
    else:
        data = file.getvalue()
        key = hashlib.sha256(data).hexdigest()[:16]
        _UPLOADS[key] = (file.name, data)
        st.session_state["model_upload_hash"] = (file.file_id, key)
    _UPLOADS.move_to_end(key)
    while len(_UPLOADS) > 4:
        _UPLOADS.popitem(last=False)
    return UPLOAD + key


def _chosen_weights(name: str, description: Description | None) -> tuple[str, int]:
    """The weights radio (the registry's two, or a user network's three) and the init seed."""
    if description is None:
        weights = st.radio("Weights", WEIGHT_CHOICES, horizontal=True, key="model_weights",
                           format_func=lambda w: "pretrained (ImageNet)" if w == "default" else "random init",
                           help="Random weights show what an untrained network of the same shape responds to.")
    else:
        labels = _weight_labels(description)
        weights = st.radio("Weights", tuple(labels), horizontal=True, key=f"model_weights_{name}",
                           format_func=labels.get,
                           help="Your network's configured weights, a seeded random init, or a state dict "
                                "uploaded here (weights only; never a pickled model).")
        if weights == "upload":
            weights = _upload() or "default"
    seed = 0
    if weights == "random":
        seed = int(st.number_input("Init seed", 0, 2**31 - 1, 0, key="model_seed"))
    return weights, seed


def model_sidebar() -> LoadedModel:
    """Sidebar picker for model and weights; returns the shared model (falls back as the docstring says)."""
    with st.sidebar:
        st.subheader("Model")
        own = own_networks()
        names = [*own, *REGISTRY]
        if st.session_state.get("model_name") not in names:
            st.session_state.pop("model_name", None)
        name = st.selectbox("Network", names, key="model_name",
                            format_func=lambda n: own[n].title or n if n in own else REGISTRY[n].title)
        weights, seed = _chosen_weights(name, own.get(name))
        device = str(default_device())
        try:
            loaded = shared_model(name, weights, seed, device)
        except (DeepvisError, OSError) as exc:
            st.error(one_line(exc))
            loaded = _fallback(name, weights, device)
        upload = _UPLOADS.get(loaded.weights.removeprefix(UPLOAD)) if loaded.weights.startswith(UPLOAD) else None
        weights_text = f"uploaded {upload[0]}" if upload else loaded.weights
        st.caption(f"**{loaded.spec.title}** · {weights_text} weights · device **{loaded.device.type}** · "
                   f"{len(loaded.layers)} layers · input {loaded.spec.input_text}")
        if loaded.notice:
            st.info(loaded.notice)
    return loaded


def _fallback(name: str, weights: str, device: str) -> LoadedModel:
    """After a failed load: the configured weights of the same network (after a bad upload), else Lite0."""
    if weights.startswith(UPLOAD):
        try:
            loaded = shared_model(name, "default", 0, device)
            st.info("Showing the configured weights instead.")
            return loaded
        except (DeepvisError, OSError) as exc:
            st.error(one_line(exc))
    st.info("Showing the embedded EfficientNet-Lite0 instead; it works offline.")
    return shared_model(DEFAULT_MODEL, "default", 0, device)


@st.cache_resource(show_spinner=False, max_entries=8)
def _mode_support(name: str, weights: str, seed: int, device: str) -> ModeSupport:
    loaded = shared_model(name, weights, seed, device)
    return mode_support(loaded.module, loaded.spec.input_size, loaded.spec.channels)


def backprop_modes(loaded: LoadedModel) -> ModeSupport:
    """Which backward modes this network allows (one dry pass per model, cached)."""
    return _mode_support(loaded.spec.name, loaded.weights, loaded.seed, str(loaded.device))
