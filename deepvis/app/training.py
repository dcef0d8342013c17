"""The Training page's state: the run as shown, its layer, preset and step, and the live watch (which runs:
:mod:`deepvis.app.training_runs`; what is read at a step: :mod:`deepvis.app.training_data`; filling in:
:mod:`deepvis.app.training_jobs`).

Conventions
-----------
* A folder that is not a run is one ``st.error`` line and the page stops there; the run's
  own :attr:`~deepvis.run.RunView.problems` (a deleted, half-written or mismatched snapshot)
  are one ``st.warning`` line each and the page goes on.  A part of the page that fails
  anyway is one line too (:func:`guarded`): never a traceback.
* The first snapshot's network (the *reference*: layers, the pictures' folder) is built
  once per run (``st.cache_resource``).
* **Live.**  With "follow the run" on, a fragment looks at the run's files every
  :data:`LIVE_S` seconds (four ``stat`` calls per run) and reruns the page when a
  snapshot, a measure or a picture was added: new steps appear without a reload.  The
  step slider starts on the newest step with the layer's pictures (the newest step while
  none has them) and, left there, moves on as newer ones come.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from deepvis import timeline as tl
from deepvis.errors import DeepvisError, one_line
from deepvis.models import LoadedModel, default_device
from deepvis.run import MANIFEST, RunView, open_run

LIVE_S = 2.0  # seconds between two looks at a followed run's files
PRESETS = ("table1:3", "table1:1", "table1:2", "table1:4")  # the pictures' settings offered (Table 1's rows)
log = logging.getLogger(__name__)


# --- one run as shown --------------------------------------------------------------------------------------------

def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


@dataclass(frozen=True)
class Shown:
    """A run as this page shows it: the view, its reference network and the chosen layer's pictures."""

    view: RunView
    ref: LoadedModel
    pictures: tl.Pictures | None = None
    folder: Path | None = None

    @property
    def name(self) -> str:
        return self.view.name

    def fingerprint(self) -> tuple:
        """What the live watch compares: the manifest, the folder (adopted runs), measures and pictures."""
        path = self.view.path
        return (_stamp(path / MANIFEST), _stamp(path), _stamp(path / "measures"),
                _stamp(self.folder) if self.folder is not None else None)

    def with_layer(self, pictures: tl.Pictures) -> Shown:
        return Shown(self.view, self.ref, pictures, pictures.folder(self.view, self.ref))

    def step_near(self, step: int) -> int:
        """This run's step at ``step``, else the last one before it (else its first)."""
        before = [s for s in self.view.steps if s <= step]
        return before[-1] if before else self.view.steps[0]


def device() -> str:
    return str(default_device())


@st.cache_resource(show_spinner="Building the network (once per run)…", max_entries=8)
def _reference(path: str, step: int, stamp: tuple | None, device: str) -> LoadedModel:
    return open_run(path).load(step, device)


def open_shown(path: Path, what: str = "") -> Shown | None:
    """The run in ``path`` with its reference network; one ``st.error`` line (and None) when it cannot be shown,
    one ``st.warning`` line per snapshot it leaves out, one ``st.info`` line while it has no snapshot."""
    try:
        view = open_run(path)
        for problem in view.problems:
            st.warning(f"{what}{view.name}, {problem}")
        if not view.steps:
            st.info(f"{what}{path} has no complete snapshot yet; it appears here once one is written.")
            return None
        first = view.steps[0]
        ref = _reference(str(view.path), first, _stamp(view.snap(first).path), device())
    except (DeepvisError, OSError) as exc:
        st.error(f"{what}{one_line(exc)}")
        return None
    return Shown(view, ref)


@contextmanager
def guarded(what: str) -> Iterator[None]:
    """A part of the page that must not take the page down: a user's error is one ``st.error`` line; a bug is
    one line too, with its traceback in the server log."""
    try:
        yield
    except (DeepvisError, OSError) as exc:
        st.error(f"{what}: {one_line(exc)}")
    except Exception as exc:  # a bug: one line on the page, the traceback in the server log
        log.exception("the Training page's %s failed", what)
        st.error(f"{what} failed ({type(exc).__name__}: {one_line(exc)}); this is a bug, the server log has "
                 "the details")


def picture_file(folder: Path, step: int) -> Path:
    """Where a step's pictures are (:mod:`deepvis.timeline`: ``step-00000012.npz``)."""
    return folder / f"step-{step:08d}.npz"


# --- layer, pictures, step --------------------------------------------------------------------------------------

def _layer_text(ref: LoadedModel, name: str) -> str:
    info = ref.layer(name)
    return f"{name} · {info.op or info.kind} · {' × '.join(map(str, info.shape))}"


