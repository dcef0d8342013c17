"""Turning tensors into pictures: channel grids, heatmaps, overlays, sheets, PNG and GIF bytes.

(Over 300 lines: every pixel the project outputs is made here; one concept, arrays in, pictures out.)

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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from deepvis.errors import DeepvisError

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
    """All channels of ``(C, H, W)`` as one grey ``(H', W')`` uint8 image, plus its layout.

    Each tile carries its channel index in its top-left corner (white on a black
    box); ``highlight`` draws a white frame around one channel.
    """
    if scaling not in SCALINGS:
        raise DeepvisError(f"scaling must be one of {SCALINGS}, not {scaling!r}")
    act = _as_numpy(activation)
    if act.ndim == 1:
        act = act[:, None, None]
    if act.ndim != 3:
        raise DeepvisError(f"channel_grid needs (C, H, W), got shape {act.shape}")
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
    canvas = _compose(tiles.repeat(factor, axis=1).repeat(factor, axis=2), layout)
    if numbers:
        glyphs = _digit_glyphs()
        for c in range(channels):
            _stamp_number(canvas, layout, c, glyphs)
    _frame(canvas, layout, highlight)
    return canvas, layout


def _frame(canvas: np.ndarray, layout: GridLayout, channel: int | None) -> None:
    """Draw a white frame (in the padding) around ``channel``'s tile, if it is one."""
    if channel is None or not 0 <= channel < layout.channels:
        return
    y, x = layout.origin(channel)
    edge, tile = layout.pad, layout.tile
    canvas[y - edge:y, x - edge:x + tile + edge] = 255
    canvas[y + tile:y + tile + edge, x - edge:x + tile + edge] = 255
    canvas[y:y + tile, x - edge:x] = 255
    canvas[y:y + tile, x + tile:x + tile + edge] = 255


def image_grid(images: Sequence[np.ndarray | None], tile: int, highlight: int | None = None,
               pad: int = 2) -> tuple[np.ndarray, GridLayout]:
    """``(h, w, 3)`` uint8 images, one per channel, resized to ``tile`` pixels and laid out like
    :func:`channel_grid` (near-square, row-major) as one ``(H, W, 3)`` image; ``None`` (not computed yet) is
    left as the dark background.  ``highlight`` frames one channel."""
    layout = grid_layout(len(images), tile, tile, pad=pad)
    tiles = np.full((len(images), layout.tile, layout.tile, 3), _BACKGROUND, np.uint8)
    for c, image in enumerate(images):
        if image is not None:
            tiles[c] = np.asarray(Image.fromarray(image).resize((layout.tile, layout.tile), Image.Resampling.BILINEAR))
    canvas = _compose(tiles, layout)
    _frame(canvas, layout, highlight)
    return canvas, layout


_BACKGROUND = 40


def _compose(tiles: np.ndarray, layout: GridLayout) -> np.ndarray:
    """Lay ``(C, h, w)`` or ``(C, h, w, 3)`` uint8 tiles (h, w <= tile) out on one canvas."""
    count, h, w = tiles.shape[:3]
    step = layout.tile + layout.pad
    extra = tiles.shape[3:]
    cells = np.full((layout.rows * layout.cols, step, step) + extra, _BACKGROUND, np.uint8)
    cells[:count, :h, :w] = tiles
    grid = cells.reshape((layout.rows, layout.cols, step, step) + extra).swapaxes(1, 2)
    grid = grid.reshape((layout.rows * step, layout.cols * step) + extra)
    return np.pad(grid, [(layout.pad, 0), (layout.pad, 0)] + [(0, 0)] * len(extra), constant_values=_BACKGROUND)


def _digit_glyphs() -> list[np.ndarray]:
    """Boolean masks of the digits 0-9 in Pillow's built-in bitmap font (no font files needed)."""
    font = ImageFont.load_default_imagefont() if hasattr(ImageFont, "load_default_imagefont") else ImageFont.load_default()
    boxes = [font.getbbox(d) for d in "0123456789"]
    width, height = max(b[2] for b in boxes), max(b[3] for b in boxes)
    glyphs = []
    for digit in "0123456789":
        image = Image.new("L", (width, height), 0)
        ImageDraw.Draw(image).text((0, 0), digit, fill=255, font=font)
        glyphs.append(np.asarray(image) > 127)
    return glyphs


def _stamp_number(canvas: np.ndarray, layout: GridLayout, number: int, glyphs: list[np.ndarray]) -> None:
    y, x = layout.origin(number)
    digits = [int(d) for d in str(number)]
    gh, gw = glyphs[0].shape
    box_w = min(layout.tile, 2 + len(digits) * gw)
    canvas[y:y + gh + 1, x:x + box_w] = 0
    for i, d in enumerate(digits):
        left = x + 1 + i * gw
        if left + gw > x + layout.tile:
            break
        region = canvas[y:y + gh, left:left + gw]
        region[glyphs[d]] = 255


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


