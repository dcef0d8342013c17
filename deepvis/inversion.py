"""Inversion (Mahendran & Vedaldi 2015): the image whose activations at a layer match a photo's, so a person sees
what the layer keeps of it.

Conventions
-----------
* The objective is a ``"match"`` term (:mod:`deepvis.targets`): ``-||Φ(x) − Φ0||² / ||Φ0||²`` with ``Φ0`` the
  photo's activations at the layer, the photo resized to the run's size; it runs under any preset's
  regularizers or parametrization (Fourier by default), from a seeded start.
* Photos are ``(S, S, C)`` uint8 views (what the network sees, :func:`deepvis.images.model_view`); optimized
  images are in the optimizer's pixel space (:mod:`deepvis.optimize`).
* The distance reported is ``||Φ(x) − Φ0|| / ||Φ0||`` on the image itself (no transform): 0 = the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deepvis import optimize, presets
from deepvis.models import LoadedModel
from deepvis.settings import OptimizeError
from deepvis.targets import Target, Term


def inversion_target(view: np.ndarray, layer: str) -> Target:
    """The objective "this photo's representation at ``layer``": a match term (Mahendran & Vedaldi 2015) on the
    photo as the network sees it, ``view`` ``(S, S, C)`` uint8, alone (the target's own unit has weight 0)."""
    view = np.ascontiguousarray(np.asarray(view, np.uint8))
    if view.ndim != 3:
        raise OptimizeError(f"the photo must be (H, W, C) pixels, not an array of shape {view.shape}")
    return Target(layer, 0, weight=0.0, terms=(Term(1.0, layer, "match", photo=view.tobytes(),
                                                    photo_shape=tuple(view.shape)),))


def representation_distance(loaded: LoadedModel, pixels: np.ndarray, view: np.ndarray, layer: str) -> float:
    """``||Φ(x) − Φ0|| / ||Φ0||`` at ``layer``: ``x`` an optimized image ``(S, S, C)`` in the optimizer's pixel
    space, ``Φ0`` the photo's (``view`` resized to ``S``); 0 = the same representation."""
    import torch
    from PIL import Image

    from deepvis.activations import capture
    from deepvis.images import channel_stats, to_batch

    side = pixels.shape[0]
    photo = Image.fromarray(view.squeeze(-1) if view.shape[-1] == 1 else view).resize((side, side),
                                                                                       Image.Resampling.BICUBIC)
    photo = np.asarray(photo)
    photo = photo[..., None] if photo.ndim == 2 else photo
    mean, std = channel_stats(loaded.spec.normalization, loaded.device)
    x = torch.as_tensor(np.asarray(pixels, np.float32)[None], device=loaded.device).permute(0, 3, 1, 2)
    with torch.no_grad():
        ours = capture(loaded.module, ((x + mean).clamp(0, 255) - mean) / std, layer)[layer][0].double()
        theirs = capture(loaded.module, to_batch(photo, loaded.spec.normalization, loaded.device), layer)[layer][0]
    theirs = theirs.double()
    return float((ours - theirs).norm() / theirs.norm().clamp_min(1e-12))


def matched_photo(target: Target) -> tuple[np.ndarray, str] | None:
    """The photo an inversion target matches, ``(H, W, C)`` uint8, and its layer; None for another target."""
    for term in target.terms:
        if term.kind == "match":
            return np.frombuffer(term.photo, np.uint8).reshape(term.photo_shape), term.layer
    return None


@dataclass(frozen=True)
class Inversion:
    """An inversion's photo as the network sees it (``view``), its run (``record``; row 0's best image is the
    result) and ``distance``: :func:`representation_distance` of the best image at ``layer``."""

    view: np.ndarray
    layer: str
    record: object
    distance: float


def invert(loaded: LoadedModel, image, layer: str, settings=None, seed: int = 0, size: int | None = None) -> Inversion:
    """The image whose activations at ``layer`` match those of ``image`` (a PIL image or an ``(S, S, C)`` view),
    from a seeded start under ``settings`` (default: the Fourier parametrization's preset)."""
    from deepvis.images import model_view

    name = loaded.layer(layer).name
    view = np.asarray(image, np.uint8) if isinstance(image, np.ndarray) else model_view(image, loaded.spec)
    settings = settings if settings is not None else presets.resolve(loaded, "fourier")
    record = optimize.run(loaded, inversion_target(view, name), settings, seed=seed, size=size)
    return Inversion(view, name, record, representation_distance(loaded, record.rows[0].best_x, view, name))
