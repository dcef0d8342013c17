"""What the Training page reads at a step, kept so that the step slider redraws from memory: tiles, a
filter's history, the summary and diagnoses, the first layer, a probe image's activations.

Conventions
-----------
* A step's tiles are read from their ``.npz`` once per file version; the summary and the
  diagnoses are re-read only when the run's measures or manifest change.
* The probe image's activations at a step come from one private copy of the network per
  run whose weights are swapped in under a lock (no network is built when the slider
  moves) and are kept per (run, step, layer, image).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st
import torch

from deepvis import timeline as tl
from deepvis.activations import capture, top_predictions
from deepvis.app.training import Shown, _stamp, device, picture_file
from deepvis.diagnosis import Diagnosis, diagnose
from deepvis.models import LoadedModel
from deepvis.run import MANIFEST, RunView, open_run


@dataclass(frozen=True)
class Tiles:
    """One step's tiles of a layer ``(C, 64, 64, 3)`` and their objectives."""

    tiles: np.ndarray
    objective: np.ndarray


@st.cache_resource(show_spinner=False, max_entries=256)
def _tiles(folder: str, step: int, stamp: tuple | None) -> Tiles | None:
    found = tl.read_pictures(Path(folder), step) if stamp is not None else None
    return None if found is None else Tiles(found.tiles, found.objective)


def tiles_at(shown: Shown, step: int) -> Tiles | None:
    """The layer's tiles at ``step`` (None while not computed)."""
    return _tiles(str(shown.folder), step, _stamp(picture_file(shown.folder, step)))


def unit_history(shown: Shown, unit: int) -> list[tuple[int, np.ndarray | None, float | None]]:
    """``(step, tile, objective)`` of one filter at every step (None where not computed yet)."""
    out = []
    for step in shown.view.steps:
        found = tiles_at(shown, step)
        ok = found is not None and unit < len(found.tiles)
        out.append((step, found.tiles[unit] if ok else None, float(found.objective[unit]) if ok else None))
    return out


@st.cache_data(show_spinner=False, max_entries=32)
def _summary(_view: RunView, path: str, steps: tuple[int, ...], stamp: tuple) -> dict:
    return tl.summary(_view)


def summary(shown: Shown) -> dict:
    """:func:`deepvis.timeline.summary` of the run, re-read only when its measures or manifest change."""
    view = shown.view
    return _summary(view, str(view.path), tuple(view.steps),
                    (_stamp(view.path / MANIFEST), _stamp(view.path / "measures")))


@st.cache_data(show_spinner=False, max_entries=256)
def _diagnoses(_view: RunView, path: str, step: int, stamp: tuple) -> list[Diagnosis]:
    return diagnose(_view, at=step)


def diagnoses(shown: Shown, step: int) -> list[Diagnosis]:
    """:func:`deepvis.diagnosis.diagnose` at ``step``, re-read only when the measures or manifest change."""
    view = shown.view
    return _diagnoses(view, str(view.path), step, (tuple(view.steps), _stamp(view.path / MANIFEST),
                                                   _stamp(view.path / "measures")))


@st.cache_resource(show_spinner=False, max_entries=64)
def _first_filters(_view: RunView, _ref: LoadedModel, path: str, step: int, stamp: tuple) -> np.ndarray | None:
    found = tl.first_filters_at(_view, step)
    if found is not None:
        return found
    from deepvis.render import weight_tiles  # measures not computed yet: the reference names the convolution

    name = next(n for n, m in _ref.module.named_modules() if m is _ref.first_conv)
    return weight_tiles(_view.state_dict(step)[f"{name}.weight"].float())[0]


def first_filters(shown: Shown, step: int) -> np.ndarray | None:
    """The first convolution's filters at ``step`` as one uint8 grid."""
    stamp = (_stamp(shown.view.snap(step).path), _stamp(shown.view.path / "measures"))
    return _first_filters(shown.view, shown.ref, str(shown.view.path), step, stamp)


# --- the probe image's activations ----------------------------------------------------------------------------------

@dataclass
class _ProbeNet:
    """A private copy of a run's network whose weights are swapped per step (module docstring)."""

    loaded: LoadedModel
    probe: torch.Tensor
    lock: threading.Lock


@st.cache_resource(show_spinner=False, max_entries=4)
def _probe_net(path: str, stamp: tuple | None, probe_stamp: tuple | None, device: str) -> _ProbeNet:
    view = open_run(path)
    loaded = view.load(view.steps[0], device)
    return _ProbeNet(loaded, view.probe(loaded), threading.Lock())


def _net(shown: Shown) -> _ProbeNet:
    view = shown.view
    return _probe_net(str(view.path), _stamp(view.snap(view.steps[0]).path), _stamp(view.path / "probe.safetensors"),
                      device())


def probe_count(shown: Shown) -> int:
    return int(_net(shown).probe.shape[0])


@dataclass(frozen=True)
class ProbeView:
    """A probe image at a step: the image (uint8), the layer's activation ``(C, H, W)`` or ``(C,)`` and the
    network's top predictions (label, probability)."""

    image: np.ndarray
    activation: np.ndarray
    predictions: tuple[tuple[str, float], ...]


@st.cache_data(show_spinner=False, max_entries=64)
def _probe_view(_view: RunView, _net: _ProbeNet, path: str, step: int, stamp: tuple, layer: str,
                index: int) -> ProbeView:
    loaded = _net.loaded
    names = list(dict.fromkeys([layer, loaded.logits_layer]))
    with _net.lock:
        loaded.module.load_state_dict(_view.state_dict(step))
        found = capture(loaded.module, _net.probe[index:index + 1].to(loaded.device), names)
    mean = torch.tensor(loaded.spec.normalization.mean).view(-1, 1, 1)
    std = torch.tensor(loaded.spec.normalization.std).view(-1, 1, 1)
    pixels = (_net.probe[index] * std + mean).clamp(0, 1).mul(255).round().byte()
    image = pixels[0].numpy() if pixels.shape[0] == 1 else pixels.permute(1, 2, 0).numpy()
    logits = found[loaded.logits_layer][0].flatten()
    top = min(3, logits.numel())
    labels = list(loaded.class_names) if len(loaded.class_names) == logits.numel() else \
        [str(i) for i in range(logits.numel())]
    predictions = tuple((p.label, p.prob) for p in top_predictions(logits, labels, top))
    return ProbeView(image, found[layer][0].float().cpu().numpy(), predictions)


def probe_view(shown: Shown, step: int, layer: str, index: int) -> ProbeView:
    """Probe image ``index`` through the network at ``step``: no network is built (module docstring)."""
    return _probe_view(shown.view, _net(shown), str(shown.view.path), step, _stamp(shown.view.snap(step).path),
                       layer, index)


# --- small formatting helpers --------------------------------------------------------------------------------------

def ranges(values: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``0–2, 5``."""
    out, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            out.append(str(start) if start == v else f"{start}–{v}")
            start = None
    return ", ".join(out)


def evidence_text(evidence: dict) -> str:
    """A diagnosis's numbers in one line."""
    parts = []
    for name, value in evidence.items():
        if isinstance(value, list) and all(isinstance(v, int) for v in value):
            text = ranges(value)
        elif isinstance(value, float):
            text = "—" if math.isnan(value) else f"{value:.3g}"
        else:
            text = "—" if value is None else str(value)
        parts.append(f"{name.replace('_', ' ')} {text}")
    return " · ".join(parts)


def scalars_text(view: RunView, step: int) -> str:
    snap = view.snap(step)
    return " · ".join(f"{k} {v:.4g}" for k, v in snap.scalars.items())
