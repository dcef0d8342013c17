"""Occlusion maps (Zeiler & Fergus 2014): what covering each part of a photo does to a class or a unit.

Conventions
-----------
* The photo is the network's view ``(S, S, 3)`` uint8 (:func:`deepvis.images.model_view`).  A square patch of
  ``patch`` pixels, filled with the model's mean colour (0 in the network's normalized input), slides over it
  in steps of ``stride``: windows start at ``0, stride, 2·stride, …``, ``ceil((S − patch) / stride) + 1`` per
  axis, the last one cut at the border where the steps do not end on it, as Captum's ``Occlusion`` places them.
* **Target**: without a layer, the top class's softmax probability (the class the network predicts for the
  photo itself); with ``layer`` and ``unit``, that unit's activation summed over its map (a vector layer: the
  element).
* **The map** ``(S, S)`` float32 is, for each pixel, the mean drop ``f(photo) − f(occluded)`` over the windows
  that cover it (Captum's convention; 0 where no window reaches).  Positive: covering it lowers the target.
* Occluded copies run in batches of ``batch`` through the BatchNorm-folded graph, with no gradients.  On a CPU
  (8 a batch; larger ones are slower per copy there, their maps leave the caches) each copy recomputes only
  the part of each feature map its patch reaches (:class:`deepvis.windowed.LocalRun`): for a 32-px patch on Lite0,
  0.65 of a forward pass's multiply-adds and about 1.4× fewer seconds than whole passes, the same values to
  float rounding.  On a GPU (64 a batch) and for a network torch.fx cannot trace, whole copies run
  (:func:`deepvis.activations.capture`): there a batch costs little more than one copy, and recomputing small
  windows would cost a kernel launch per slice.  :func:`occlude` is a generator of :class:`Progress` so a page
  or CLI can show a bar.
* **Default window** (:func:`default_window`): a patch of a seventh of the view's side and a stride of half the
  patch (32 and 16 px at 224, 4 and 2 px at 28); :func:`patch_choices` scales the pages' choices the same way.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass

import numpy as np
import torch

from deepvis.errors import DeepvisError
from deepvis.progress import Progress
from deepvis.activations import capture
from deepvis.graph import UntraceableError, forward_pass, truncated
from deepvis.images import to_batch
from deepvis.windowed import LocalRun, Windowed
from deepvis.models import LoadedModel


class OcclusionError(DeepvisError):
    """Unusable patch, stride or target; the message is one line."""


@dataclass(frozen=True)
class OcclusionMap:
    """The mean drop per pixel, and what was measured."""

    drops: np.ndarray  # (S, S) float32, module docstring
    target: str  # "class 281 (tabby)" or "_blocks.9._swish_1 unit 7"
    baseline: float  # the target on the unoccluded photo
    windows: int


PATCHES_AT_224 = (16, 24, 32, 48, 64)


def default_window(size: int) -> tuple[int, int]:
    """The default ``(patch, stride)`` for a view of ``size`` pixels (module docstring)."""
    patch = max(2, round(size / 7))
    return patch, max(1, patch // 2)


def patch_choices(size: int) -> tuple[int, ...]:
    """Patch sides to offer for a view of ``size`` px: 16-64 at 224, scaled, with the default among them."""
    found = {max(2, round(p * size / 224)) for p in PATCHES_AT_224} | {default_window(size)[0]}
    return tuple(sorted(p for p in found if p <= size))


def windows(size: int, patch: int, stride: int) -> list[int]:
    """The start of each window along one axis."""
    if not 1 <= patch <= size:
        raise OcclusionError(f"The patch must be 1 to {size} pixels, not {patch}.")
    if stride < 1:
        raise OcclusionError(f"The stride must be at least 1 pixel, not {stride}.")
    return [k * stride for k in range(math.ceil((size - patch) / stride) + 1)]


class _Copies:
    """The network's output (logits or the layer) for the photo and for copies of it changed in windows."""

    def __init__(self, loaded: LoadedModel, photo: torch.Tensor, layer: str | None) -> None:
        self.loaded, self.photo = loaded, photo
        self.name = loaded.logits_layer if layer is None else layer
        self.local = None
        if photo.device.type == "cpu":
            try:
                graph = truncated(loaded.module, [self.name], folded=True)
            except UntraceableError:
                pass
            else:
                with forward_pass():
                    self.local = LocalRun(graph, photo)
        self.photo_output = self._whole(photo) if self.local is None else self.local.output[self.name].float()

    def __call__(self, changed: torch.Tensor, tops: list[int], lefts: list[int]) -> torch.Tensor:
        if self.local is None:
            return self._whole(Windowed(self.photo, changed, tops, lefts).dense())
        with forward_pass():
            return self.local(changed, tops, lefts)[self.name].float()

    def _whole(self, inputs: torch.Tensor) -> torch.Tensor:
        return capture(self.loaded.module, inputs, self.name, folded=True)[self.name].float()


