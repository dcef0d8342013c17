"""Safe image decoding and the one place where images become model input.

Conventions
-----------
* ``decode_image(bytes)`` returns an 8-bit RGB ``PIL.Image`` the right way up
  (EXIF orientation applied), from the first frame of an animation, with
  transparency composited on white, and no side longer than ``max_side``.
  Anything it cannot turn into such an image raises :class:`ImageDecodeError`
  whose message is one plain sentence.
* ``model_view(image, spec)`` is what the network sees: the shorter side scaled
  to ``spec.resize_size`` (to ``spec.input_size`` when it is ``None``) and the
  centre ``spec.input_size`` square cropped, as ``(S, S, 3)`` uint8 (values 0-255).
  For a grayscale network (``spec.channels == 1``) the view is the photo's luminance
  (ITU-R 601, Pillow's ``L``) in all three channels, so gray is shown as gray.
* ``preprocess(image, spec)`` is that view as a ``(1, C, S, S)`` float tensor
  normalized with the model's mean and std: ``(pixel / 255 - mean) / std``; ``C`` is
  the network's channels (a gray view gives its one channel).
"""

from __future__ import annotations

import functools
import io
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from deepvis.errors import DeepvisError
from deepvis.models import ModelSpec, Normalization

MAX_FILE_BYTES = 50 * 1024 * 1024
# Raster formats only: Pillow would hand EPS/PS to Ghostscript, an interpreter, if it is installed.
FORMATS = ("JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP", "TIFF")
MAX_PIXELS = 100_000_000  # a 100-megapixel photo is fine; 50000 x 50000 is a bomb
DEFAULT_MAX_SIDE = 2048
SAMPLE_NAMES = ("chelsea", "coffee", "astronaut", "rocket")


class ImageDecodeError(DeepvisError):
    """The bytes are not an image deepvis can use; the message says why."""


def decode_image(data: bytes, max_side: int = DEFAULT_MAX_SIDE) -> Image.Image:
    """Decode uploaded or camera bytes into a safe RGB image (see module docstring)."""
    if not data:
        raise ImageDecodeError("The file is empty (0 bytes).")
    if len(data) > MAX_FILE_BYTES:
        raise ImageDecodeError(f"The file is {len(data) / 2**20:.0f} MB; the limit is {MAX_FILE_BYTES // 2**20} MB.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # MAX_PIXELS decides below
            Image.init()  # registers Pillow's plugins (idempotent), so every name in FORMATS is known
            image = Image.open(io.BytesIO(data), formats=[f for f in FORMATS if f in Image.OPEN])
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageDecodeError(
                    f"The image declares {width} x {height} pixels, more than the "
                    f"{MAX_PIXELS // 1_000_000}-megapixel limit (a decompression bomb?).")
            if width < 1 or height < 1:
                raise ImageDecodeError("The image has no pixels.")
            image.seek(0)
            if image.format == "JPEG":
                image.draft("RGB", (max_side, max_side))  # decode large JPEGs at reduced size
            image.load()
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError("This file is not an image format deepvis can read (try JPEG, PNG, GIF, WebP, BMP or TIFF).") from None
    except Image.DecompressionBombError:
        raise ImageDecodeError("The image declares too many pixels (a decompression bomb?).") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(f"The image file is damaged or truncated ({_first_line(exc)}).") from None

    try:
        image = ImageOps.exif_transpose(image)
    except Exception:  # broken EXIF must not lose the picture
        pass
    image = _to_rgb(image)
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return image


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        black, white = _grey_range(image.mode, values)
        scaled = (values - black) * (255.0 / max(white - black, 1e-12))
        grey = Image.fromarray(np.clip(scaled + 0.5, 0, 255).astype(np.uint8), "L")
        if "transparency" in image.info:  # a 16-bit grey PNG's tRNS: composite on white like alpha
            mask = Image.fromarray((values != image.info["transparency"]).astype(np.uint8) * 255, "L")
            grey = Image.composite(grey, Image.new("L", grey.size, 255), mask)
        return grey.convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _grey_range(mode: str, values: np.ndarray) -> tuple[float, float]:
    """The values meaning black and white: 0-65535 for 16-bit files; for 32-bit int or float
    images the smallest usual range (0-1, 0-255, 0-65535) that holds them, else their min and max."""
    if mode.startswith("I;16"):
        return 0.0, 65535.0
    low, high = float(values.min()), float(values.max())
    if low >= 0:
        for white in (1.0, 255.0, 65535.0):
            if high <= white:
                return 0.0, white
    return low, high


def model_view(image: Image.Image, spec: ModelSpec, size: int | None = None) -> np.ndarray:
    """The centre crop the network sees, ``(S, S, 3)`` uint8; see module docstring."""
    size = size or spec.input_size
    resize = round((spec.resize_size or spec.input_size) * size / spec.input_size)
    if spec.channels == 1 and image.mode != "L":
        image = image.convert("L")
    width, height = image.size
    scale = resize / min(width, height)
    crop_w, crop_h = min(width, size / scale), min(height, size / scale)
    left, top = (width - crop_w) / 2, (height - crop_h) / 2
    view = image.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + crop_w, top + crop_h),
                        reducing_gap=3.0)
    return np.asarray(view.convert("RGB"), dtype=np.uint8)


