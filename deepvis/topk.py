"""Streaming top-k of every unit of a layer over a collection, and its statistics, merged exactly.

Conventions
-----------
* **Images are numbered** by their place in the collection's listing, which is sorted by path
  (:mod:`deepvis.collection`); a record is ``(value, image, position)``: the unit's maximum over
  positions on that image, the image's number, and the flat position of the maximum in the layer's
  ``(H, W)`` map (``0`` for a vector layer; ties between positions go to the first in row-major order,
  ``torch.max``).
* **The order** of records is value high first, then image number low first; so among equal values the
  earlier path wins, as in :mod:`deepvis.index`.  That is a total order on distinct images, and the top-k of
  a union of image sets is the top-k of the union of the sets' top-ks: :meth:`LayerTop.merge` is exact and
  associative, and any sharding gives the same result as one pass.
* A :class:`LayerTop` holds ``k`` rows per unit, arrays ``(k, C)``; rows beyond the images seen are padding
  (image ``-1``, value ``-inf``).
* **Statistics** per unit, also merged exactly (sums and counts): ``mean`` is the mean over images of the
  unit's mean over positions; ``zero`` the fraction of images on which the unit's maximum is ``<= 0`` (it
  does not fire on them); a unit is ``dead`` when it fires on none.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class LayerTop:
    """The top-k records and running statistics of every unit of one layer (module docstring)."""

    values: np.ndarray  # (k, C) float32
    images: np.ndarray  # (k, C) int64, -1 = padding
    positions: np.ndarray  # (k, C) int32
    count: int  # images seen
    sums: np.ndarray  # (C,) float64: sum over images of each unit's mean over positions
    silent: np.ndarray  # (C,) int64: images on which the unit's maximum is <= 0

    @property
    def k(self) -> int:
        return self.values.shape[0]

    @property
    def channels(self) -> int:
        return self.values.shape[1]

    @staticmethod
    def empty(k: int, channels: int) -> LayerTop:
        return LayerTop(np.full((k, channels), -np.inf, np.float32), np.full((k, channels), -1, np.int64),
                        np.zeros((k, channels), np.int32), 0, np.zeros(channels), np.zeros(channels, np.int64))

    @staticmethod
    def of_batch(activation: torch.Tensor, images: np.ndarray, k: int) -> LayerTop:
        """The records of one batch: ``activation`` ``(N, C, H, W)`` or ``(N, C)``, ``images`` their numbers."""
        flat = activation.detach().flatten(2) if activation.dim() > 2 else activation.detach().unsqueeze(2)
        flat = flat.float()
        maxima, where = flat.max(dim=2)
        values = maxima.cpu().numpy().astype(np.float32)
        numbers = np.broadcast_to(np.asarray(images, np.int64)[:, None], values.shape)
        part = LayerTop(values, np.ascontiguousarray(numbers), where.cpu().numpy().astype(np.int32),
                        values.shape[0], flat.mean(dim=2).double().sum(dim=0).cpu().numpy(),
                        (values <= 0).sum(axis=0).astype(np.int64))
        return _top(part, k)

    def merge(self, other: LayerTop) -> LayerTop:
        """The records and statistics of both parts' images together (exact; module docstring)."""
        if self.channels != other.channels:
            raise ValueError(f"cannot merge {self.channels} units with {other.channels}")
        both = LayerTop(np.concatenate([self.values, other.values]), np.concatenate([self.images, other.images]),
                        np.concatenate([self.positions, other.positions]), self.count + other.count,
                        self.sums + other.sums, self.silent + other.silent)
        return _top(both, max(self.k, other.k))

    def unit(self, unit: int, k: int | None = None) -> list[tuple[float, int, int]]:
        """``(value, image, position)`` of the unit's best ``k`` records, best first, padding left out."""
        rows = [(float(self.values[r, unit]), int(self.images[r, unit]), int(self.positions[r, unit]))
                for r in range(self.k) if self.images[r, unit] >= 0]
        return rows[:k] if k is not None else rows

    @property
    def mean(self) -> np.ndarray:
        return self.sums / max(1, self.count)

    @property
    def zero(self) -> np.ndarray:
        return self.silent / max(1, self.count)

    @property
    def dead(self) -> np.ndarray:
        return (self.silent == self.count) & (self.count > 0)

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, values=self.values, images=self.images, positions=self.positions,
                 count=np.int64(self.count), sums=self.sums, silent=self.silent)
        return buffer.getvalue()

    @staticmethod
    def from_bytes(data: bytes) -> LayerTop:
        with np.load(io.BytesIO(data)) as f:
            return LayerTop(f["values"], f["images"], f["positions"], int(f["count"]), f["sums"], f["silent"])


def _top(part: LayerTop, k: int) -> LayerTop:
    """``part`` cut to its best ``k`` rows per unit, in the module's order, padded to ``k``."""
    rows = part.values.shape[0]
    if rows < k:
        pad = LayerTop.empty(k - rows, part.channels)
        part = LayerTop(np.concatenate([part.values, pad.values]), np.concatenate([part.images, pad.images]),
                        np.concatenate([part.positions, pad.positions]), part.count, part.sums, part.silent)
    # Padding sorts last: its value is -inf and its number the largest.
    numbers = np.where(part.images < 0, np.iinfo(np.int64).max, part.images)
    order = np.lexsort((numbers, -part.values.astype(np.float64)), axis=0)[:k]
    take = lambda a: np.take_along_axis(a, order, axis=0)  # noqa: E731
    return LayerTop(take(part.values), take(part.images), take(part.positions), part.count, part.sums, part.silent)