def default_layer(shown: Shown, preset: str, seed: int) -> str:
    """The first layer whose pictures exist under these settings, else the last convolution, else the
    network's own default layer."""
    root = shown.view.path / "pictures"
    if root.is_dir():
        names = {p.name for p in root.iterdir() if p.is_dir() and any(p.glob("step-*.npz"))}
        for info in shown.ref.layers:
            if tl.Pictures(info.name, preset, seed).folder(shown.view, shown.ref).name in names:
                return info.name
    convs = [i.name for i in shown.ref.layers if "conv" in i.kind.lower() and i.is_spatial]
    return convs[-1] if convs else shown.ref.default_layer


def pictures_picker(shown: Shown) -> tl.Pictures:
    """Layer, preset and seed of the pictures (sidebar); a linked layer the network lacks warns once."""
    names = [i.name for i in shown.ref.layers]
    with st.expander("Picture settings"):
        preset = st.selectbox("Preset", PRESETS, key="train_preset",
                              format_func=lambda p: f"Table 1 row {p.split(':')[1]}" +
                              (" (default)" if p == tl.PRESET else ""),
                              help="The paper's regularized gradient ascent, the same at every step, so a change "
                                   "between steps is the network's own.")
        seed = int(st.number_input("Seed", 0, 2**31 - 1, 0, key="train_seed"))
    wanted = st.session_state.pop("train_link_layer", None)
    if wanted is not None:
        try:
            st.session_state["train_layer"] = shown.ref.layer(wanted).name
        except DeepvisError:
            st.warning(f"The link's layer {wanted!r} is not a layer of {shown.name}; showing the default one.")
    if st.session_state.get("train_layer") not in names:
        st.session_state["train_layer"] = default_layer(shown, preset, seed)
    layer = st.selectbox("Layer", names, key="train_layer", format_func=lambda n: _layer_text(shown.ref, n),
                         help="Whose filters' optimized images the grid shows, and whose activations the probe "
                              "image shows.")
    return tl.Pictures(layer, preset, seed)


def _follow_history() -> None:
    """The filters' history sliders follow the step slider (until moved themselves)."""
    for key in ("train_hist_step", "train_b_hist_step"):
        st.session_state[key] = st.session_state["train_step"]


def _newest(shown: Shown) -> int:
    """The step a slider starts on: the newest with the layer's pictures, else the newest."""
    drawn = [s for s in shown.view.steps if shown.folder is not None and picture_file(shown.folder, s).exists()]
    return (drawn or shown.view.steps)[-1]


def step_slider(shown: Shown, follow: bool) -> int:
    """The step slider over the run's snapshots: the link's step once, else the newest step with pictures (the
    newest step while none has them); while following, a slider left there moves on as new steps come."""
    steps, key = shown.view.steps, "train_step"
    newest = _newest(shown)
    wanted = st.session_state.pop("train_link_step", None)
    if wanted is not None:
        if wanted in steps:
            st.session_state[key] = wanted
        else:
            st.warning(f"The link's step {wanted} is not a snapshot of {shown.name}; showing the newest one.")
    was = st.session_state.get("train_newest")
    if st.session_state.get(key) not in steps or (follow and wanted is None and st.session_state.get(key) == was):
        st.session_state[key] = newest
    st.session_state["train_newest"] = newest
    if len(steps) == 1:
        st.caption(f"One snapshot so far, at step {steps[0]}.")
        return steps[0]
    return st.select_slider("Step", steps, key=key, on_change=_follow_history,
                            help="The training step of a snapshot (as the run counts them); everything on the "
                                 "page shows the network at this step.")


def unit_from_link(channels: int) -> None:
    wanted = st.session_state.pop("train_link_unit", None)
    if wanted is None:
        return
    if wanted < channels:
        st.session_state["train_unit"] = wanted
    else:
        st.warning(f"The link's filter {wanted} does not exist here (filters 0-{channels - 1}); showing filter 0.")


# --- live -------------------------------------------------------------------------------------------------------

def fingerprint(path: Path) -> tuple:
    """What the live watch compares for a run that has no snapshot yet: its manifest and its folder."""
    return _stamp(path / MANIFEST), _stamp(path)


def watch(now: Callable[[], tuple], seen: tuple) -> None:
    """Every :data:`LIVE_S` s: rerun the page once ``now()`` differs from ``seen`` (what the page was drawn
    from: the shown runs' :meth:`Shown.fingerprint`)."""
    @st.fragment(run_every=LIVE_S)
    def fragment() -> None:
        if now() != seen:
            st.rerun()

    fragment()
