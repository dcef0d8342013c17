"""One unit's view: its top images from a collection, cropped to what the unit sees.

Conventions
-----------
* A unit is a channel of a layer (a graph node, :mod:`deepvis.graph`).
* A top image is a :class:`deepvis.index.Hit`: a file, the unit's maximum on the
  network's view of it (:func:`deepvis.images.model_view`) and the map position
  ``(y, x)`` of that maximum.
* Its crop is the part of the ``(S, S, 3)`` uint8 view that position's effective
  receptive field covers (:func:`deepvis.receptive.field`, unclipped: grey where the
  field reaches past the view, so the strongest position stays at the crop's
  centre), resized to a ``(CROP, CROP, 3)`` uint8 square.
* Each top image's deconvnet image (Zeiler & Fergus; :func:`deepvis.backprop.deconvnet`,
  seeded with a one at the hit's position, as the toolbox's right column shows) is
  cropped to the same box and drawn signed, scaled within the crop (``raw``: zero is grey, as the
  toolbox shows them)
  (:func:`deepvis.render.backprop_image`).  A network without a deconv rule
  (non-ReLU activations) gives saliency instead; :func:`top_backward` says which.
* A file that can no longer be read (moved or changed since it was indexed) gives
  a grey crop whose label says so; nothing raises.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from deepvis.errors import DeepvisError
from deepvis import receptive
from deepvis.backprop import backprop, mode_support
from deepvis.images import to_batch
from deepvis.index import Hit, read_view
from deepvis.models import LoadedModel
from deepvis.render import backprop_image, compose_sheet

CROP = 128
SHEET_CROP = 176  # wide enough for a label such as "#9 · 0.802 · hubble_deep_field.jpg"


def view_of(loaded: LoadedModel, path: str) -> np.ndarray | None:
    """The network's ``(S, S, 3)`` uint8 view of the file at ``path``, or None if it cannot be read now."""
    view = read_view(path, loaded)
    return None if isinstance(view, str) else view


def top_crops(loaded: LoadedModel, layer: str, hits: Sequence[Hit], size: int = CROP) -> list[np.ndarray]:
    """Each hit's receptive-field crop as a ``(size, size, 3)`` uint8 image (module docstring)."""
    crops = []
    for hit in hits:
        view = view_of(loaded, hit.path)
        if view is None:
            crops.append(np.full((size, size, 3), receptive.PAD, dtype=np.uint8))
            continue
        box = receptive.field(loaded, layer, hit.y, hit.x, clip=False)
        part = receptive.crop(view, box)
        crops.append(np.asarray(Image.fromarray(part).resize((size, size), Image.Resampling.BILINEAR)))
    return crops


def top_backward(loaded: LoadedModel, layer: str, unit: int, hits: Sequence[Hit], mode: str = "deconv",
                 size: int = CROP) -> tuple[list[np.ndarray], str]:
    """Each hit's backward image (``mode``, deconvnet by default) cropped like :func:`top_crops`, and the mode
    used (module docstring)."""
    views = [view_of(loaded, hit.path) for hit in hits]
    readable = [i for i, view in enumerate(views) if view is not None]
    out = [np.full((size, size, 3), receptive.PAD, dtype=np.uint8) for _ in hits]
    mode = mode if mode in mode_support(loaded.module, loaded.spec.input_size).modes else "saliency"
    for i in readable:  # one image at a time: each has its own seed position
        hit = hits[i]
        position = (unit, hit.y, hit.x) if len(loaded.layer(layer).shape) == 3 else unit
        batch = to_batch(views[i], loaded.spec.normalization, loaded.device)
        gradient = backprop(loaded.module, batch, layer, position, mode, "point")[0]
        box = receptive.field(loaded, layer, hit.y, hit.x, clip=False)
        part = receptive.crop(gradient.permute(1, 2, 0).cpu().numpy(), box, fill=0.0)  # zero gradient outside
        picture = backprop_image(np.ascontiguousarray(part.transpose(2, 0, 1)), "raw")  # scaled within the crop
        out[i] = np.asarray(Image.fromarray(picture).resize((size, size), Image.Resampling.BILINEAR))
    return out, mode


def hit_label(rank: int, hit: Hit, readable: bool = True) -> str:
    """``"#1 · 3.21 · chelsea.jpg"``: rank, value, file name (and a note when the file is gone)."""
    name = Path(hit.path).name
    return f"#{rank} · {hit.value:.3g} · {name}" + ("" if readable else " (unreadable now)")


def top_sheet(loaded: LoadedModel, layer: str, unit: int, hits: Sequence[Hit], cols: int = 3) -> np.ndarray:
    """A labelled sheet of the hits' crops, ``cols`` per row, best first (``(H, W, 3)`` uint8)."""
    if not hits:
        raise DeepvisError(f"{layer} unit {unit} has no indexed images")
    crops = top_crops(loaded, layer, hits, SHEET_CROP)
    rows = -(-len(crops) // cols)
    blank = np.full((SHEET_CROP, SHEET_CROP, 3), 255, dtype=np.uint8)
    cells = crops + [blank] * (rows * cols - len(crops))
    sheets = []
    for r in range(rows):
        row_hits = list(hits[r * cols:(r + 1) * cols])
        labels = [hit_label(r * cols + i + 1, h, Path(h.path).is_file()) for i, h in enumerate(row_hits)]
        labels += [""] * (cols - len(labels))
        sheets.append(compose_sheet(np.stack(cells[r * cols:(r + 1) * cols]), 1, cols, col_labels=labels))
    width = max(s.shape[1] for s in sheets)
    return np.concatenate([np.pad(s, ((0, 0), (0, width - s.shape[1]), (0, 0)), constant_values=255) for s in sheets])
