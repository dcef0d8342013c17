"""The calibration's objective: a class image's verdict that holds when the judge's view changes.

A search that maximizes one judge's rank of one view finds θ whose images are tuned to that
view of that network (Goodhart's law: the image becomes a quasi-adversarial example for the
judge).  This objective asks instead whether the class survives changes a person's eye
ignores, the idea of Expectation over Transformation (Athalye, Engstrom, Ilyas & Kwok 2018,
*Synthesizing Robust Adversarial Examples*, ICML): score the expectation over a distribution
of transformations, not one view.

Conventions
-----------
* Images in: the optimizer's float images ``(B, H, W, C)`` in its pixel space (0-255
  units, model mean subtracted; :mod:`deepvis.optimize`), one class unit each.  A gray
  image is shown as gray RGB; a grayscale judge reads one of its equal channels.
* **A view** is the image as displayed by default (scaled about zero,
  :mod:`deepvis.display`; 0-255) under one random affine map: jitter up to
  ±:data:`JITTER` of its side in x and y, scale in :data:`SCALE`, rotation in
  ±:data:`ROTATION` degrees (bilinear, borders mid-grey 127.5), then resized (antialiased)
  to a random side in :data:`RESIZE` × the judge's input size and normalized the judge's
  way (a judge of one's own, which may take one input size only, sees that view resized
  back to its input side: the resize still changes its detail).  The ranges are those of Lucid's standard transforms and of the calibration
  judge's own training augmentation scale (Olah, Mordvintsev & Schubert 2017, *Feature
  Visualization*, Distill: jitter, scale 0.9-1.1, rotation ±10°), a little wider.
* Views are drawn from a CPU generator seeded with ``seed``: every image of a batch, and
  every trial of a search, sees the same :data:`VIEWS` views (common random numbers: the
  trials differ only by θ).
* **Per image:** ``hits`` = the fraction of views whose top 5 holds the class;
  ``soft`` = the mean over views of ``1 − ln rank / ln K`` (K classes); ``robustness`` =
  the generating network's own robustness (:func:`deepvis.quality.robustness`, clipped
  to [0, 1]).  ``score = 0.4·hits + 0.4·soft + 0.2·robustness`` (1 best, 0 worst).
* The judge here is the *calibration* judge (:func:`deepvis.quality.calibration_judge_name`,
  or a network the user names for a network of their own, with the same classes);
  the score shown to users comes from another network (the reporting judge), which
  never takes part in choosing θ.  **Without a judge** (a network of one's own and no
  second network), ``score = robustness`` alone, and ``hits``/``soft`` are ``None``.
* Both networks are only read (forward passes under :func:`deepvis.graph.forward_pass`,
  no grad).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

from deepvis.display import DEFAULT_DISPLAY, show
from deepvis.graph import forward_pass
from deepvis.images import channel_stats
from deepvis.models import REGISTRY, LoadedModel

VIEWS = 16
JITTER = 0.08  # of the image side
SCALE = (0.8, 1.2)
ROTATION = 15.0  # degrees
RESIZE = (0.8, 1.2)  # of the judge's input side
TOP = 5
WEIGHTS = (0.4, 0.4, 0.2)  # hits, soft rank, robustness


@dataclass(frozen=True)
class View:
    """One random change of the judge's view (module docstring)."""

    dx: float  # fraction of the side
    dy: float
    scale: float
    angle: float  # degrees
    side: int  # the judge's input side for this view


def draw_views(judge_side: int, count: int = VIEWS, seed: int = 0) -> list[View]:
    """``count`` views for a judge whose input is ``judge_side`` px (seeded on the CPU; module docstring)."""
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    u = torch.rand(count, 5, generator=generator, dtype=torch.float64).tolist()
    return [View((2 * a - 1) * JITTER, (2 * b - 1) * JITTER, SCALE[0] + c * (SCALE[1] - SCALE[0]),
                 (2 * d - 1) * ROTATION, max(16, round(judge_side * (RESIZE[0] + e * (RESIZE[1] - RESIZE[0])))))
            for a, b, c, d, e in u]


