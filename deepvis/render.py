"""Turning tensors into pictures: channel grids, heatmaps, overlays, PNG bytes.

Conventions
-----------
* Inputs are torch tensors or numpy arrays; outputs are ``uint8`` numpy arrays,
  ``(H, W)`` for grey and ``(H, W, 3)`` for colour, or PNG/GIF ``bytes``.
* Activations come as ``(C, H, W)``; a grid lays the channels out row-major,
  channel ``c`` at row ``c // cols``, column ``c % cols`` (see :class:`GridLayout`).
* ``scaling="channel"`` maps each channel's own [min, max] to [0, 255];
  ``scaling="layer"`` uses one [min, max] for the whole layer, so channels can
  be compared with each other.  A constant map becomes mid-grey, except an
  all-zero (dead) channel, which stays black.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

SCALINGS = ("channel", "layer")
MIN_TILE = 28  # tiles are enlarged to at least this many pixels, so numbers fit

# A perceptually ordered dark-to-bright palette (anchors of an "inferno"-like ramp).
_HEAT_ANCHORS = np.array(
    [[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21], [250, 193, 39],
     [252, 255, 164]], dtype=np.float64)


def _as_numpy(values: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().float().cpu().numpy()
    return np.asarray(values, dtype=np.float32)


def to_uint8(values: torch.Tensor | np.ndarray, low: float | None = None, high: float | None = None) -> np.ndarray:
    """Linearly map ``[low, high]`` (default: the array's min and max) to 0-255."""
    array = _as_numpy(values)
    low = float(array.min()) if low is None else low
    high = float(array.max()) if high is None else high
    if high - low < 1e-12:
        return np.zeros(array.shape, np.uint8) if abs(high) < 1e-12 else np.full(array.shape, 128, np.uint8)
    return np.clip((array - low) * (255.0 / (high - low)) + 0.5, 0, 255).astype(np.uint8)


def heat_colors(gray: np.ndarray) -> np.ndarray:
    """Colour a ``uint8`` map with the heat palette: ``(H, W)`` -> ``(H, W, 3)``."""
    positions = np.linspace(0, 255, len(_HEAT_ANCHORS))
    lut = np.stack([np.interp(np.arange(256), positions, _HEAT_ANCHORS[:, k]) for k in range(3)], axis=1)
    return lut.astype(np.uint8)[gray]


@dataclass(frozen=True)
class GridLayout:
    """Where each channel's tile is in a composed grid image."""

    channels: int
    cols: int
    tile: int  # tile side in output pixels
    pad: int

    @property
    def rows(self) -> int:
        return math.ceil(self.channels / self.cols)

    def origin(self, channel: int) -> tuple[int, int]:
        """Top-left ``(y, x)`` of ``channel``'s tile."""
        row, col = divmod(channel, self.cols)
        return self.pad + row * (self.tile + self.pad), self.pad + col * (self.tile + self.pad)

    def channel_at(self, y: int, x: int) -> int | None:
        """The channel whose tile covers pixel ``(y, x)``, or ``None``."""
        row, col = (y - self.pad) // (self.tile + self.pad), (x - self.pad) // (self.tile + self.pad)
        channel = row * self.cols + col
        if 0 <= col < self.cols and 0 <= channel < self.channels:
            return channel
        return None


def grid_layout(channels: int, height: int, width: int, cols: int | None = None, pad: int = 2) -> GridLayout:
    """A near-square layout whose tiles are at least :data:`MIN_TILE` pixels wide."""
    cols = cols or math.ceil(math.sqrt(channels * height / max(width, 1)))
    tile = max(height, width) * max(1, math.ceil(MIN_TILE / max(height, width)))
    return GridLayout(channels, max(1, min(cols, channels)), tile, pad)


def channel_grid(activation: torch.Tensor | np.ndarray, scaling: str = "channel", cols: int | None = None,
                 numbers: bool = True, highlight: int | None = None) -> tuple[np.ndarray, GridLayout]:
    """All channels of ``(C, H, W)`` as one grey ``uint8`` image, plus its layout.

    Each tile is numbered with its channel index in its top-left corner;
    ``highlight`` draws a frame around one channel.
    """
    if scaling not in SCALINGS:
        raise ValueError(f"scaling must be one of {SCALINGS}, not {scaling!r}")
    act = _as_numpy(activation)
    if act.ndim == 1:
        act = act[:, None, None]
    if act.ndim != 3:
        raise ValueError(f"channel_grid needs (C, H, W), got shape {act.shape}")
    channels, height, width = act.shape
    layout = grid_layout(channels, height, width, cols)
    if scaling == "layer":
        tiles = to_uint8(act)
    else:
        flat = act.reshape(channels, -1)
        low, high = flat.min(axis=1), flat.max(axis=1)
        span = np.where(high - low < 1e-12, 1.0, high - low)
        tiles = np.clip((act - low[:, None, None]) * (255.0 / span)[:, None, None] + 0.5, 0, 255).astype(np.uint8)
        tiles[(high - low < 1e-12) & (np.abs(high) >= 1e-12)] = 128
    factor = layout.tile // max(height, width)
    tiles = tiles.repeat(factor, axis=1).repeat(factor, axis=2)
    step = layout.tile + layout.pad
    canvas = np.full((layout.pad + layout.rows * step, layout.pad + layout.cols * step), 40, np.uint8)
    for c in range(channels):
        y, x = layout.origin(c)
        canvas[y:y + tiles.shape[1], x:x + tiles.shape[2]] = tiles[c]
    if not numbers and highlight is None:
        return canvas, layout
    image = Image.fromarray(canvas).convert("RGB")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    if numbers:
        for c in range(channels):
            y, x = layout.origin(c)
            draw.text((x + 1, y), str(c), fill=(255, 220, 0), font=font, stroke_width=1, stroke_fill=(0, 0, 0))
    if highlight is not None and 0 <= highlight < channels:
        y, x = layout.origin(highlight)
        draw.rectangle([x - 2, y - 2, x + layout.tile + 1, y + layout.tile + 1], outline=(0, 200, 255), width=2)
    return np.asarray(image), layout


def upscale(image: np.ndarray, size: int, smooth: bool = True) -> np.ndarray:
    """Resize a ``uint8`` image so its longer side is ``size`` pixels."""
    height, width = image.shape[:2]
    scale = size / max(height, width)
    target = (max(1, round(width * scale)), max(1, round(height * scale)))
    resample = Image.Resampling.BILINEAR if smooth else Image.Resampling.NEAREST
    return np.asarray(Image.fromarray(image).resize(target, resample))


def overlay(photo: np.ndarray, activation_map: torch.Tensor | np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Blend a heat-coloured ``(h, w)`` map, stretched to the photo's size, over ``(H, W, 3)``."""
    heat = heat_colors(to_uint8(activation_map))
    heat = np.asarray(Image.fromarray(heat).resize((photo.shape[1], photo.shape[0]), Image.Resampling.BILINEAR))
    return np.clip((1 - alpha) * photo.astype(np.float32) + alpha * heat, 0, 255).astype(np.uint8)


def weight_tiles(weight: torch.Tensor, cols: int | None = None) -> tuple[np.ndarray, GridLayout]:
    """First-layer filters ``(C_out, 3, k, k)`` as RGB tiles, each scaled symmetrically about 0."""
    w = _as_numpy(weight)
    if w.ndim != 4 or w.shape[1] != 3:
        raise ValueError(f"weight_tiles needs (C_out, 3, k, k), got {w.shape}")
    bound = np.abs(w).reshape(w.shape[0], -1).max(axis=1)[:, None, None, None]
    rgb = np.clip(w / np.maximum(bound, 1e-12) * 127.5 + 127.5, 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    layout = grid_layout(w.shape[0], w.shape[2], w.shape[3], cols)
    factor = layout.tile // max(w.shape[2], w.shape[3])
    rgb = rgb.repeat(factor, axis=1).repeat(factor, axis=2)
    step = layout.tile + layout.pad
    canvas = np.full((layout.pad + layout.rows * step, layout.pad + layout.cols * step, 3), 40, np.uint8)
    for c in range(w.shape[0]):
        y, x = layout.origin(c)
        canvas[y:y + rgb.shape[1], x:x + rgb.shape[2]] = rgb[c]
    return canvas, layout


def png_bytes(image: np.ndarray, compress_level: int = 1) -> bytes:
    """Encode a ``uint8`` grey or RGB image as PNG (lossless; fast compression by default)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()
