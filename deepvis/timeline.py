"""What a run's snapshots show over training: measures, every filter's optimized image, diagnoses.

Conventions
-----------
* Work is lazy and kept in the run folder (:mod:`deepvis.run`):

  * ``measures/step-00000012.json``: for every offered layer, :func:`deepvis.health.layer_health`
    on the probe batch; for every ``nn.Conv2d`` (by module path), its weight noise and norm.
  * ``pictures/<layer>-<key>/step-00000012.npz``: every unit's optimized image of one layer at one
    step (``x`` float32 ``(C, S, S, ch)`` in the optimizer's pixel space, ``objective`` ``(C,)``,
    ``mean``, and ``tiles`` uint8 ``(C, T, T, 3)``: each image cropped to its unit's receptive
    field, scaled about zero, enlarged to :data:`TILE` px).  ``key`` hashes the settings, seed
    and size (:class:`Pictures`), which are the same at every step, so a change between steps
    is the network's change, not the optimizer's: the same start image, the same θ.

* Files are written atomically; :func:`compute` fills in exactly what is missing, a step at a
  time, and an interrupted fill resumes where it stopped.
* Steps are the run's (:attr:`deepvis.run.RunView.steps`); a value not computed yet is ``None``.
* Layers are named as everywhere else (graph nodes, :mod:`deepvis.graph`).
* What the measures say in words is :mod:`deepvis.diagnosis`.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from deepvis import health
from deepvis.progress import Progress
from deepvis.run_files import RunError, RunView, write_atomic

TILE = 64  # px of a filter's tile in the grid and the history strip
PRESET = "table1:3"  # the paper's row 3 (blur scaled to the input): clear at 28 px on small CNNs
DEAD = 0.1  # a layer with at least this fraction of dead channels is named in the diagnoses


@dataclass(frozen=True)
class Pictures:
    """Which optimized images a timeline shows: one layer, one preset, seed and size at every step."""

    layer: str
    preset: str = PRESET
    seed: int = 0
    size: int | None = None  # None: the network's input side
    steps: int | None = None  # iterations; None: the preset's

    def settings(self, loaded):
        from deepvis.presets import resolve

        found = resolve(loaded, self.preset)
        return found if self.steps is None else found.replace(steps=self.steps)

    def folder(self, view: RunView, loaded) -> Path:
        size = self.size or loaded.spec.input_size
        key = json.dumps({"settings": self.settings(loaded).to_dict(), "seed": self.seed, "size": size},
                         sort_keys=True)
        slug = re.sub(r"[^A-Za-z0-9_.-]", "_", self.layer)
        return view.path / "pictures" / f"{slug}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def _step_file(step: int, suffix: str) -> str:
    return f"step-{step:08d}{suffix}"


# --- measures --------------------------------------------------------------------------------------------------

def measure(loaded, probe: torch.Tensor) -> dict[str, Any]:
    """Every offered layer's health on ``probe`` and every convolution's weight noise and norm."""
    from deepvis.activations import capture

    names = [info.name for info in loaded.layers]
    acts = capture(loaded.module, probe.to(loaded.device), names)
    layers = {name: health.layer_health(acts[name]).to_dict() for name in names if acts[name].dim() >= 2}
    convs = {}
    for path, module in loaded.module.named_modules():
        if isinstance(module, nn.Conv2d):
            convs[path] = {"noise": health.weight_noise(module.weight), "norm": health.weight_norm(module.weight),
                           "first": module is loaded.first_conv}
    return {"layers": layers, "convs": convs}


def read_measures(view: RunView, step: int) -> dict[str, Any] | None:
    try:
        return json.loads((view.path / "measures" / _step_file(step, ".json")).read_text())
    except (OSError, ValueError):
        return None


# --- pictures --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StepPictures:
    """One step's optimized images of a layer (module docstring)."""

    x: np.ndarray
    objective: np.ndarray
    mean: tuple[float, ...]
    tiles: np.ndarray


