"""The four image regularizers of Yosinski et al. 2015, as pure tensor functions.

Conventions
-----------
* Images are ``(B, 3, H, W)`` float tensors in the optimizer's pixel space
  (0-255 units, the model's mean subtracted); ``g_in`` has the same shape and
  is the objective's gradient with respect to the network's own input.
* Per-row parameters (``sigma``, ``pct``) are a number for every row or a
  sequence with one value per row, so a batch can mix settings.  Every row is
  computed from its own values only.
* Percentiles are in [0, 100] with numpy's default linear interpolation, taken
  per row.  "Below the percentile" is strict, so ``pct = 0`` changes nothing.
* ``gaussian_blur`` equals ``scipy.ndimage.gaussian_filter`` applied to each
  channel with its defaults: ``truncate=4.0`` and ``mode='reflect'`` (the edge
  pixel is repeated: ``d c b a | a b c d | d c b a``).
* Functions never modify their inputs; they return new tensors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from deepvis.errors import DeepvisError

PerRow = float | Sequence[float] | torch.Tensor


def _per_row(value: PerRow, rows: int) -> list[float]:
    if isinstance(value, torch.Tensor):
        value = value.flatten().tolist()
    if isinstance(value, (int, float)):
        return [float(value)] * rows
    values = [float(v) for v in value]
    if len(values) != rows:
        raise DeepvisError(f"expected {rows} per-row values, got {len(values)}")
    return values


def blur_due(radius: float, every: int, iteration: int) -> bool:
    """Whether the blur runs after ``iteration`` (0-based), as in the authors' optimizer."""
    return every > 0 and radius > 0 and iteration % every == 0


def gaussian_kernel1d(sigma: float, truncate: float = 4.0, dtype: torch.dtype = torch.float32,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """Normalized 1-D Gaussian of radius ``int(truncate * sigma + 0.5)`` (scipy's choice)."""
    if not sigma > 0 or not math.isfinite(sigma):
        raise DeepvisError(f"blur sigma must be a positive number, not {sigma}")
    radius = int(truncate * float(sigma) + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (offsets / float(sigma)) ** 2)
    return (weights / weights.sum()).to(dtype=dtype, device=device)


def _reflect_index(length: int, radius: int, device: torch.device) -> torch.Tensor:
    # Half-sample symmetric extension has period 2 * length; works for any radius.
    index = torch.arange(-radius, length + radius, device=device) % (2 * length)
    return torch.where(index >= length, 2 * length - 1 - index, index)


def _blur_same_sigma(x: torch.Tensor, sigma: float) -> torch.Tensor:
    kernel = gaussian_kernel1d(sigma, dtype=x.dtype, device=x.device).tolist()
    radius = (len(kernel) - 1) // 2
    out = x
    for dim in (2, 3):  # rows then columns, like scipy's axis order
        padded = out.index_select(dim, _reflect_index(out.shape[dim], radius, x.device))
        length = out.shape[dim]
        # A weighted sum of shifted views: ~15x faster on a CPU than a grouped 1-D conv2d of the same kernel.
        out = padded.narrow(dim, 0, length) * kernel[0]
        for offset, weight in enumerate(kernel[1:], start=1):
            out.add_(padded.narrow(dim, offset, length), alpha=weight)
    return out


def gaussian_blur(x: torch.Tensor, sigma: PerRow) -> torch.Tensor:
    """Blur each channel of each row with its own ``sigma`` (0 = unchanged); see module docstring."""
    if x.dim() != 4:
        raise DeepvisError(f"gaussian_blur needs (B, C, H, W), got shape {tuple(x.shape)}")
    sigmas = _per_row(sigma, x.shape[0])
    if len(set(sigmas)) == 1 and sigmas[0] > 0:
        return _blur_same_sigma(x, sigmas[0])
    out = x.clone()
    for value in sorted(set(sigmas)):
        if value <= 0:
            continue
        rows = torch.tensor([i for i, s in enumerate(sigmas) if s == value], device=x.device)
        out[rows] = _blur_same_sigma(x[rows], value)
    return out


def percentile(values: torch.Tensor, pct: PerRow) -> torch.Tensor:
    """The ``pct`` percentile of each row of ``(B, N)`` values, numpy-style linear interpolation -> ``(B,)``."""
    if values.dim() != 2:
        raise DeepvisError(f"percentile needs (B, N), got shape {tuple(values.shape)}")
    pcts = _per_row(pct, values.shape[0])
    if any(not 0 <= p <= 100 for p in pcts):
        raise DeepvisError("percentiles must be between 0 and 100")
    if len(set(pcts)) == 1:
        return torch.quantile(values, pcts[0] / 100.0, dim=1)
    return torch.stack([torch.quantile(row, p / 100.0) for row, p in zip(values, pcts)])


def _zero_below(x: torch.Tensor, score: torch.Tensor, pct: PerRow) -> torch.Tensor:
    """Zero every pixel (all channels) whose ``score`` (B, H, W) is below its row's percentile."""
    pcts = _per_row(pct, x.shape[0])
    rows = [i for i, p in enumerate(pcts) if p > 0]
    if not rows:
        return x.clone()
    index = torch.tensor(rows, device=x.device)
    flat = score[index].flatten(1)
    threshold = percentile(flat, [pcts[i] for i in rows])
    keep = torch.ones_like(score, dtype=torch.bool)
    keep[index] = score[index] >= threshold.view(-1, 1, 1)
    return x * keep.unsqueeze(1).to(x.dtype)


def pixel_norm(x: torch.Tensor) -> torch.Tensor:
    """Per-pixel L2 norm over the channels: ``(B, C, H, W) -> (B, H, W)``."""
    return x.pow(2).sum(dim=1).sqrt()


def clip_small_norm(x: torch.Tensor, pct: PerRow) -> torch.Tensor:
    """Set to 0 the pixels whose L2 norm over channels is below the row's ``pct`` percentile."""
    return _zero_below(x, pixel_norm(x), pct)


def contribution(x: torch.Tensor, g_in: torch.Tensor) -> torch.Tensor:
    """Each pixel's estimated contribution to the objective, ``|sum_c g_in * -x|`` -> ``(B, H, W)``.

    ``-x`` is the change that would set the pixel to the mean; ``g_in * -x`` is
    the first-order change of the objective it would cause.
    """
    return (g_in * -x).sum(dim=1).abs()


def clip_small_contribution(x: torch.Tensor, g_in: torch.Tensor, pct: PerRow) -> torch.Tensor:
    """Set to 0 the pixels whose contribution (see :func:`contribution`) is below the row's percentile."""
    return _zero_below(x, contribution(x, g_in), pct)