def _apply(images: torch.Tensor, view: View, fixed_side: int | None = None) -> torch.Tensor:
    """``(B, C, H, W)`` 0-255 -> the view of each, ``(B, C, side, side)`` 0-255 (``fixed_side``: then resized
    to that side, for a judge that takes one input size only)."""
    height, width = images.shape[-2:]
    moved = TF.affine(images, angle=view.angle, translate=[round(view.dx * width), round(view.dy * height)],
                      scale=view.scale, shear=[0.0, 0.0], interpolation=TF.InterpolationMode.BILINEAR, fill=127.5)
    out = TF.resize(moved, [view.side, view.side], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    if fixed_side is not None and view.side != fixed_side:
        out = TF.resize(out, [fixed_side, fixed_side], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    return out


def view_ranks(model: LoadedModel, judge: LoadedModel, pixels: np.ndarray, classes: Sequence[int],
               views: Sequence[View]) -> np.ndarray:
    """``(B, V)`` rank (1 = top) of ``classes[b]`` under ``judge`` in each view of image ``b`` (module docstring)."""
    shown = torch.as_tensor(show(np.asarray(pixels), model.spec.normalization.mean255, DEFAULT_DISPLAY))
    images = shown.permute(0, 3, 1, 2).float().to(judge.device)
    norm = judge.spec.normalization
    images = images[:, :norm.channels]  # a gray judge reads one of a gray image's equal channels
    mean, std = channel_stats(norm, judge.device)
    index = torch.as_tensor(list(classes), device=judge.device)
    fixed = None if judge.spec.name in REGISTRY else judge.spec.input_size  # a network of one's own: one size
    ranks = np.zeros((len(classes), len(views)), dtype=np.int64)
    with forward_pass(), torch.no_grad():
        for v, view in enumerate(views):
            logits = judge.module((_apply(images, view, fixed) - mean) / std).double()
            own = logits.gather(1, index[:, None])
            ranks[:, v] = ((logits > own).sum(dim=1) + 1).cpu().numpy()
    return ranks


@dataclass(frozen=True)
class Holding:
    """How one image's class holds across the views (module docstring)."""

    hits: float | None  # fraction of views with the class in the judge's top 5 (None: no judge)
    soft: float | None  # mean of 1 − ln rank / ln K
    robustness: float | None  # the generating network's own (None: the unit is not active)

    @property
    def score(self) -> float:
        robust = 0.0 if self.robustness is None else min(1.0, max(0.0, self.robustness))
        if self.hits is None or self.soft is None:
            return robust
        return WEIGHTS[0] * self.hits + WEIGHTS[1] * self.soft + WEIGHTS[2] * robust

    def to_dict(self) -> dict[str, float | None]:
        return {"hits": None if self.hits is None else round(self.hits, 4),
                "soft": None if self.soft is None else round(self.soft, 4), "robustness": self.robustness,
                "score": round(self.score, 4)}


def holding(model: LoadedModel, judge: LoadedModel | None, pixels: np.ndarray, classes: Sequence[int],
            robustness: Sequence[float | None], views: int = VIEWS, seed: int = 0) -> list[Holding]:
    """The :class:`Holding` of each image ``pixels[b]`` made for class ``classes[b]`` (``judge`` None:
    robustness alone)."""
    if judge is None:
        return [Holding(None, None, robust) for robust in robustness]
    drawn = draw_views(judge.spec.input_size, views, seed)
    ranks = view_ranks(model, judge, pixels, classes, drawn)
    log_k = math.log(max(2, len(judge.class_names)))
    return [Holding(float((r <= TOP).mean()), float(np.mean(1 - np.log(r) / log_k)), robust)
            for r, robust in zip(ranks, robustness)]