def _about_zero(values: np.ndarray, bound: np.ndarray | float) -> np.ndarray:
    """Weights to uint8 with 0 at mid-grey and ±``bound`` at the ends."""
    return np.clip(values / np.maximum(bound, 1e-12) * 127.5 + 128.0, 0, 255).astype(np.uint8)


def _tiles(tiles: np.ndarray, cols: int | None = None) -> tuple[np.ndarray, GridLayout]:
    """``(C, h, w)`` or ``(C, h, w, 3)`` uint8 tiles enlarged to the layout's tile size, on one canvas."""
    layout = grid_layout(tiles.shape[0], tiles.shape[1], tiles.shape[2], cols)
    factor = layout.tile // max(tiles.shape[1], tiles.shape[2])
    return _compose(tiles.repeat(factor, axis=1).repeat(factor, axis=2), layout), layout


def weight_tiles(weight: torch.Tensor, cols: int | None = None) -> tuple[np.ndarray, GridLayout]:
    """First-layer filters ``(C_out, C_in, k, k)`` as tiles, each scaled symmetrically about 0: RGB tiles
    for ``C_in`` = 3, gray tiles for a grayscale network's ``C_in`` = 1."""
    w = _as_numpy(weight)
    if w.ndim != 4 or w.shape[1] not in (1, 3):
        raise DeepvisError(f"weight_tiles needs (C_out, 3, k, k) or (C_out, 1, k, k), got {w.shape}")
    bound = np.abs(w).reshape(w.shape[0], -1).max(axis=1)[:, None, None, None]
    tiles = _about_zero(w, bound)
    return _tiles(tiles[:, 0] if w.shape[1] == 1 else tiles.transpose(0, 2, 3, 1), cols)


def kernel_tiles(kernels: torch.Tensor | np.ndarray) -> tuple[np.ndarray, GridLayout]:
    """One filter's kernels ``(C_in, kh, kw)`` as grey tiles, all scaled about 0 by the filter's largest
    ``|w|``, so its kernels compare."""
    k = _as_numpy(kernels)
    if k.ndim != 3:
        raise DeepvisError(f"kernel_tiles needs (C_in, kh, kw), got {k.shape}")
    return _tiles(_about_zero(k, float(np.abs(k).max())))


JPEG_QUALITY = 85


