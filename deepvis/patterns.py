"""Optimized images of units, kept on disk: the unit view's picture and pattern mode's grid.

Conventions
-----------
* **An entry** is one unit's best image from :func:`deepvis.optimize.optimize`:
  ``x`` float32 ``(H, W, 3)`` in the optimizer's pixel space (0-255 units, mean
  subtracted; :attr:`deepvis.records.RowRecord.best_x`), its best objective and the
  model's mean, so any display (:mod:`deepvis.display`) can be drawn from it.
* **Key**: the model's key (:func:`deepvis.collection.model_key`: name, weights and
  a hash of every tensor), the target (layer, unit, objective, position), every θ
  setting, the seed and the image size.  The file is
  ``<cache>/optimized/<model key>/<sha1 of the rest>.npz``; another θ or other
  weights can never be served an old image.
* Next to each ``.npz`` is a ``.png`` thumbnail (:data:`THUMB` pixels, scaled about
  zero, :mod:`deepvis.display`) for pattern mode's grid, which reads hundreds at once
  (:func:`thumbnails`).  It shows the part of the image the unit sees (:func:`field_of`:
  the neuron's effective receptive field), as the toolbox crops its lower layers' images:
  an early unit's pattern is a few pixels in the middle of a grey square.
* **Writes are atomic** (a temporary file renamed into place): an interrupted run
  leaves whole entries or none.  :func:`compute` optimizes the missing units in
  batches and writes each batch as soon as it finishes, so an interrupted pattern
  grid resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from deepvis.progress import Progress
from deepvis import collection as coll
from deepvis import optimize as opt
from deepvis import receptive
from deepvis.display import show
from deepvis.models import LoadedModel
from deepvis.render import png_bytes
from deepvis.settings import Settings
from deepvis.targets import Target

BATCH = 8
EVERY = 10  # iterations between the progress reports of a batch
THUMB = 64


@dataclass(frozen=True)
class Pattern:
    """One cached optimized image: pixels (float32 ``(H, W, 3)``, pixel space), best objective, mean."""

    x: np.ndarray
    objective: float
    mean: tuple[float, float, float]



def entry_path(loaded: LoadedModel, target: Target, settings: Settings, seed: int, size: int) -> Path:
    """Where the image of ``target`` under ``settings``, ``seed`` and ``size`` is kept (module docstring)."""
    key = json.dumps({"target": target.to_dict(), "settings": settings.to_dict(), "seed": seed, "size": size},
                     sort_keys=True)
    digest = hashlib.sha1(key.encode()).hexdigest()
    return coll.cache_dir() / "optimized" / coll.model_key(loaded) / f"{digest}.npz"


def load(loaded: LoadedModel, target: Target, settings: Settings, seed: int = 0,
         size: int | None = None) -> Pattern | None:
    """The cached image, or None when it was never computed (or its file is unreadable)."""
    path = entry_path(loaded, target, settings, seed, size or loaded.spec.input_size)
    try:
        with np.load(path) as data:
            return Pattern(data["x"].astype(np.float32), float(data["objective"]),
                           tuple(float(v) for v in data["mean"]))
    except (OSError, ValueError, KeyError):
        return None


def _write(path: Path, data: bytes) -> None:
    partial = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.partial")
    partial.write_bytes(data)
    partial.replace(path)


def field_of(loaded: LoadedModel, target: Target, size: int) -> receptive.Box:
    """The part of an optimized image its unit sees: the centre neuron's (or ``position``'s) effective receptive
    field (:mod:`deepvis.receptive`); the whole image for a channel-mean objective or a vector layer."""
    if target.objective == "channel" or len(loaded.layer(target.layer).shape) != 3:
        return (0, 0, size, size)
    _, (height, width) = receptive.centre_field(loaded, target.layer, size)  # the map's shape at this size
    y, x = target.centre_or_position(height, width)
    return receptive.field(loaded, target.layer, y, x, size)


def shown(pattern: Pattern, box: receptive.Box | None = None) -> np.ndarray:
    """The pattern as ``(h, w, 3)`` uint8, scaled about zero, cropped to ``box`` if given (the scale is the crop's)."""
    x = pattern.x if box is None else receptive.crop(pattern.x, box, fill=0.0)
    return show(x, pattern.mean)


def thumbnail(pattern: Pattern, box: receptive.Box) -> np.ndarray:
    """The ``(THUMB, THUMB, 3)`` uint8 thumbnail of pattern mode's grid: the part in ``box``, shown and resized."""
    return np.asarray(Image.fromarray(shown(pattern, box)).resize((THUMB, THUMB), Image.Resampling.BILINEAR))


def _save(path: Path, pattern: Pattern, box: receptive.Box) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, x=pattern.x, objective=pattern.objective, mean=np.asarray(pattern.mean))
    _write(path.with_suffix(".png"), png_bytes(thumbnail(pattern, box)))
    _write(path, buffer.getvalue())  # last: an entry exists once both files do


