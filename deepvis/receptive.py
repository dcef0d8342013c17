"""Receptive fields: which pixels of the network's view a position of a layer's map sees.

Conventions
-----------
* Positions are ``(y, x)`` in a layer's ``(C, H, W)`` map; boxes are
  ``(top, left, bottom, right)`` in pixels of the network's ``(S, S)`` view
  (:func:`deepvis.images.model_view`), bottom and right exclusive, clipped to the view.
* **The effective receptive field** (Luo et al. 2016, *Understanding the Effective
  Receptive Field in Deep CNNs*): the theoretical field of a deep node of a modern
  network covers the whole view (every position of Lite0's ``_blocks.9`` sees all
  224 × 224 pixels), so a crop of it would be the whole photo.  What a position
  mostly sees is where the gradient is: the gradient mass
  ``|d Σ_c act[c, y0, x0] / d input|`` of the map's centre position ``(y0, x0)``,
  summed over three seeded random inputs, is summed over rows and over columns,
  and the box keeps the middle :data:`MASS` of each (trimming equal mass from both
  ends).  Found by gradients, so any graph node works without arithmetic over kernel
  sizes, strides and paddings.  (Lite0 at 224 px: ``_blocks.3`` 21 px,
  ``_blocks.5`` 40 px, ``_blocks.9._swish_1`` 115 px wide.)
  Position ``(y, x)`` sees that box shifted by ``((y - y0)·S/H, (x - x0)·S/W)``
  (the map's stride), then clipped.  A node after global pooling (squeeze-excitation,
  logits) sees the whole view, and so does a vector layer.
* One box per (model, layer, size), cached.  The shared model is not touched: the
  pass is a graph-module forward (:func:`deepvis.activations.capture`).
"""

from __future__ import annotations

import threading
import weakref

import numpy as np
import torch

from deepvis.errors import DeepvisError
from deepvis.activations import capture
from deepvis.images import normalize
from deepvis.models import LoadedModel

Box = tuple[int, int, int, int]
MASS = 0.9  # the share of the gradient mass the box keeps, along each axis
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def centre_field(loaded: LoadedModel, layer: str, size: int | None = None) -> tuple[Box, tuple[int, int]]:
    """The box the centre position of ``layer``'s map sees, and the map's ``(H, W)`` (module docstring)."""
    size = size or loaded.spec.input_size
    with _LOCK:
        cached = _CACHE.setdefault(loaded.module, {}).get((layer, size))
    if cached is not None:
        return cached
    mass = np.zeros((size, size), dtype=np.float64)
    shape: tuple[int, int] = (1, 1)
    for seed in range(3):
        generator = torch.Generator().manual_seed(seed)
        pixels = torch.rand(1, 3, size, size, generator=generator) * 255
        inputs = normalize(pixels, loaded.spec.normalization).to(loaded.device).requires_grad_(True)
        with torch.enable_grad():
            act = capture(loaded.module, inputs, layer, keep_graph=True)[layer]
            if act.dim() != 4:
                return _remember(loaded, layer, size, ((0, 0, size, size), (1, 1)))
            shape = (act.shape[2], act.shape[3])
            (grad,) = torch.autograd.grad(act[0, :, shape[0] // 2, shape[1] // 2].sum(), inputs)
        mass += grad[0].abs().sum(dim=0).double().cpu().numpy()
    if not mass.sum() > 0:  # every path dead on all three inputs: fall back to the whole view
        return _remember(loaded, layer, size, ((0, 0, size, size), shape))
    (top, bottom), (left, right) = _middle(mass.sum(axis=1)), _middle(mass.sum(axis=0))
    return _remember(loaded, layer, size, ((top, left, bottom, right), shape))


def _middle(profile: np.ndarray) -> tuple[int, int]:
    """``[start, stop)`` of the pixels holding the middle :data:`MASS` of ``profile``'s total."""
    share = np.cumsum(profile) / profile.sum()
    trim = (1 - MASS) / 2
    return int(np.searchsorted(share, trim)), int(np.searchsorted(share, 1 - trim)) + 1


def _remember(loaded: LoadedModel, layer: str, size: int, found: tuple[Box, tuple[int, int]]):
    with _LOCK:
        _CACHE.setdefault(loaded.module, {})[(layer, size)] = found
    return found


def field(loaded: LoadedModel, layer: str, y: int, x: int, size: int | None = None, clip: bool = True) -> Box:
    """The box position ``(y, x)`` of ``layer``'s map sees (module docstring); ``clip=False`` keeps its full
    size even where it reaches past the view's edge (:func:`crop` pads there)."""
    size = size or loaded.spec.input_size
    (top, left, bottom, right), (height, width) = centre_field(loaded, layer, size)
    if not (0 <= y < height and 0 <= x < width):
        raise DeepvisError(f"{layer}'s map is {height} x {width}; there is no position ({y}, {x}).")
    dy = round((y - height // 2) * size / height)
    dx = round((x - width // 2) * size / width)
    box = (top + dy, left + dx, bottom + dy, right + dx)
    return (max(0, box[0]), max(0, box[1]), min(size, box[2]), min(size, box[3])) if clip else box


PAD = 128  # grey where a box reaches past the view


def crop(view: np.ndarray, box: Box, fill: float = PAD) -> np.ndarray:
    """The ``(h, w, C)`` part of an ``(S, S, C)`` array inside ``box``, ``fill`` (grey) where the box leaves it."""
    top, left, bottom, right = box
    out = np.full((bottom - top, right - left, view.shape[2]), fill, dtype=view.dtype)
    height, width = view.shape[:2]
    inner = view[max(0, top):min(height, bottom), max(0, left):min(width, right)]
    out[max(0, -top):max(0, -top) + inner.shape[0], max(0, -left):max(0, -left) + inner.shape[1]] = inner
    return out
