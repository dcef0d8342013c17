"""How an optimized image is shown: scaled about zero (the paper's way), plus mean, or as the network saw it.

Conventions
-----------
* In: the optimizer's float image ``x``, ``(H, W, C)`` or ``(B, H, W, C)`` with ``C`` = 3
  (RGB) or 1 (a grayscale network), in its pixel space (0-255 units with the model's
  mean subtracted, :mod:`deepvis.optimize`), and that ``mean`` (``C`` values, 0-255).
  Out: ``uint8`` RGB, ``(H, W, 3)`` or ``(B, H, W, 3)``: a gray image is shown as gray.
* ``"zero"`` (the default everywhere) — **scaled about zero**: ``x / (2·max|x|) + 0.5``
  mapped to 0-255, one ``max|x|`` per image over all channels.  Zero (the mean
  colour) is mid-grey; the strongest pixel reaches black or white.  This is how
  the authors' deep-visualization-toolbox saves its results (``saveimagescc`` with
  center 0, i.e. ``norm01c``), so a faint image is as visible as a strong one.
* ``"mean"`` — **plus mean**: ``x + mean``, stretched min-max to 0-255 from the float
  values (the toolbox's ``norm01``), so colours are the image's own, and nothing is
  posterized the way a stretch of an 8-bit image is.
* ``"clipped"`` — **as the network saw it**: ``clip(x + mean, 0, 255)`` rounded; no
  scaling, so a faint image looks faint.
* A constant image shows as mid-grey (``zero``, ``mean``).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from deepvis.errors import DeepvisError


@dataclass(frozen=True)
class Display:
    """One way of showing an optimized image."""

    name: str
    label: str
    help: str


DISPLAYS: dict[str, Display] = {d.name: d for d in (
    Display("zero", "scaled about zero", "x / (2·max|x|) + 0.5: the mean colour is grey and the strongest pixel "
            "black or white, as the paper's toolbox saves its images. Faint images become visible."),
    Display("mean", "plus mean", "x + mean, stretched to the full 0–255 range from the float image."),
    Display("clipped", "as the network saw it", "clip(x + mean, 0, 255): the exact input of the last iteration, "
            "unscaled (faint images look grey)."),
)}
DEFAULT_DISPLAY = "zero"


def _batch(x: np.ndarray) -> np.ndarray:
    array = np.asarray(x, dtype=np.float64)
    if array.ndim not in (3, 4) or array.shape[-1] not in (1, 3):
        raise DeepvisError(f"an optimized image is (H, W, C) or (B, H, W, C) with C = 1 or 3, not shape {array.shape}")
    return array[None] if array.ndim == 3 else array


def scaled_about_zero(x: np.ndarray) -> np.ndarray:
    """``x / (2·max|x|) + 0.5`` per image, as floats in [0, 1] (a zero image gives 0.5 everywhere)."""
    batch = _batch(x)
    peak = np.abs(batch).max(axis=(1, 2, 3), keepdims=True)
    scaled = np.where(peak > 0, batch / (2 * np.where(peak > 0, peak, 1.0)), 0.0) + 0.5
    return scaled[0] if np.asarray(x).ndim == 3 else scaled


def _min_max(values: np.ndarray) -> np.ndarray:
    low = values.min(axis=(1, 2, 3), keepdims=True)
    high = values.max(axis=(1, 2, 3), keepdims=True)
    span = high - low
    return np.where(span > 0, (values - low) / np.where(span > 0, span, 1.0), 0.5)


def show(x: np.ndarray, mean: Sequence[float], mode: str = DEFAULT_DISPLAY) -> np.ndarray:
    """``x`` (pixel space, see module docstring) as ``uint8`` in display ``mode``."""
    if mode not in DISPLAYS:
        raise DeepvisError(f"display must be one of {', '.join(DISPLAYS)}, not {mode!r}")
    batch = _batch(x)
    mean_rgb = np.asarray(mean, dtype=np.float64).reshape(1, 1, 1, -1)
    if mode == "zero":
        unit = scaled_about_zero(batch)
    elif mode == "mean":
        unit = _min_max(batch + mean_rgb)
    else:
        unit = np.clip(batch + mean_rgb, 0, 255) / 255.0
    out = np.clip(np.round(unit * 255.0), 0, 255).astype(np.uint8)
    if out.shape[-1] == 1:
        out = np.repeat(out, 3, axis=-1)
    return out[0] if np.asarray(x).ndim == 3 else out


def npy_bytes(x: np.ndarray) -> bytes:
    """``x`` as the bytes of a float32 ``.npy`` file (what ``np.load`` reads back)."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(x, dtype=np.float32))
    return buffer.getvalue()