def channel_stats(norm: Normalization, device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and std in 0-255 units as ``(1, C, 1, 1)`` tensors, to broadcast over a batch.

    Made once per (values, dtype, device) and shared by every caller and thread: read them, never write."""
    return _channel_stats(norm.mean, norm.std, dtype, torch.device(device))


@functools.lru_cache(maxsize=64)
def _channel_stats(mean: tuple[float, ...], std: tuple[float, ...], dtype: torch.dtype,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    norm = Normalization(mean, std)
    return (torch.tensor(norm.mean255, dtype=dtype, device=device).view(1, -1, 1, 1),
            torch.tensor(norm.std255, dtype=dtype, device=device).view(1, -1, 1, 1))


def normalize(pixels: torch.Tensor, norm: Normalization) -> torch.Tensor:
    """``(N, C, H, W)`` pixels in 0-255 -> the model's input space (a 3-channel gray view to 1 channel)."""
    if norm.channels == 1 and pixels.shape[1] == 3:
        pixels = pixels[:, :1]
    mean, std = channel_stats(norm, pixels.device, pixels.dtype)
    return (pixels - mean) / std


def to_batch(views: list[np.ndarray] | np.ndarray, norm: Normalization,
             device: torch.device | str = "cpu") -> torch.Tensor:
    """Stack ``(S, S, 3)`` uint8 views into a normalized ``(N, C, S, S)`` float batch."""
    array = np.stack(views) if isinstance(views, list) else views[None] if views.ndim == 3 else views
    pixels = torch.from_numpy(np.array(array, dtype=np.uint8, copy=True)).to(device).permute(0, 3, 1, 2).float()
    return normalize(pixels, norm)


def preprocess(image: Image.Image, spec: ModelSpec, device: torch.device | str = "cpu") -> torch.Tensor:
    """``image`` as the model's ``(1, C, S, S)`` normalized input."""
    return to_batch(model_view(image, spec), spec.normalization, device)


def sample_bytes(name: str) -> bytes:
    """The bytes of a bundled sample photo (scikit-image's public-domain samples)."""
    if name not in SAMPLE_NAMES:
        raise ImageDecodeError(f"No sample called {name!r}; choose one of {', '.join(SAMPLE_NAMES)}.")
    from importlib.resources import files

    return (files("deepvis") / "samples" / f"{name}.jpg").read_bytes()


def open_photo(source: str | Path | bytes) -> Image.Image:
    """A photo from a file path, its bytes, or the name of a bundled sample (``chelsea``, ``coffee``, ...),
    decoded as the pages decode uploads (:func:`decode_image`); a one-line :class:`ImageDecodeError` otherwise."""
    if isinstance(source, (bytes, bytearray)):
        return decode_image(bytes(source))
    if isinstance(source, str) and source in SAMPLE_NAMES:
        return decode_image(sample_bytes(source))
    try:
        data = Path(source).read_bytes()
    except OSError as exc:
        raise ImageDecodeError(f"Cannot read {source}: {exc.strerror or exc}.") from None
    return decode_image(data)