def read_pictures(folder: Path, step: int) -> StepPictures | None:
    try:
        with np.load(folder / _step_file(step, ".npz")) as data:
            return StepPictures(data["x"], data["objective"], tuple(float(v) for v in data["mean"]), data["tiles"])
    except (OSError, ValueError, KeyError):
        return None


def _tile(image: np.ndarray) -> np.ndarray:
    side = max(image.shape[:2])
    method = Image.Resampling.NEAREST if side < TILE else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(image).resize((TILE, TILE), method))


def _optimize_layer(loaded, pictures: Pictures, every: int = 25) -> Generator[float, None, StepPictures]:
    from deepvis import optimize as opt
    from deepvis.patterns import Pattern, field_of, shown
    from deepvis.targets import Target

    size = pictures.size or loaded.spec.input_size
    units = loaded.layer(pictures.layer).channels
    targets = [Target(pictures.layer, unit) for unit in range(units)]
    settings = pictures.settings(loaded)
    batch = 64 if size <= 64 else 8
    xs, objectives, mean = [], [], None
    for start in range(0, units, batch):
        last = None
        for last in opt.optimize(loaded, targets[start:start + batch], settings, seed=pictures.seed, size=size,
                                 every=every):
            yield (start + (last.iteration + 1) / last.total * len(last.record.rows)) / units
        for row in last.record.rows:
            xs.append(row.best_x)
            objectives.append(float(row.best_objective))
            mean = row.mean
    tiles = [_tile(shown(Pattern(x, o, mean), field_of(loaded, t, size))) for x, o, t in zip(xs, objectives, targets)]
    return StepPictures(np.stack(xs).astype(np.float32), np.asarray(objectives, np.float32), tuple(mean),
                        np.stack(tiles))


def _save_pictures(folder: Path, step: int, found: StepPictures) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, x=found.x, objective=found.objective, mean=np.asarray(found.mean), tiles=found.tiles)
    write_atomic(folder / _step_file(step, ".npz"), buffer.getvalue())


# --- filling in ------------------------------------------------------------------------------------------------

def missing(view: RunView, pictures: Pictures | None, loaded=None) -> list[tuple[int, str]]:
    """``(step, "measures" | "pictures")`` for everything not computed yet, in step order."""
    out = []
    folder = pictures.folder(view, loaded or view.load(view.steps[0], "cpu")) if pictures and view.steps else None
    for step in view.steps:
        if not (view.path / "measures" / _step_file(step, ".json")).exists():
            out.append((step, "measures"))
        if folder is not None and not (folder / _step_file(step, ".npz")).exists():
            out.append((step, "pictures"))
    return out


def compute(view: RunView, pictures: Pictures | None = None, device: torch.device | str | None = "cpu",
            steps: Sequence[int] | None = None) -> Generator[Progress, None, list[tuple[int, str]]]:
    """Compute and keep every missing measure (and picture of ``pictures``' layer) of the run's steps (or of
    ``steps``), a step at a time; yields :class:`Progress` in items (a step's measures, a step's pictures), the
    pictures' optimization as fractions in ``detail``; returns what it computed.  Bad layers raise first."""
    if not view.steps:
        return []
    first = view.load(view.steps[0], device)
    if pictures is not None:
        first.layer(pictures.layer)  # an unknown layer fails now, in one line
        pictures.settings(first)
    todo = [item for item in missing(view, pictures, first) if steps is None or item[0] in steps]
    return _compute(view, pictures, device, todo, first)


def _compute(view: RunView, pictures: Pictures | None, device, todo: list[tuple[int, str]], first
             ) -> Generator[Progress, None, list[tuple[int, str]]]:
    done: list[tuple[int, str]] = []
    yield Progress(0, len(todo))
    loaded, probe = None, None
    for step, kind in todo:
        if loaded is None or loaded.weights != f"step {step}":
            loaded = first if first.weights == f"step {step}" else view.load(step, device)
        if kind == "measures":
            if probe is None:
                probe = view.probe(loaded)
            found = measure(loaded, probe)
            (view.path / "measures").mkdir(exist_ok=True)
            write_atomic(view.path / "measures" / _step_file(step, ".json"), json.dumps(found).encode())
        else:
            work = _optimize_layer(loaded, pictures)
            while True:
                try:
                    fraction = next(work)
                except StopIteration as finished:
                    _save_pictures(pictures.folder(view, loaded), step, finished.value)
                    break
                yield Progress(len(done), len(todo), detail={"step": step, "kind": kind, "fraction": fraction})
        done.append((step, kind))
        yield Progress(len(done), len(todo), detail={"step": step, "kind": kind, "fraction": 1.0})
    return done


