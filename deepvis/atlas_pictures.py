"""The atlas's pictures: each unit's top-k crops and its optimized image, written into the bundle.

Conventions
-----------
* ``crops/<layer>/<unit>.jpg``: the unit's top-k receptive-field crops (:func:`deepvis.units.top_crops`, the
  part of the network's view the position of its maximum sees), :data:`CROP` px each, side by side in rank
  order.  A file that can no longer be read gives a grey crop.
* ``optimized/<layer>/<unit>.npz``: the unit's best image from :func:`deepvis.optimize.optimize` (``x``
  float32 ``(S, S, C)`` in the optimizer's pixel space, ``objective``, ``mean``: the fields of
  :class:`deepvis.patterns.Pattern`, so any display can be drawn from it); beside it ``<unit>.png``, the image
  scaled about zero, and ``<unit>.field.png``, the part its centre neuron sees (:func:`deepvis.patterns.field_of`).
* **Compact** bundles (``compact=True``, for sharing and for shipping in a package) keep no float pixels and
  only the part each unit sees: ``<unit>.field.jpg`` (quality :data:`JPEG_QUALITY`, full colour resolution:
  WebP's halved colour resolution blurs the pixel-level colours of an unregularized image) and ``<unit>.json``
  (objective, mean, the field's ``box`` ``(top, left, bottom, right)`` and the image's ``size``), written last.
  Outside its field a neuron's image gets no gradient from the objective, only the regularizers' leftovers,
  and those pixels (two thirds of the file on a middle layer) are not kept.  Read back, such an image is the
  field's 8-bit display (scaled about zero) at its place, zero (grey) elsewhere; :func:`field_only` says so.
* The units of one layer are optimized :data:`BATCH` at a time in one run (in this process or on Ray workers);
  each batch is written when it ends and a rerun skips the units whose files exist.
* What made the images (preset name, θ, seed, size) is the manifest's ``"optimize"`` entry.
"""

from __future__ import annotations

import io
import json
from collections import OrderedDict
from collections.abc import Callable, Generator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from deepvis import optimize as opt
from deepvis import patterns, receptive
from deepvis.atlas_bundle import write_atomic
from deepvis.index import read_view
from deepvis.models import LoadedModel
from deepvis.progress import Progress
from deepvis.render import jpeg_bytes, png_bytes
from deepvis.settings import Settings
from deepvis.targets import Target

CROP = 96  # px of one top-k crop in the bundle
BATCH = 16  # units optimized together
VIEWS = 256  # decoded photos kept while cropping (each unit's top-k share many)
JPEG_QUALITY = 90


def crops_path(out: Path, layer: str, unit: int) -> Path:
    return out / "crops" / layer / f"{unit}.jpg"


def optimized_path(out: Path, layer: str, unit: int) -> Path:
    return out / "optimized" / layer / f"{unit}.npz"


def has_optimized(out: Path, layer: str, unit: int) -> bool:
    """Whether the bundle holds the unit's optimized image (full or compact)."""
    path = optimized_path(out, layer, unit)
    return path.is_file() or path.with_suffix(".json").is_file()


def picture_suffix(out: Path, layer: str, unit: int) -> str:
    """``.png`` or ``.jpg``: how the unit's optimized image and its field are stored for viewing."""
    return ".jpg" if optimized_path(out, layer, unit).with_suffix(".json").is_file() else ".png"