def keep(loaded: LoadedModel, record, settings: Settings, seed: int, size: int) -> int:
    """Keep every finished row of a run (a :class:`deepvis.records.RunRecord` of ``settings``, ``seed`` and
    ``size``) as its target's entry, as :func:`compute` would have made it; the number kept.  A whole layer
    optimized live becomes the layer's pattern-mode images this way, without computing them again."""
    kept = 0
    for row in record.rows:
        if row.finished:
            found = Pattern(row.best_x, float(row.best_objective), row.mean)
            _save(entry_path(loaded, row.target, settings, seed, size), found, field_of(loaded, row.target, size))
            kept += 1
    return kept


def thumbnails(loaded: LoadedModel, targets: Sequence[Target], settings: Settings, seed: int = 0,
               size: int | None = None) -> list[np.ndarray | None]:
    """Each target's ``(THUMB, THUMB, 3)`` uint8 thumbnail, or None where it is not computed yet."""
    size = size or loaded.spec.input_size
    out: list[np.ndarray | None] = []
    for target in targets:
        path = entry_path(loaded, target, settings, seed, size)
        try:
            out.append(np.asarray(Image.open(path.with_suffix(".png")).convert("RGB")) if path.exists() else None)
        except OSError:
            out.append(None)
    return out


def compute_one(loaded: LoadedModel, target: Target, settings: Settings, *, seed: int = 0,
                size: int | None = None, every: int = 10) -> Generator[float, None, Pattern]:
    """One unit's image: the cached one at once, else optimized now, yielding the fraction done every
    ``every`` iterations, then kept.  Bad targets or settings raise before anything runs."""
    size = size or loaded.spec.input_size
    cached = load(loaded, target, settings, seed, size)
    run = None if cached is not None else opt.optimize(loaded, [target], settings, seed=seed, size=size, every=every)
    return _one(loaded, target, settings, seed, size, cached, run)


def _one(loaded: LoadedModel, target: Target, settings: Settings, seed: int, size: int,
         cached: Pattern | None, run: Generator | None) -> Generator[float, None, Pattern]:
    if cached is not None:
        return cached
    last = None
    for last in run:
        yield (last.iteration + 1) / last.total
    row = last.record.rows[0]
    found = Pattern(row.best_x, float(row.best_objective), row.mean)
    _save(entry_path(loaded, target, settings, seed, size), found, field_of(loaded, target, size))
    return found


def compute(loaded: LoadedModel, targets: Sequence[Target], settings: Settings, *, seed: int = 0,
            size: int | None = None, batch: int = BATCH) -> Generator[Progress, None, list[Pattern]]:
    """Each target's image, optimizing only the ones not cached, ``batch`` at a time (module docstring).

    Yields :class:`Progress` first (cached units counted as done), every :data:`EVERY` iterations of a batch
    (``done`` unchanged) and after each batch; returns the patterns in the order of ``targets``.  Closing the
    generator abandons the batch in progress and keeps the finished ones.  Bad targets or settings raise :class:`deepvis.settings.OptimizeError` first.
    """
    size = size or loaded.spec.input_size
    opt.optimize(loaded, list(targets), settings, seed=seed, size=size)  # validates now; the generator is not run
    paths = [entry_path(loaded, t, settings, seed, size) for t in targets]
    return _compute(loaded, list(targets), settings, seed, size, max(1, int(batch)), paths)


def _compute(loaded: LoadedModel, targets: list[Target], settings: Settings, seed: int, size: int,
             batch: int, paths: list[Path]) -> Generator[Progress, None, list[Pattern]]:
    missing = [i for i, target in enumerate(targets) if load(loaded, target, settings, seed, size) is None]
    done = len(targets) - len(missing)
    yield Progress(done, len(targets))
    for start in range(0, len(missing), batch):
        chunk = missing[start:start + batch]
        last = None
        for last in opt.optimize(loaded, [targets[i] for i in chunk], settings, seed=seed, size=size, every=EVERY):
            if last.iteration + 1 < last.total:
                yield Progress(done, len(targets))  # during a batch too, so a consumer can stop it promptly
        for i, row in zip(chunk, last.record.rows):
            _save(paths[i], Pattern(row.best_x, float(row.best_objective), row.mean), field_of(loaded, targets[i], size))
        done += len(chunk)
        yield Progress(done, len(targets))
    found = [load(loaded, target, settings, seed, size) for target in targets]
    if any(p is None for p in found):  # the cache folder went away under us
        raise OSError(f"cannot read the optimized images back from {coll.cache_dir()}")
    return found
