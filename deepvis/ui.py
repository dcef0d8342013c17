"""The one module that touches Streamlit: cached loaders and shared widget groups.

Conventions
-----------
* ``shared_model`` is cached with ``st.cache_resource``: one frozen model per
  (name, weights, seed, device), shared by every session.  Nothing here or in
  the pages may modify it (see :mod:`deepvis.hooks`).
* Widget groups return plain Python values (bytes, a ``LoadedModel``) so the
  pages stay thin; every failure a person can cause becomes one ``st.error``
  line, never a traceback.
* Long runs (optimization) stream into a ``RunState`` kept in ``st.session_state``
  as each snapshot arrives, so what was made survives Stop, reruns and page
  switches; history frames are uint8 and bounded (``FrameHistory``).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence

import numpy as np
import streamlit as st
from PIL import Image

from deepvis import optimize as opt
from deepvis import render
from deepvis.backprop import ModeSupport, mode_support
from deepvis.charts import PALETTE
from deepvis.history import FrameHistory, RunState, stream
from deepvis.graph import groups
from deepvis.images import SAMPLE_NAMES, ImageDecodeError, decode_image, sample_bytes
from deepvis.models import DEFAULT_MODEL, REGISTRY, LoadedModel, ModelError, default_device, load_model

SOURCES = ("Sample photo", "Upload", "Camera")


@st.cache_resource(show_spinner="Loading the model (once for every session)…", max_entries=4)
def shared_model(name: str, weights: str, seed: int, device: str) -> LoadedModel:
    return load_model(name, weights, device, seed)


def model_sidebar() -> LoadedModel:
    """Sidebar picker for model and weights; returns the shared model (falls back to the default).

    Every page calls this first thing (the widgets keep their state across pages
    through their keys).  It is not drawn by the router because AppTest re-runs
    only the page script on reruns under ``st.navigation``.
    """
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


def image_input(key: str = "image") -> tuple[bytes, str] | None:
    """Sample / upload / camera picker; returns ``(bytes, label)`` or ``None`` while nothing is chosen."""
    source = st.radio("Image source", SOURCES, horizontal=True, key=f"{key}_source")
    if source == "Sample photo":
        name = st.selectbox("Sample", SAMPLE_NAMES, key=f"{key}_sample")
        return sample_bytes(name), f"sample: {name}"
    if source == "Upload":
        upload = st.file_uploader("Upload a photo", type=None, key=f"{key}_upload",
                                  help="JPEG, PNG, GIF, WebP, BMP or TIFF; large photos are scaled down.")
    else:
        upload = st.camera_input("Take a photo", key=f"{key}_camera")
    if upload is None:
        st.info("Choose a file or take a photo to begin." if source == "Upload" else "Take a photo to begin.")
        return None
    return upload.getvalue(), upload.name


def decoded_image(data: bytes) -> Image.Image | None:
    """Decode with a one-line ``st.error`` on failure (the session keeps working)."""
    try:
        return decode_image(data)
    except ImageDecodeError as exc:
        st.error(f"Cannot use this file: {exc}")
        return None


def show_png(image: np.ndarray, caption: str | None = None, width: int | str = "content") -> None:
    """Show a uint8 image losslessly (PNG, never JPEG)."""
    from deepvis.render import png_bytes

    st.image(png_bytes(image), caption=caption, output_format="PNG", width=width)


@st.cache_resource(show_spinner=False, max_entries=8)
def _mode_support(name: str, weights: str, seed: int, device: str) -> ModeSupport:
    loaded = shared_model(name, weights, seed, device)
    return mode_support(loaded.module, loaded.spec.input_size)


def backprop_modes(loaded: LoadedModel) -> ModeSupport:
    """Which backward modes this network allows (one dry pass per model, cached)."""
    return _mode_support(loaded.spec.name, loaded.weights, loaded.seed, str(loaded.device))


# --- Optimization and Comparison pages (issues 3 and 4) ------------------------------------------------------
# Keys: every widget group takes a ``key`` prefix and keeps its values in st.session_state under
# ``{key}_...`` so that a saved experiment can be put back into the widgets (see ``apply_experiment``).

CUSTOM = "custom"


def _init(key: str, value: object) -> None:
    if key not in st.session_state:
        st.session_state[key] = value


def _layer_key(loaded: LoadedModel, key: str) -> str:
    return f"{key}_layer_{loaded.spec.name}"


def _group_chosen(loaded: LoadedModel, key: str) -> None:
    """A new block was chosen: show its last rectified layer (else its last layer)."""
    members = groups(loaded.layers)[st.session_state[f"{key}_group_{loaded.spec.name}"]]
    st.session_state[_layer_key(loaded, key)] = next(
        (i.name for i in reversed(members) if i.rectified and i.is_spatial and i.shape[1] > 1), members[-1].name)


def layer_picker(loaded: LoadedModel, key: str, default: str, side_by_side: bool = True) -> str:
    """Block/stage, then a layer of it (both searchable by typing); returns the layer's node name.

    Each layer reads ``_swish_1 — ReLU6 after depthwise conv 5×5 → batch norm · 672 × 14 × 14`` and its full
    node name is shown under the pickers.  A stored module path (``_blocks.9``) becomes its output node.
    ``side_by_side=False`` stacks the two pickers (for a narrow column).
    """
    layer_key, group_key = _layer_key(loaded, key), f"{key}_group_{loaded.spec.name}"
    by_group = groups(loaded.layers)
    try:
        current = loaded.layer(st.session_state.get(layer_key, default))
    except ValueError:
        current = loaded.layer(default)
    st.session_state[layer_key] = current.name
    st.session_state[group_key] = current.group
    left, right = st.columns([1, 2]) if side_by_side else (st.container(), st.container())
    left.selectbox("Block", list(by_group), key=group_key, on_change=_group_chosen, args=(loaded, key),
                   format_func=lambda g: f"{g} · {len(by_group[g])} layers",
                   help="Blocks and stages in the order the network computes them.")
    members = {info.name: info for info in by_group[st.session_state[group_key]]}
    name = right.selectbox("Layer (type to search)", list(members), key=layer_key,
                           format_func=lambda n: f"{members[n].short_name} — {members[n].description}",
                           help="Every operation of the traced forward graph. Rectified layers (after a "
                                "ReLU/ReLU6) show the sparse maps of the paper's live view.")
    st.caption(f"Layer `{name}` · {members[name].description}")
    return name


def _class_names(loaded: LoadedModel, layer: str) -> Sequence[str] | None:
    return opt.class_names(loaded, layer)


def _unit_format(loaded: LoadedModel, layer: str) -> Callable[[int], str]:
    classes = _class_names(loaded, layer)
    return (lambda i: f"{i} · {classes[i]}") if classes else str


def _default_unit(loaded: LoadedModel, layer: str) -> int:
    classes = _class_names(loaded, layer)
    try:
        return opt.resolve_unit(loaded, layer, "flamingo") if classes else 0
    except ValueError:
        return 0


def _objective_picker(loaded: LoadedModel, key: str, layer: str) -> str:
    if not loaded.layer(layer).is_spatial:
        return "neuron"
    _init(f"{key}_objective", "neuron")
    return st.radio("Objective (maximized)", opt.OBJECTIVES, key=f"{key}_objective", horizontal=True,
                    format_func={"neuron": "one neuron (centre)", "channel": "channel mean"}.get,
                    help="One activation at the centre of the channel's map, or the mean of the whole map.")


def target_picker(loaded: LoadedModel, key: str) -> opt.Target:
    """Layer + unit (a class by name on the logits layer) + objective -> one ``opt.Target``."""
    layer = layer_picker(loaded, key, loaded.logits_layer, side_by_side=False)
    info = loaded.layer(layer)
    if _class_names(loaded, layer):
        if st.session_state.get(f"{key}_class") not in range(info.channels):
            st.session_state[f"{key}_class"] = _default_unit(loaded, layer)
        unit = st.selectbox("Class (type to search)", range(info.channels), key=f"{key}_class",
                            format_func=_unit_format(loaded, layer))
    else:
        if st.session_state.get(f"{key}_unit") not in range(info.channels):
            st.session_state[f"{key}_unit"] = 0
        noun = "Channel" if info.is_spatial else "Unit"
        unit = st.number_input(f"{noun} (0 – {info.channels - 1})", 0, info.channels - 1, key=f"{key}_unit")
    return opt.Target(layer, int(unit), _objective_picker(loaded, key, layer))


def target_name(loaded: LoadedModel, target: opt.Target) -> str:
    """``flamingo (class 130 of _fc)`` or ``_blocks.5 channel 12 · centre neuron`` (titles, sheet rows)."""
    classes = _class_names(loaded, target.layer) if target.layer in {i.name for i in loaded.layers} else None
    if classes:
        return f"{classes[target.unit]} (class {target.unit} of {target.layer})"
    if len(loaded.layer(target.layer).shape) == 1:
        return f"{target.layer} unit {target.unit}"
    return f"{target.layer} channel {target.unit} · {'centre neuron' if target.objective == 'neuron' else 'mean'}"


def units_picker(loaded: LoadedModel, key: str) -> list[opt.Target]:
    """Layer + several units (classes on the logits layer) -> one ``opt.Target`` per unit (sheet rows)."""
    layer = layer_picker(loaded, key, loaded.logits_layer, side_by_side=False)
    info = loaded.layer(layer)
    chosen = [u for u in st.session_state.get(f"{key}_units", []) if u in range(info.channels)][:8]
    if not chosen:
        classes = _class_names(loaded, layer)
        chosen = ([opt.resolve_unit(loaded, layer, n) for n in ("flamingo", "strawberry", "goldfish") if n in classes]
                  if classes else []) or list(range(min(3, info.channels)))
    st.session_state[f"{key}_units"] = chosen
    units = st.multiselect("Units (rows of the sheet)", range(info.channels), key=f"{key}_units",
                           format_func=_unit_format(loaded, layer), max_selections=8)
    objective = _objective_picker(loaded, key, layer)
    return [opt.Target(layer, int(u), objective) for u in units]


def preset_of(settings: opt.Settings) -> int | str:
    """The Table 1 row these settings equal, else ``"custom"``."""
    return next((n for n, p in opt.PRESETS.items() if p == settings), CUSTOM)


def settings_name(settings: opt.Settings) -> str:
    """``Table 1 row 3``, ``Table 1 row 3, 200 it`` (only the iterations changed) or ``custom``."""
    found = preset_of(settings)
    if found != CUSTOM:
        return opt.PRESET_NAMES[found]
    for number, preset in opt.PRESETS.items():
        if preset.replace(steps=settings.steps) == settings:
            return f"{opt.PRESET_NAMES[number]}, {settings.steps} it"
    return "custom"


def set_settings(key: str, settings: opt.Settings) -> None:
    """Put ``settings`` into the widgets of ``settings_editor(key)`` (call before they are drawn, or in a callback)."""
    for name, value in settings.to_dict().items():
        st.session_state[f"{key}_{name}"] = value
    st.session_state[f"{key}_preset"] = preset_of(settings)


def _read_settings(key: str) -> opt.Settings:
    return opt.Settings(**{theta.name: st.session_state[f"{key}_{theta.name}"] for theta in opt.THETA})


def _preset_chosen(key: str) -> None:
    chosen = st.session_state[f"{key}_preset"]
    if chosen != CUSTOM:
        set_settings(key, opt.preset(chosen))


def _theta_edited(key: str) -> None:
    try:
        st.session_state[f"{key}_preset"] = preset_of(_read_settings(key))
    except ValueError:
        st.session_state[f"{key}_preset"] = CUSTOM


def _theta_widget(key: str, theta: opt.Theta, explain: bool) -> None:
    """One θ row as a widget of its kind (see :data:`deepvis.settings.THETA`), with its help text."""
    common = dict(key=f"{key}_{theta.name}", on_change=_theta_edited, args=(key,), help=None if explain else theta.help)
    if theta.enabled_by is not None:
        other, value = theta.enabled_by
        common["disabled"] = st.session_state[f"{key}_{other}"] != value
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


def settings_editor(key: str, default: int = 3, explain: bool = True) -> opt.Settings | None:
    """A Table 1 preset selector and every θ; returns the settings, or ``None`` after one ``st.error`` line.

    Choosing a preset fills in its θ; editing any θ turns the selector to "custom" (or to the preset it
    now equals).  ``explain`` prints each θ's one-line explanation under it (otherwise it is the tooltip).
    """
    if f"{key}_preset" not in st.session_state or any(f"{key}_{t.name}" not in st.session_state for t in opt.THETA):
        set_settings(key, opt.preset(default))
    st.selectbox("Settings", (*opt.PRESETS, CUSTOM), key=f"{key}_preset", on_change=_preset_chosen, args=(key,),
                 format_func=lambda p: opt.PRESET_NAMES.get(p, "custom θ"),
                 help="The paper's Table 1 rows (row 3 made most of its images), or your own θ.")
    box = st.container() if explain else st.expander("Edit θ")
    with box:
        grid = st.columns(2) if explain else [st.container()]
        for i, theta in enumerate(opt.THETA):
            with grid[i * len(grid) // len(opt.THETA)]:
                _theta_widget(key, theta, explain)
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


def column_name(index: int, settings: opt.Settings | None) -> str:
    """``A · Table 1 row 3``, ``B · custom``, … (the header and legend name of comparison column ``index``)."""
    return f"{chr(ord('A') + index)} · {settings_name(settings) if settings else 'invalid settings'}"


def run_live(key: str, start: Callable[[], Generator[opt.Snapshot, None, None]],
             draw: Callable[[opt.Snapshot], None], names: Sequence[str], history: FrameHistory | None = None,
             experiment: opt.Experiment | None = None, **extra: object) -> RunState | None:
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


def frame_view(image: np.ndarray, stretch: bool, min_size: int = 224) -> np.ndarray:
    """What the pages show of a uint8 image: optionally contrast-stretched, small images enlarged (nearest)."""
    from deepvis.render import upscale

    shown = render.contrast_stretch(image) if stretch else image
    return upscale(shown, min_size, smooth=False) if max(shown.shape[:2]) < min_size else shown


def summary_rows(record: opt.RunRecord, names: Sequence[str]) -> list[dict]:
    """Per row: final and best objective, best iteration, first argmax iteration, final norm and std."""
    return [{"setting": name, "final objective": row.final, "best objective": row.best_objective,
             "best iteration": row.best_step, "argmax from": row.argmax_step, "final norm": float(row.norms[-1]),
             "final std": float(row.stds[-1]), "iterations": row.steps_done}
            for row, name in zip(record.rows, names)]


def sheet_image(images: np.ndarray, row_names: Sequence[str], col_names: Sequence[str], stretch: bool) -> np.ndarray:
    """Rows x columns of ``(R*C, H, W, 3)`` uint8 images (row-major) as one labelled image (small ones enlarged)."""
    shown = np.stack([frame_view(image, stretch, min_size=128) for image in images])
    return render.compose_sheet(shown, len(row_names), len(col_names), row_names, col_names)


def apply_experiment(key: str, experiment: opt.Experiment) -> None:
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
        set_settings(f"{key}_s{j}", settings)
    st.session_state[f"{key}_seed"] = experiment.seed
    size = experiment.size or REGISTRY.get(experiment.model, REGISTRY[DEFAULT_MODEL]).input_size
    st.session_state[f"{key}_size_{experiment.model}"] = size


def _experiment_uploaded(key: str) -> None:
    upload = st.session_state.get(f"{key}_upload")
    st.session_state.pop(f"{key}_load_error", None)
    if upload is None:
        return
    try:
        experiment = opt.Experiment.from_json(upload.getvalue())
        if not 2 <= len(experiment.settings) <= 6:
            raise ValueError(f"A comparison has 2 to 6 settings; this file has {len(experiment.settings)}.")
        if len({t.layer for t in experiment.targets}) > 1 or len({t.objective for t in experiment.targets}) > 1:
            raise ValueError("The units of a sheet must share one layer and one objective.")
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