def jpeg_bytes(image: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """Encode a ``uint8`` grey or RGB image as JPEG (lossy: for live video frames, never for stills)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def png_bytes(image: np.ndarray, compress_level: int = 1) -> bytes:
    """Encode a ``uint8`` grey or RGB image as PNG (lossless; fast compression by default)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


# --- Backward images (deepvis.backprop): the deep-visualization-toolbox's display filters ---------------------

BACKPROP_FILTERS = ("raw", "gray", "norm", "norm_blur")


def _symmetric_uint8(values: np.ndarray) -> np.ndarray:
    """Map ``[-b, b]`` to 0-255 with zero at 128, where ``b`` is the largest magnitude."""
    bound = float(np.abs(values).max()) if values.size else 0.0
    if bound < 1e-12:
        return np.full(values.shape, 128, np.uint8)
    return np.clip(np.floor(values * (127.5 / bound) + 128.0), 0, 255).astype(np.uint8)


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Blur a float ``(H, W)`` map with a Gaussian of ``sigma`` pixels (the optimizer's blur, scipy's edges)."""
    from deepvis.regularizers import gaussian_blur as blur_rows

    x = torch.as_tensor(np.asarray(image, dtype=np.float32))[None, None]
    return blur_rows(x, float(sigma))[0, 0].numpy() if sigma > 0 else x[0, 0].numpy()


def _gradient_hwc(gradient: torch.Tensor | np.ndarray) -> np.ndarray:
    array = _as_numpy(gradient)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise DeepvisError(f"A backward image needs one gradient (C, H, W), got shape {array.shape}")
    return array.transpose(1, 2, 0)


def gradient_norm(gradient: torch.Tensor | np.ndarray, blur_sigma: float = 0.0) -> np.ndarray:
    """L2 norm over the colour channels of ``(C, H, W)`` -> float ``(H, W)``, optionally blurred."""
    norm = np.linalg.norm(_gradient_hwc(gradient), axis=2)
    return gaussian_blur(norm, blur_sigma) if blur_sigma > 0 else norm.astype(np.float32)


def backprop_image(gradient: torch.Tensor | np.ndarray, filter: str = "raw", blur_sigma: float = 4.0) -> np.ndarray:
    """Show a gradient ``(C, H, W)`` (one image of :mod:`deepvis.backprop`'s output) as ``uint8``.

    ``raw``: ``(H, W, 3)`` signed (``(H, W)`` for a one-channel gradient), zero = grey 128,
    scaled by the largest magnitude; ``gray``: ``(H, W)`` mean over channels, same signed scaling;
    ``norm``: ``(H, W)`` L2 norm over channels, ``[0, max]`` to 0-255;
    ``norm_blur``: the norm after a Gaussian blur of ``blur_sigma`` pixels.
    """
    if filter not in BACKPROP_FILTERS:
        raise DeepvisError(f"filter must be one of {BACKPROP_FILTERS}, not {filter!r}")
    if filter == "raw":
        signed = _gradient_hwc(gradient)
        return _symmetric_uint8(signed[..., 0] if signed.shape[2] == 1 else signed)
    if filter == "gray":
        return _symmetric_uint8(_gradient_hwc(gradient).mean(axis=2))
    norm = gradient_norm(gradient, blur_sigma if filter == "norm_blur" else 0.0)
    return to_uint8(norm, 0.0, float(norm.max()))


def backprop_overlay(photo: np.ndarray, gradient: torch.Tensor | np.ndarray, blur_sigma: float = 4.0,
                     alpha: float = 0.6) -> np.ndarray:
    """The gradient's blurred norm, heat-coloured over the ``(H, W, 3)`` photo the network saw."""
    return overlay(photo, gradient_norm(gradient, blur_sigma), alpha)


FONT_FILE = Path(__file__).parent / "fonts" / "DejaVuSans.ttf"  # shipped: DejaVu Sans has "≤", "σ", "×", "·"


def label_font(size: int = 13) -> ImageFont.FreeTypeFont:
    """The font every label is drawn with (shipped with the package, see ``fonts/LICENSE-DejaVu.txt``)."""
    return ImageFont.truetype(str(FONT_FILE), size)


def wrap_label(text: str, width: float, font: ImageFont.FreeTypeFont) -> list[str]:
    """Lines of at most ``width`` pixels, broken between `` · ``-separated phrases, else between words."""
    phrases = _greedy_lines(text.split(" · "), " · ", width, font)
    return [line for phrase in phrases for line in _greedy_lines(phrase.split(" "), " ", width, font)]


def _greedy_lines(pieces: Sequence[str], separator: str, width: float, font: ImageFont.FreeTypeFont) -> list[str]:
    lines, current = [], ""
    for piece in pieces:
        candidate = f"{current}{separator}{piece}" if current else piece
        if current and font.getlength(candidate) > width:
            lines.append(current)
            current = piece
        else:
            current = candidate
    return lines + [current]


def compose_sheet(images: np.ndarray, rows: int, cols: int, row_labels: Sequence[str] = (),
                  col_labels: Sequence[str] = (), pad: int = 6) -> np.ndarray:
    """Lay ``(rows * cols, H, W, 3)`` uint8 images out row-major with labels -> one uint8 image.

    Column labels are wrapped to the image width between phrases; row labels sit left of their row.
    """
    array = np.asarray(images)
    if array.ndim != 4 or array.shape[0] != rows * cols or array.shape[-1] != 3:
        raise DeepvisError(f"compose_sheet needs ({rows * cols}, H, W, 3) images, got shape {array.shape}")
    if row_labels and len(row_labels) != rows or col_labels and len(col_labels) != cols:
        raise DeepvisError("need one label per row and per column")
    font = label_font()
    line = font.size + 4
    height, width = array.shape[1:3]
    wrapped = [wrap_label(label, width, font) for label in col_labels]
    top = line * max(len(w) for w in wrapped) + pad if col_labels else 0
    left = int(max(font.getlength(t) for t in row_labels)) + 2 * pad if row_labels else 0
    sheet = Image.new("RGB", (left + cols * (width + pad) + pad, top + rows * (height + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for c, lines in enumerate(wrapped):
        for k, text in enumerate(lines):
            draw.text((left + pad + c * (width + pad), pad // 2 + k * line), text, fill="black", font=font)
    for r in range(rows):
        y = top + pad + r * (height + pad)
        if row_labels:
            draw.text((pad, y + height // 2 - line // 2), row_labels[r], fill="black", font=font)
        for c in range(cols):
            sheet.paste(Image.fromarray(array[r * cols + c]), (left + pad + c * (width + pad), y))
    return np.asarray(sheet, dtype=np.uint8)


def gif_bytes(frames: Sequence[np.ndarray], duration_ms: int = 80) -> bytes:
    """An endlessly looping animated GIF of ``(H, W, 3)`` uint8 frames."""
    if not frames:
        raise DeepvisError("a GIF needs at least one frame")
    pictures = [Image.fromarray(np.asarray(f, dtype=np.uint8)) for f in frames]
    buffer = io.BytesIO()
    pictures[0].save(buffer, format="GIF", save_all=True, append_images=pictures[1:], duration=duration_ms,
                     loop=0, optimize=False)
    return buffer.getvalue()
