"""Image parametrizations and transformation robustness that came after the paper.

Conventions
-----------
* Every parametrization gives images ``(B, C, H, W)`` float32 in **[0, 1]** (``C`` = 3:
  RGB, the sigmoid of a decorrelated-colour image; ``C`` = 1: gray, the sigmoid of the
  image itself, no colour to decorrelate); :mod:`deepvis.param_ascent` turns them into
  the optimizer's pixel space (``255 · rgb − mean``, :mod:`deepvis.optimize`).
* **Colour decorrelation** (Olah, Mordvintsev & Schubert 2017, *Feature Visualization*,
  Distill; Lucid's ``color_correlation_svd_sqrt``): the square root of ImageNet's colour
  covariance, ``C = [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]]``,
  divided by its largest column norm (:data:`DECORRELATION`); a decorrelated image ``t``
  becomes RGB logits ``t' = M t`` per pixel (:func:`recorrelate`), inverted exactly by
  :func:`decorrelate`.
* **Fourier** (same source): a spectrum ``(B, C, H, W//2+1)`` complex, stored as real
  pairs ``(..., 2)``, scaled per frequency ``f`` (cycles per pixel) by
  ``1 / max(f, 1/max(H, W)) ** decay_power`` (decay power 1), inverted with an
  orthonormal inverse real FFT and divided by 4 (Lucid's constant), started from
  N(0, 0.01).  :func:`image_to_fourier` inverts :func:`fourier_to_image` (feature
  accentuation starts from a photo that way, decay power 1.5 as in Hamblin et al.
  2024's reference code).
* **MACO** (Fel et al. 2023, *Unlocking Feature Visualization for Deeper Networks with
  MAgnitude Constrained Optimization*): only the phase ``φ`` ``(B, C, H, W//2+1)`` is
  optimized; the magnitude is fixed to the mean magnitude spectrum of natural photos
  in decorrelated colour (:func:`magnitude_spectrum`, computed here from photos, never
  downloaded).  Image = sigmoid(recorrelate(standardize(irfft(|M| e^{i·standardize(φ)})))).
* **Transforms** draw from a ``torch.Generator`` (CPU, seeded), so a seed gives the
  same transforms.  :func:`lucid_transforms` is Lucid's ``standard_transforms``
  (pad 12 with grey, jitter 8, scale 0.9-1.1 in steps of 0.02, rotate -10..10°
  with 0 five times as likely, jitter 4), one draw per step for the whole batch,
  then a bilinear resize back to the run's size so neuron positions keep their
  meaning.  Pad and jitters are pixels of a 224-px network: for a network of input
  side ``S`` they are multiplied by ``S / 224`` (at least 1 px), so a 28-px network
  is jittered by the same fraction of its view.  :func:`random_crops` is MACO's: ``crops`` square boxes per image,
  resampled to the run's size (``torchvision.ops.roi_align``), plus Gaussian and
  uniform noise of ``noise`` in the network's input units; the boxes cover
  :data:`CROP_FRACTION` of a side and stay inside the image (MACO's reference code
  crops 20-25 % of a 1280-px canvas for a 224-px network; here the canvas is the
  run's own size so that every column of a comparison is the same picture size).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.ops import roi_align
from deepvis.errors import DeepvisError

COLOR_CORRELATION_SVD_SQRT = np.array([[0.26, 0.09, 0.02],
                                       [0.27, 0.00, -0.05],
                                       [0.27, -0.09, 0.03]], dtype=np.float32)
DECORRELATION = COLOR_CORRELATION_SVD_SQRT / np.linalg.norm(COLOR_CORRELATION_SVD_SQRT, axis=0).max()
FOURIER_SD, FOURIER_DIVISOR = 0.01, 4.0
PAD, JITTERS = 12, (8, 4)
SCALES = tuple(1 + (i - 5) / 50 for i in range(11))
ANGLES = tuple(range(-10, 11)) + (0,) * 5
CROP_FRACTION = (0.8, 1.0)
LOGIT_EPS = 1e-3


@functools.lru_cache(maxsize=16)
def _colour_matrix(inverse: bool, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """:data:`DECORRELATION` (or its inverse) as a tensor, made once per dtype and device (shared: read only)."""
    matrix = np.linalg.inv(DECORRELATION.astype(np.float64)) if inverse else DECORRELATION
    return torch.as_tensor(matrix, dtype=dtype, device=device)


def recorrelate(t: torch.Tensor) -> torch.Tensor:
    """Decorrelated colour ``(B, 3, H, W)`` -> RGB logits: ``M t`` at every pixel (one gray channel: unchanged)."""
    if t.shape[1] == 1:
        return t
    return torch.einsum("ck,bkhw->bchw", _colour_matrix(False, t.dtype, t.device), t)


def decorrelate(t: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`recorrelate`."""
    if t.shape[1] == 1:
        return t
    return torch.einsum("ck,bkhw->bchw", _colour_matrix(True, t.dtype, t.device), t)