def _scores(outputs: torch.Tensor, layer: str | None, unit: int | None, cls: int | None) -> torch.Tensor:
    if layer is None:
        return torch.softmax(outputs, dim=1)[:, cls]
    return outputs[:, unit].reshape(len(outputs), -1).sum(dim=1)  # a map's sum, or a vector's element


def occlude(loaded: LoadedModel, view: np.ndarray, patch: int, stride: int, layer: str | None = None,
            unit: int | None = None, batch: int | None = None) -> Generator[Progress, None, OcclusionMap]:
    """Slide the patch over ``view`` (module docstring); yields progress, returns the :class:`OcclusionMap`.
    ``batch``: copies per pass (8 on a CPU, 64 on a GPU)."""
    size = view.shape[0]
    if view.ndim != 3 or view.shape[1] != size or view.shape[2] != 3:
        raise OcclusionError("occlusion needs the network's square RGB view")
    if (layer is None) != (unit is None):
        raise OcclusionError("give a layer and a unit together, or neither (the top class)")
    if layer is not None:
        channels = loaded.layer(layer).channels
        if not 0 <= unit < channels:
            raise OcclusionError(f"{layer} has units 0 to {channels - 1}; unit {unit} does not exist.")
    starts = [(y, x) for y in windows(size, patch, stride) for x in windows(size, patch, stride)]
    if batch is None:
        batch = 8 if loaded.device.type == "cpu" else 64
    return _occlude(loaded, view, patch, starts, layer, unit, batch)


def _occlude(loaded: LoadedModel, view: np.ndarray, patch: int, starts: list[tuple[int, int]], layer: str | None,
             unit: int | None, batch: int) -> Generator[Progress, None, OcclusionMap]:
    size = view.shape[0]
    photo = to_batch(view, loaded.spec.normalization, loaded.device)  # (1, 3, S, S); mean colour is 0 here
    with torch.no_grad():
        copies = _Copies(loaded, photo, layer)
        cls = int(copies.photo_output[0].argmax()) if layer is None else None
        base = float(_scores(copies.photo_output, layer, unit, cls)[0])
        total = torch.zeros(size, size, dtype=torch.float64)
        count = torch.zeros(size, size, dtype=torch.float64)
        yield Progress(0, len(starts))
        for first in range(0, len(starts), batch):
            chunk = starts[first:first + batch]
            # each copy's changed window: the patch-sized square at the window's start, moved inside the photo
            tops, lefts = [min(y, size - patch) for y, _ in chunk], [min(x, size - patch) for _, x in chunk]
            changed = torch.stack([photo[0, :, top:top + patch, left:left + patch] for top, left in zip(tops, lefts)])
            for i, (y, x) in enumerate(chunk):
                changed[i, :, y - tops[i]:, x - lefts[i]:] = 0.0  # the window, cut at the border
            drops = (base - _scores(copies(changed, tops, lefts), layer, unit, cls)).double().cpu()
            for (y, x), drop in zip(chunk, drops.tolist()):
                total[y:y + patch, x:x + patch] += drop
                count[y:y + patch, x:x + patch] += 1
            yield Progress(first + len(chunk), len(starts))
    drops = torch.where(count > 0, total / count.clamp(min=1), 0.0).float().numpy()
    if layer is None:
        target = f"class {cls} ({loaded.class_names[cls]})" if loaded.class_names else f"class {cls}"
    else:
        target = f"{layer} unit {unit}"
    return OcclusionMap(drops, target, base, len(starts))


def occlusion_map(loaded: LoadedModel, view: np.ndarray, patch: int, stride: int, layer: str | None = None,
                  unit: int | None = None, batch: int | None = None) -> OcclusionMap:
    """:func:`occlude` run to its end."""
    work = occlude(loaded, view, patch, stride, layer, unit, batch)
    while True:
        try:
            next(work)
        except StopIteration as done:
            return done.value