# --- reading a timeline ----------------------------------------------------------------------------------------

def summary(view: RunView, layers: Sequence[str] | None = None) -> dict[str, Any]:
    """``{"steps", "scalars", "layers": {L: {"dead", "sparsity", "mean"}}, "convs": {conv: {"noise", "norm"}}}``,
    one value per step (``None`` where not computed), for ``layers`` (default: all measured)."""
    measured = [read_measures(view, step) for step in view.steps]
    names = list(layers) if layers is not None else list(dict.fromkeys(
        name for m in measured if m for name in m["layers"]))
    convs = list(dict.fromkeys(name for m in measured if m for name in m["convs"]))

    def series(section: str, name: str, what: str) -> list:
        return [(m[section].get(name) or {}).get(what) if m else None for m in measured]

    return {"run": str(view.path), "steps": view.steps,
            "scalars": {k: [None if math.isnan(v) else v for v in values] for k, values in view.scalars().items()},
            "layers": {n: {w: series("layers", n, w) for w in ("dead", "sparsity", "mean")} for n in names},
            "convs": {c: {w: series("convs", c, w) for w in ("noise", "norm")} for c in convs},
            "first_conv": next((c for m in measured if m for c, v in m["convs"].items() if v.get("first")), None),
            "problems": list(view.problems)}


def history(view: RunView, pictures: Pictures, unit: int, loaded) -> list[tuple[int, np.ndarray | None]]:
    """One unit's tile at every step (``None`` where not computed yet)."""
    folder = pictures.folder(view, loaded)
    out = []
    for step in view.steps:
        found = read_pictures(folder, step)
        out.append((step, found.tiles[unit] if found is not None and unit < len(found.tiles) else None))
    return out


def sheet(view: RunView, pictures: Pictures, loaded, units: Sequence[int] | None = None) -> np.ndarray:
    """Filters × steps of optimized images as one labelled uint8 image (blank where not computed)."""
    from deepvis.render import compose_sheet

    folder = pictures.folder(view, loaded)
    found = [read_pictures(folder, step) for step in view.steps]
    count = loaded.layer(pictures.layer).channels
    units = list(range(count)) if units is None else list(units)
    blank = np.full((TILE, TILE, 3), 255, np.uint8)
    images = [found[s].tiles[u] if found[s] is not None else blank for u in units for s in range(len(found))]
    return compose_sheet(np.stack(images), len(units), len(found), [f"{pictures.layer} {u}" for u in units],
                         [f"step {s}" for s in view.steps])


def first_filters(loaded) -> np.ndarray:
    """The first convolution's raw filters as one uint8 grid (:func:`deepvis.render.weight_tiles`)."""
    from deepvis.render import weight_tiles

    return weight_tiles(loaded.first_conv.weight.detach().float().cpu())[0]


def first_filters_at(view: RunView, step: int) -> np.ndarray | None:
    """The first convolution's filters at ``step`` read from the snapshot alone (no network built), once that
    step's measures named the first convolution; else None."""
    from deepvis.render import weight_tiles

    measured = read_measures(view, step)
    conv = next((c for c, v in (measured or {}).get("convs", {}).items() if v.get("first")), None)
    if conv is None:
        return None
    weight = view.state_dict(step).get(f"{conv}.weight")
    return None if weight is None else weight_tiles(weight.float())[0]


__all__ = ["Pictures", "compute", "summary", "history", "sheet", "measure", "missing", "first_filters", "first_filters_at",
           "read_measures", "read_pictures", "RunError", "DEAD"]