def frequencies(height: int, width: int) -> np.ndarray:
    """``(H, W//2+1)`` spatial frequency of each coefficient of an ``H x W`` real FFT, in cycles per pixel."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    return np.sqrt(fx * fx + fy * fy)


def spectrum_scale(height: int, width: int, decay_power: float = 1.0) -> torch.Tensor:
    """``(H, W//2+1)``: ``1 / max(f, 1/max(H, W)) ** decay_power`` (module docstring)."""
    freqs = np.maximum(frequencies(height, width), 1.0 / max(height, width))
    return torch.as_tensor(freqs ** -decay_power, dtype=torch.float32)


def fourier_to_image(spectrum: torch.Tensor, scale: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(B, C, H, W//2+1, 2)`` real pairs -> ``(B, C, H, W)`` in [0, 1]."""
    complex_spectrum = torch.view_as_complex(spectrum * scale.unsqueeze(-1))
    t = torch.fft.irfftn(complex_spectrum, s=size, dim=(-2, -1), norm="ortho") / FOURIER_DIVISOR
    return torch.sigmoid(recorrelate(t))


def image_to_fourier(rgb: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The spectrum :func:`fourier_to_image` maps to ``rgb`` ``(B, C, H, W)`` (values kept within
    ``[LOGIT_EPS, 1 − LOGIT_EPS]`` so the sigmoid can be inverted)."""
    p = rgb.clamp(LOGIT_EPS, 1 - LOGIT_EPS)
    t = decorrelate(torch.log(p / (1 - p))) * FOURIER_DIVISOR
    return torch.view_as_real(torch.fft.rfftn(t, dim=(-2, -1), norm="ortho")) / scale[..., None]


def random_spectrum(batch: int, height: int, width: int, generator: torch.Generator, channels: int = 3) -> torch.Tensor:
    """A start for :func:`fourier_to_image`: N(0, 0.01) real pairs, ``(B, C, H, W//2+1, 2)``."""
    return torch.randn(batch, channels, height, width // 2 + 1, 2, generator=generator) * FOURIER_SD


def _standardize(t: torch.Tensor) -> torch.Tensor:
    """Each image of ``t`` ``(B, ...)`` to mean 0 and std 1."""
    flat = t.flatten(1)
    shape = (-1,) + (1,) * (t.dim() - 1)
    return (t - flat.mean(dim=1).view(shape)) / (flat.std(dim=1).view(shape) + 1e-4)


def maco_to_image(phase: torch.Tensor, magnitude: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """MACO: phase ``(B, C, H, W//2+1)`` with the fixed ``magnitude`` ``(C, H, W//2+1)`` -> images in [0, 1]."""
    phi = _standardize(phase)
    spectrum = torch.polar(magnitude.expand_as(phi), phi)
    t = _standardize(torch.fft.irfftn(spectrum, s=size, dim=(-2, -1), norm="ortho"))
    return torch.sigmoid(recorrelate(t))


def square_photo(photo: np.ndarray, size: int, mode: str = "RGB") -> np.ndarray:
    """``(H, W, 3)`` uint8 -> ``(size, size, C)`` float in [0, 1]: shorter side to ``size``, centre crop
    (``mode`` ``L``: its luminance, one channel)."""
    image = Image.fromarray(photo).convert(mode)
    scale = size / min(image.size)
    image = image.resize((max(size, round(image.width * scale)), max(size, round(image.height * scale))),
                         Image.Resampling.BILINEAR)
    left, top = (image.width - size) // 2, (image.height - size) // 2
    array = np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0
    return array if array.ndim == 3 else array[..., None]


def magnitude_spectrum(photos: Sequence[np.ndarray], size: int, channels: int = 3) -> torch.Tensor:
    """MACO's magnitude template ``(C, size, size//2+1)``: the mean ``|rfft|`` (orthonormal) of the photos
    ``(H, W, 3)`` uint8, each squared to ``size`` (shorter side, centre crop; gray for one channel), its mean
    removed and its colour decorrelated (:func:`decorrelate`)."""
    if not photos:
        raise DeepvisError("MACO's magnitude spectrum needs at least one photo")
    total = torch.zeros(channels, size, size // 2 + 1)
    for photo in photos:
        rgb = torch.from_numpy(square_photo(photo, size, "L" if channels == 1 else "RGB")).permute(2, 0, 1)[None]
        t = decorrelate(rgb - rgb.mean(dim=(2, 3), keepdim=True))
        total += torch.fft.rfftn(t, dim=(-2, -1), norm="ortho").abs()[0]
    return total / len(photos)


# ---- transformation robustness (one draw per step, from a seeded CPU generator) ----

def _choice(values: Sequence, generator: torch.Generator):
    return values[int(torch.randint(len(values), (1,), generator=generator))]


def pad(x: torch.Tensor, width: int, value: float = 0.5) -> torch.Tensor:
    """Pad every side by ``width`` pixels of ``value`` (grey)."""
    return F.pad(x, [width] * 4, mode="constant", value=value)


def jitter(x: torch.Tensor, d: int, dy: int, dx: int) -> torch.Tensor:
    """Lucid's jitter: the ``(H − d) x (W − d)`` window at offset ``(dy, dx)``, each in ``[0, d]``."""
    height, width = x.shape[-2:]
    return x[..., dy:dy + height - d, dx:dx + width - d]


def scale(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Resize by ``factor`` (bilinear), to ``ceil(factor · side)``."""
    height, width = x.shape[-2:]
    if factor == 1:
        return x
    return F.interpolate(x, size=(math.ceil(factor * height), math.ceil(factor * width)), mode="bilinear",
                         align_corners=False)


def rotate(x: torch.Tensor, degrees: float, fill: float = 0.5, zoom: float = 1.0) -> torch.Tensor:
    """Rotate about the centre by ``degrees`` (counter-clockwise on screen) and enlarge by ``zoom`` (below 1:
    shrink), keeping the size; bilinear, uncovered corners filled with ``fill``."""
    if degrees % 360 == 0 and zoom == 1:
        return x
    angle = math.radians(degrees)
    cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
    height, width = x.shape[-2:]
    # affine_grid maps output to input in normalized coordinates; the aspect ratio keeps a non-square rotation rigid.
    theta = torch.tensor([[cos, -sin * height / width, 0.0], [sin * width / height, cos, 0.0]],
                         dtype=x.dtype, device=x.device).expand(x.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill


def pixels_at(pixels: int, network_side: int) -> int:
    """A length of ``pixels`` at 224 px, for a network whose input side is ``network_side`` (at least 1)."""
    return pixels if network_side == 224 else max(1, round(pixels * network_side / 224))


def lucid_transforms(x: torch.Tensor, generator: torch.Generator, network_side: int = 224) -> torch.Tensor:
    """Lucid's ``standard_transforms`` (module docstring) on ``(B, C, H, W)`` in [0, 1], back to ``H x W``;
    pad and jitters scaled to a network of input side ``network_side``."""
    size = x.shape[-2:]
    x = pad(x, pixels_at(PAD, network_side))
    d = pixels_at(JITTERS[0], network_side)
    x = jitter(x, d, int(torch.randint(d + 1, (1,), generator=generator)),
               int(torch.randint(d + 1, (1,), generator=generator)))
    x = scale(x, _choice(SCALES, generator))
    x = rotate(x, _choice(ANGLES, generator))
    d = pixels_at(JITTERS[1], network_side)
    x = jitter(x, d, int(torch.randint(d + 1, (1,), generator=generator)),
               int(torch.randint(d + 1, (1,), generator=generator)))
    return x if x.shape[-2:] == size else F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def crop_boxes(counts: Sequence[int], size: int, generator: torch.Generator) -> torch.Tensor:
    """``(sum(counts), 5)`` roi_align boxes ``(image, x1, y1, x2, y2)`` in pixels: ``counts[i]`` square boxes
    of image ``i``, image-major, each inside the image."""
    low, high = CROP_FRACTION
    n = int(sum(counts))
    side = (low + (high - low) * torch.rand(n, generator=generator)) * size
    x1 = torch.rand(n, generator=generator) * (size - side)
    y1 = torch.rand(n, generator=generator) * (size - side)
    owner = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(list(counts))).float()
    return torch.stack([owner, x1, y1, x1 + side, y1 + side], dim=1)


def random_crops(x: torch.Tensor, counts: Sequence[int], generator: torch.Generator) -> torch.Tensor:
    """MACO's crops of ``(B, C, S, S)``: ``(sum(counts), C, S, S)``, ``counts[i]`` of image ``i``, image-major
    (noise is added by the caller, in the network's input units)."""
    size = x.shape[-1]
    boxes = crop_boxes(counts, size, generator).to(x.device, x.dtype)
    return roi_align(x, boxes, output_size=(size, size), spatial_scale=1.0, sampling_ratio=2, aligned=True)


def crop_noise(shape: torch.Size, amount: float, generator: torch.Generator) -> torch.Tensor:
    """MACO's noise: N(0, amount) plus U(−amount/2, amount/2), drawn on the CPU."""
    return torch.randn(shape, generator=generator) * amount + (torch.rand(shape, generator=generator) - 0.5) * amount
