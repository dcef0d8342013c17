"""How healthy a network's layers look on a fixed batch: dead units, sparsity, noisy filters.

Conventions
-----------
* An activation is ``(N, C, H, W)`` or ``(N, C)`` (a vector layer), the layer's output for the
  probe batch.  Measures are plain floats:

  * **dead**: the fraction of channels that are exactly zero for every probe input at every
    position.  A rectified unit that never fires gets no gradient and does not recover: the
    symptom CS231n's notes ("Neural Networks Part 1", *dying ReLU*) tie to too high a learning
    rate.
  * **sparsity**: the fraction of all values that are exactly zero.
  * **mean**: the mean activation.

* **Weight noise** of a convolution ``(C_out, C_in, kh, kw)`` is a high-frequency energy ratio
  of its kernels: the mean squared difference between horizontally and vertically adjacent
  weights, divided by twice the weights' variance about each kernel's own mean, averaged over
  kernels weighted by their energy.  By Parseval the numerator is the kernel's spectrum weighted
  by ``4 sin²(πf)``, the gain of a first difference, so the ratio is the share of the energy at
  high spatial frequencies.  Independent white noise scores 1 in expectation, a smooth ramp or
  blob near 0, a checkerboard 2.  CS231n's "Visualizing what ConvNets learn" names noisy
  first-layer filters as the sign of a network not trained long enough or too weakly
  regularized; trained filters are smooth.  A 1×1 convolution has no spatial frequencies: None.
* **weight norm** is the L2 norm of the whole weight tensor.
* :data:`NOISY` is where a first layer is called "still noisy": halfway between white noise (1)
  and the smooth strokes and blobs a trained first layer shows (about 0.2-0.4 for 5×5 kernels).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

NOISY = 0.7  # weight-noise ratio above which a layer's filters are called still noisy (module docstring)


@dataclass(frozen=True)
class LayerHealth:
    """One layer's measures on the probe batch (module docstring)."""

    dead: float
    sparsity: float
    mean: float
    dead_channels: tuple[int, ...] = ()

    def to_dict(self) -> dict:
        return {**asdict(self), "dead_channels": list(self.dead_channels)}


def layer_health(activation: torch.Tensor) -> LayerHealth:
    """Dead units, sparsity and mean of ``activation`` ``(N, C, …)`` (module docstring)."""
    if activation.dim() < 2 or activation.numel() == 0:
        raise ValueError(f"an activation is (N, C, ...), not {tuple(activation.shape)}")
    values = activation.detach().float()
    zero = values == 0
    per_channel = zero.transpose(0, 1).reshape(values.shape[1], -1).all(dim=1)
    dead = torch.nonzero(per_channel).flatten().tolist()
    return LayerHealth(dead=len(dead) / values.shape[1], sparsity=float(zero.float().mean()),
                       mean=float(values.mean()), dead_channels=tuple(dead))


def weight_noise(weight: torch.Tensor) -> float | None:
    """The high-frequency energy ratio of ``weight`` ``(C_out, C_in, kh, kw)`` (module docstring);
    None for 1×1 kernels or all-zero weights."""
    if weight.dim() != 4 or (weight.shape[2] < 2 and weight.shape[3] < 2):
        return None
    w = weight.detach().double()
    w = w - w.mean(dim=(2, 3), keepdim=True)
    energy = w.pow(2).sum(dim=(2, 3))  # (C_out, C_in): each kernel's variance times its size
    pairs, squared = 0, torch.zeros_like(energy)
    if w.shape[3] > 1:
        squared += (w[..., :, 1:] - w[..., :, :-1]).pow(2).sum(dim=(2, 3))
        pairs += w.shape[2] * (w.shape[3] - 1)
    if w.shape[2] > 1:
        squared += (w[..., 1:, :] - w[..., :-1, :]).pow(2).sum(dim=(2, 3))
        pairs += (w.shape[2] - 1) * w.shape[3]
    size = w.shape[2] * w.shape[3]
    # mean squared neighbour difference / (2 · unbiased variance), pooled over kernels by their energy
    variance = energy.sum() / (size - 1)
    if float(variance) == 0.0:
        return None
    return float((squared.sum() / pairs) / (2 * variance))


def weight_norm(weight: torch.Tensor) -> float:
    return float(weight.detach().double().norm())