def _jpeg(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    return buffer.getvalue()


def _write(path: Path, data: bytes) -> None:
    write_atomic(path, data)


def write_crops(loaded: LoadedModel, out: Path, layers: dict[str, list[int]], k: int,
                top: Callable) -> Generator[Progress, None, int]:
    """Every unit's strip of top-k crops (module docstring); ``top(layer, unit, k)`` gives its hits.  Yields
    :class:`Progress` in units; returns how many strips it wrote now."""
    views: OrderedDict[str, np.ndarray | None] = OrderedDict()

    def view(path: str) -> np.ndarray | None:
        if path in views:
            views.move_to_end(path)
            return views[path]
        found = read_view(path, loaded)
        views[path] = None if isinstance(found, str) else found
        if len(views) > VIEWS:
            views.popitem(last=False)
        return views[path]

    total = sum(len(units) for units in layers.values())
    done = written = 0
    yield Progress(0, total, detail="crops")
    for layer, units in layers.items():
        for unit in units:
            path = crops_path(out, layer, unit)
            if not path.is_file():
                strip = []
                for hit in top(layer, unit, k):
                    picture = view(hit.path)
                    if picture is None:
                        strip.append(np.full((CROP, CROP, 3), receptive.PAD, np.uint8))
                        continue
                    part = receptive.crop(picture, receptive.field(loaded, layer, hit.y, hit.x, clip=False))
                    sharp = max(part.shape[:2]) * 4 <= CROP  # an early layer's few pixels: shown as pixels
                    strip.append(np.asarray(Image.fromarray(part).convert("RGB").resize(
                        (CROP, CROP), Image.Resampling.NEAREST if sharp else Image.Resampling.BILINEAR)))
                if strip:
                    _write(path, jpeg_bytes(np.concatenate(strip, axis=1), quality=90))
                    written += 1
            done += 1
            if done % 32 == 0 or done == total:
                yield Progress(done, total, detail="crops")
    return written


def optimize_units(loaded: LoadedModel, layer: str, units: Sequence[int], settings: Settings, seed: int,
                   size: int) -> list[tuple[int, np.ndarray, float, tuple[float, ...]]]:
    """One batch: ``(unit, best x, best objective, mean)`` per unit (the centre neuron of a map's channel, as
    pattern mode; the unit itself in a vector layer)."""
    record = opt.run(loaded, [Target(layer, int(u)) for u in units], settings, seed=seed, size=size)
    return [(int(u), row.best_x, float(row.best_objective), tuple(row.mean)) for u, row in zip(units, record.rows)]


def save_optimized(loaded: LoadedModel, out: Path, layer: str, size: int,
                   rows: Sequence[tuple[int, np.ndarray, float, tuple[float, ...]]], compact: bool = False) -> None:
    """Write a batch's images (module docstring); the ``.npz`` (or the compact ``.json``) last, so a unit is done
    once it exists."""
    for unit, x, objective, mean in rows:
        found = patterns.Pattern(np.asarray(x, np.float32), objective, mean)
        path = optimized_path(out, layer, unit)
        box = patterns.field_of(loaded, Target(layer, unit), size)
        if compact:
            _write(path.with_suffix(".field.jpg"), _jpeg(patterns.shown(found, box)))
            _write(path.with_suffix(".json"), json.dumps({"objective": objective, "mean": list(mean),
                                                          "box": list(box), "size": size}).encode())
            continue
        _write(path.with_suffix(".png"), png_bytes(patterns.shown(found)))
        _write(path.with_suffix(".field.png"), png_bytes(patterns.shown(found, box)))
        buffer = io.BytesIO()
        np.savez(buffer, x=found.x, objective=objective, mean=np.asarray(mean))
        _write(path, buffer.getvalue())


def load_optimized(out: str | Path, layer: str, unit: int) -> patterns.Pattern | None:
    """A unit's optimized image from the bundle (a compact one as its 8-bit display, centred on zero), or None
    when it has none."""
    path = optimized_path(Path(out), layer, unit)
    try:
        with np.load(path) as data:
            return patterns.Pattern(data["x"].astype(np.float32), float(data["objective"]),
                                    tuple(float(v) for v in data["mean"]))
    except (OSError, ValueError, KeyError):
        pass
    try:
        made = json.loads(path.with_suffix(".json").read_text())
        mean = tuple(float(v) for v in made["mean"])
        if "box" not in made:  # a compact bundle that kept the whole image
            shown = np.asarray(Image.open(path.with_suffix(".jpg")).convert("RGB"), np.float32)
            return patterns.Pattern(shown - 127.5, float(made["objective"]), mean)
        field = np.asarray(Image.open(path.with_suffix(".field.jpg")).convert("RGB"), np.float32) - 127.5
        top, left, bottom, right = (int(v) for v in made["box"])
        size = int(made["size"])
        if field.shape[:2] != (bottom - top, right - left):
            return None
        x = np.zeros((size, size, 3), np.float32)
        inner = field[max(0, -top):field.shape[0] - max(0, bottom - size),
                      max(0, -left):field.shape[1] - max(0, right - size)]
        x[max(0, top):max(0, top) + inner.shape[0], max(0, left):max(0, left) + inner.shape[1]] = inner
        return patterns.Pattern(x, float(made["objective"]), mean)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def field_only(out: str | Path, layer: str, unit: int) -> bool:
    """Whether the bundle kept only the part of the unit's image its centre neuron sees (compact bundles)."""
    try:
        return "box" in json.loads(optimized_path(Path(out), layer, unit).with_suffix(".json").read_text())
    except (OSError, ValueError):
        return False


def write_optimized(loaded: LoadedModel, out: Path, layers: dict[str, list[int]], settings: Settings, seed: int,
                    size: int, batch: int = BATCH, run_jobs: Callable | None = None, compact: bool = False
                    ) -> Generator[Progress, None, int]:
    """Every unit's optimized image, the missing ones in batches of ``batch`` units of one layer; in this
    process, or by ``run_jobs(work, jobs)`` (Ray workers, :func:`deepvis.atlas_ray.run_jobs`); yields
    :class:`Progress` in units; returns how many it made now."""
    jobs = []
    for layer, units in layers.items():
        missing = [u for u in units if not has_optimized(out, layer, u)]
        jobs += [(len(jobs), layer, missing[i:i + batch]) for i in range(0, len(missing), batch)]
    total = sum(len(units) for units in layers.values())
    done = total - sum(len(units) for _, _, units in jobs)
    yield Progress(done, total, resumed=True, detail="optimized images")
    if run_jobs is None:
        results = ((number, optimize_units(loaded, layer, units, settings, seed, size))
                   for number, layer, units in jobs)
    else:
        results = run_jobs(optimize_units, [(n, layer, units, settings, seed, size) for n, layer, units in jobs])
    made = 0
    try:
        for number, rows in results:
            _, layer, units = jobs[number]
            save_optimized(loaded, out, layer, size, rows, compact)
            made += len(rows)
            done += len(rows)
            yield Progress(done, total, detail="optimized images")
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()
    return made
