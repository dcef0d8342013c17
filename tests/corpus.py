"""A corpus of odd and hostile uploads, generated in code (no binary fixtures).

Every :class:`Upload` says what a correct decoder must do with it:

* ``ok=False``: refuse it with a one-line :class:`deepvis.images.ImageDecodeError`
  whose message contains one of ``error_words`` (lower case).
* ``ok=True``: return an RGB image of exactly ``size`` (width, height) whose pixels
  at the ``probes`` (fractions of width and height) are within ``tol`` of the given
  colours - this is what checks orientation, colour and transparency handling.

Used by ``tests/test_bad_input.py`` (library), the CLI test and the browser and
AppTest tests (the page must show the same behaviour). Cases are built lazily and
cached, so a test that needs one case does not pay for the 8000 x 6000 photo.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

RED, GREEN, BLUE, WHITE, BLACK = (255, 0, 0), (0, 160, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)
Probe = tuple[float, float, tuple[int, int, int]]


@dataclass(frozen=True)
class Upload:
    name: str
    filename: str
    data: bytes
    ok: bool
    what: str
    size: tuple[int, int] | None = None
    probes: tuple[Probe, ...] = ()
    tol: int = 0
    error_words: tuple[str, ...] = ()
    gray: bool = False  # expected R == G == B everywhere
    extra: dict = field(default_factory=dict)


# --- hand-made PNG pieces -------------------------------------------------------

def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_bytes(width: int, height: int, bit_depth: int, color_type: int, raw_rows: bytes) -> bytes:
    """A PNG from already-filtered scanlines (each row starts with filter byte 0)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(raw_rows, 9)) + png_chunk(b"IEND", b""))


def _save(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _halves(width: int, height: int, top: tuple, bottom: tuple, mode: str = "RGB") -> Image.Image:
    """``top`` colour above the middle row, ``bottom`` below."""
    image = Image.new(mode, (width, height), bottom)
    image.paste(top, (0, 0, width, height // 2))
    return image


def _quadrants(width: int, height: int) -> Image.Image:
    """Red top-left, green top-right, blue bottom-left, white bottom-right."""
    image = Image.new("RGB", (width, height), WHITE)
    w2, h2 = width // 2, height // 2
    image.paste(RED, (0, 0, w2, h2))
    image.paste(GREEN, (w2, 0, width, h2))
    image.paste(BLUE, (0, h2, w2, height))
    return image


QUADRANT_PROBES: tuple[Probe, ...] = ((0.25, 0.25, RED), (0.75, 0.25, GREEN), (0.25, 0.75, BLUE), (0.75, 0.75, WHITE))


def photo_bytes(width: int = 320, height: int = 240, quality: int = 90) -> bytes:
    """A small, valid 'good' photo (quadrants) for 'the next upload still works' checks."""
    return _save(_quadrants(width, height), "JPEG", quality=quality)


def _exif_rotated(orientation: int) -> bytes:
    """An upright 60x40 picture (red top half with a green top-left corner, blue bottom
    half), stored rotated or mirrored so that
    applying the EXIF ``orientation`` brings it back upright."""
    upright = _halves(60, 40, RED, BLUE)
    upright.paste(GREEN, (0, 0, 20, 14))  # marks the top-left corner, so mirroring shows too
    # How the camera stored it: the inverse of what the orientation tag asks the viewer to do.
    stored = {
        3: upright.transpose(Image.Transpose.ROTATE_180),
        6: upright.transpose(Image.Transpose.ROTATE_90),   # viewer rotates 90 deg clockwise
        8: upright.transpose(Image.Transpose.ROTATE_270),  # viewer rotates 90 deg counter-clockwise
        2: upright.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    }[orientation]
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _save(stored, "JPEG", quality=95, exif=exif.tobytes())


# --- the cases ----------------------------------------------------------------------

def _empty() -> Upload:
    return Upload("empty", "empty.jpg", b"", False, "a 0-byte file", error_words=("empty",))


def _truncated_jpeg() -> Upload:
    data = _save(_quadrants(400, 300), "JPEG", quality=90)
    return Upload("truncated_jpeg", "truncated.jpg", data[: len(data) // 2], False,
                  "the first half of a JPEG", error_words=("truncated", "damaged"))


def _truncated_png() -> Upload:
    data = _save(_quadrants(200, 150), "PNG")
    return Upload("truncated_png", "truncated.png", data[: len(data) - 40], False,
                  "a PNG cut off inside its pixel data", error_words=("truncated", "damaged"))


def _text_as_jpg() -> Upload:
    return Upload("text_as_jpg", "notes.jpg", b"Shopping list\nmilk\neggs\n" * 20, False,
                  "a text file named .jpg", error_words=("not an image",))


def _html_as_png() -> Upload:
    data = b"<!doctype html><html><body><script>alert('x')</script><b>hi</b></body></html>\n"
    return Upload("html_as_png", "page.png", data, False, "an HTML page named .png", error_words=("not an image",))


def _svg_as_png() -> Upload:
    data = (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100">'
            b'<script>alert(1)</script><rect width="100" height="100" fill="red"/></svg>\n')
    return Upload("svg_as_png", "drawing.png", data, False, "an SVG drawing named .png", error_words=("not an image",))


def _png_bomb() -> Upload:
    # Declares 50000 x 50000 8-bit grayscale; the IDAT holds two rows only. Decoding it would
    # need 2.5 GB, so a safe decoder must refuse it from the header alone.
    rows = b"\x00" + b"\x00" * 50000
    data = png_bytes(50000, 50000, 8, 0, rows * 2)
    return Upload("png_bomb", "bomb.png", data, False, "a PNG declaring 50000 x 50000 pixels (decompression bomb)",
                  error_words=("bomb", "too many pixels", "megapixel"))


def _png_zero_width() -> Upload:
    data = png_bytes(0, 10, 8, 0, b"\x00" * 10)
    return Upload("png_zero_width", "zero.png", data, False, "a PNG declaring 0 x 10 pixels",
                  error_words=("no pixels", "damaged", "not an image"))


def _too_big_file() -> Upload:
    from deepvis.images import MAX_FILE_BYTES

    data = photo_bytes(64, 48) + b"\x00" * (MAX_FILE_BYTES + 1)
    return Upload("too_big_file", "huge.jpg", data, False, "a file one byte over the upload limit",
                  error_words=("limit",))


def _eps_as_jpg() -> Upload:
    # Pillow hands EPS files to Ghostscript (an external interpreter) when it is installed;
    # an upload must never reach it, so this must be refused as "not an image".
    data = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nnewpath 0 0 moveto showpage\n"
    return Upload("eps_as_jpg", "vector.jpg", data, False, "an EPS (PostScript) file named .jpg",
                  error_words=("not an image",))


def _png16_rgba() -> Upload:
    # Hand-made 64-bit RGBA PNG: opaque red on top, fully transparent blue below (-> white).
    width, height = 8, 8
    red, clear = struct.pack(">HHHH", 65535, 0, 0, 65535), struct.pack(">HHHH", 0, 0, 65535, 0)
    rows = b"".join(b"\x00" + (red if y < height // 2 else clear) * width for y in range(height))
    data = png_bytes(width, height, 16, 6, rows)
    return Upload("png16_rgba", "rgba16.png", data, True, "16-bit RGBA PNG", size=(width, height),
                  probes=((0.5, 0.2, RED), (0.5, 0.8, WHITE)), tol=1)


def _png16_gray() -> Upload:
    # Left half full white (65535), right half 1000/65535 (dark, must stay dark: no stretching).
    values = np.full((32, 64), 1000, dtype=np.uint16)
    values[:, :32] = 65535
    data = _save(Image.fromarray(values), "PNG")
    return Upload("png16_gray", "gray16.png", data, True, "16-bit grayscale PNG", size=(64, 32),
                  probes=((0.25, 0.5, WHITE), (0.75, 0.5, (4, 4, 4))), tol=1, gray=True)


def _png16_rgb() -> Upload:
    # Hand-made 48-bit RGB PNG (Pillow cannot write one): red on top, blue below.
    width, height = 16, 8
    red, blue = struct.pack(">HHH", 65535, 0, 0), struct.pack(">HHH", 0, 0, 65535)
    rows = b"".join(b"\x00" + (red if y < height // 2 else blue) * width for y in range(height))
    data = png_bytes(width, height, 16, 2, rows)
    return Upload("png16_rgb", "rgb16.png", data, True, "16-bit RGB PNG", size=(width, height),
                  probes=((0.5, 0.2, RED), (0.5, 0.8, BLUE)), tol=1)


def _cmyk_jpeg() -> Upload:
    image = Image.new("CMYK", (80, 60), (0, 0, 0, 0))  # white paper
    image.paste((0, 255, 255, 0), (0, 0, 40, 60))  # magenta + yellow ink = red
    data = _save(image, "JPEG", quality=95)
    return Upload("cmyk_jpeg", "print.jpg", data, True, "CMYK JPEG (red left half, paper-white right)",
                  size=(80, 60), probes=((0.2, 0.5, RED), (0.8, 0.5, WHITE)), tol=12)


def _palette_transparent() -> Upload:
    image = Image.new("P", (40, 20), 0)
    image.putpalette([0, 0, 0] + [255, 0, 0] + [0, 0, 0] * 254)
    image.paste(1, (0, 0, 20, 20))  # left half palette entry 1 (red); right half entry 0 (transparent)
    data = _save(image, "PNG", transparency=0)
    return Upload("palette_transparent", "palette.png", data, True,
                  "palette PNG, right half transparent (composited on white)", size=(40, 20),
                  probes=((0.25, 0.5, RED), (0.75, 0.5, WHITE)))


def _la() -> Upload:
    image = Image.new("LA", (40, 20), (0, 0))  # fully transparent black -> white
    image.paste((100, 255), (0, 0, 20, 20))
    data = _save(image, "PNG")
    return Upload("la_png", "la.png", data, True, "grayscale + alpha PNG", size=(40, 20),
                  probes=((0.25, 0.5, (100, 100, 100)), (0.75, 0.5, WHITE)), gray=True)


def _rgba() -> Upload:
    image = Image.new("RGBA", (40, 20), (0, 0, 255, 0))  # transparent blue -> white
    image.paste((255, 0, 0, 255), (0, 0, 20, 20))
    image.paste((0, 0, 0, 128), (20, 10, 40, 20))  # half-transparent black over white -> mid grey
    data = _save(image, "PNG")
    return Upload("rgba_png", "rgba.png", data, True, "RGBA PNG with opaque, clear and half-clear parts",
                  size=(40, 20), probes=((0.25, 0.5, RED), (0.75, 0.25, WHITE), (0.75, 0.75, (127, 127, 127))), tol=1)


def _animated_gif() -> Upload:
    frames = [Image.new("RGB", (30, 20), colour) for colour in (RED, BLUE, GREEN)]
    data = _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return Upload("animated_gif", "anim.gif", data, True, "animated GIF (red, blue, green frames)",
                  size=(30, 20), probes=((0.5, 0.5, RED),), extra={"frames": 3})


def _exif(orientation: int) -> Callable[[], Upload]:
    def make() -> Upload:
        probes = ((0.1, 0.1, GREEN), (0.75, 0.2, RED), (0.9, 0.1, RED), (0.1, 0.9, BLUE), (0.9, 0.9, BLUE))
        return Upload(f"exif_orientation_{orientation}", f"phone{orientation}.jpg", _exif_rotated(orientation), True,
                      f"photo stored rotated with EXIF orientation {orientation} (red must come out on top)",
                      size=(60, 40), probes=probes, tol=30)

    return make


def _one_pixel() -> Upload:
    data = _save(Image.new("RGB", (1, 1), (10, 200, 30)), "PNG")
    return Upload("one_pixel", "dot.png", data, True, "a 1 x 1 image", size=(1, 1), probes=((0.5, 0.5, (10, 200, 30)),))


def _big_photo() -> Upload:
    # 8000 x 6000 with smooth noise-free quadrants: a ~48-megapixel phone photo.
    data = _save(_quadrants(8000, 6000), "JPEG", quality=85)
    return Upload("photo_8000x6000", "big.jpg", data, True, "an 8000 x 6000 JPEG photo (downscaled to 2048 px)",
                  size=(2048, 1536), probes=QUADRANT_PROBES, tol=20)


def _big_png() -> Upload:
    # A lossless 6000 x 4000 PNG: no JPEG draft shortcut, so the decoder must downscale after load.
    image = _quadrants(6000, 4000)
    data = _save(image, "PNG", compress_level=1)
    return Upload("png_6000x4000", "big.png", data, True, "a 6000 x 4000 PNG (downscaled to 2048 px)",
                  size=(2048, 1365), probes=QUADRANT_PROBES, tol=3)


def _strip() -> Upload:
    image = Image.new("RGB", (4000, 20), RED)
    image.paste(BLUE, (2000, 0, 4000, 20))
    data = _save(image, "PNG")
    return Upload("strip_4000x20", "strip.png", data, True, "a very wide 4000 x 20 strip", size=(2048, 10),
                  probes=((0.25, 0.5, RED), (0.75, 0.5, BLUE)), tol=3)


def _grayscale_jpeg() -> Upload:
    image = _halves(50, 40, 30, 220, mode="L")
    data = _save(image, "JPEG", quality=95)
    return Upload("grayscale_jpeg", "gray.jpg", data, True, "8-bit grayscale JPEG", size=(50, 40),
                  probes=((0.5, 0.1, (30, 30, 30)), (0.5, 0.9, (220, 220, 220))), tol=6, gray=True)


def _bilevel() -> Upload:
    image = Image.new("1", (16, 16), 1)
    image.paste(0, (0, 0, 8, 16))
    data = _save(image, "PNG")
    return Upload("bilevel_png", "bw.png", data, True, "1-bit black and white PNG", size=(16, 16),
                  probes=((0.25, 0.5, BLACK), (0.75, 0.5, WHITE)), gray=True)


def _jpeg_named_png() -> Upload:
    return Upload("jpeg_named_png", "really_a_jpeg.png", photo_bytes(64, 48), True,
                  "a JPEG with a .png name (content decides)", size=(64, 48), probes=QUADRANT_PROBES, tol=20)


def _webp() -> Upload:
    data = _save(_quadrants(64, 48), "WEBP", lossless=True)
    return Upload("webp", "photo.webp", data, True, "lossless WebP", size=(64, 48), probes=QUADRANT_PROBES)


BUILDERS: dict[str, Callable[[], Upload]] = {
    "empty": _empty,
    "truncated_jpeg": _truncated_jpeg,
    "truncated_png": _truncated_png,
    "text_as_jpg": _text_as_jpg,
    "html_as_png": _html_as_png,
    "svg_as_png": _svg_as_png,
    "png_bomb": _png_bomb,
    "png_zero_width": _png_zero_width,
    "too_big_file": _too_big_file,
    "eps_as_jpg": _eps_as_jpg,
    "png16_gray": _png16_gray,
    "png16_rgba": _png16_rgba,
    "png16_rgb": _png16_rgb,
    "cmyk_jpeg": _cmyk_jpeg,
    "palette_transparent": _palette_transparent,
    "la_png": _la,
    "rgba_png": _rgba,
    "animated_gif": _animated_gif,
    "exif_orientation_3": _exif(3),
    "exif_orientation_6": _exif(6),
    "exif_orientation_8": _exif(8),
    "exif_orientation_2": _exif(2),
    "one_pixel": _one_pixel,
    "photo_8000x6000": _big_photo,
    "png_6000x4000": _big_png,
    "strip_4000x20": _strip,
    "grayscale_jpeg": _grayscale_jpeg,
    "bilevel_png": _bilevel,
    "jpeg_named_png": _jpeg_named_png,
    "webp": _webp,
}
NAMES = tuple(BUILDERS)
# Cases deepvis.images gets wrong today (reported to the lead); the tests mark them
# xfail(strict=True) so a fix shows up as XPASS and the mark must then be removed.
KNOWN_BUGS: dict[str, str] = {}
# Cheap to build and small enough to upload many times (no multi-megabyte cases).
SMALL_NAMES = tuple(n for n in NAMES if n not in ("photo_8000x6000", "png_6000x4000", "too_big_file"))


@functools.cache
def get(name: str) -> Upload:
    upload = BUILDERS[name]()
    assert upload.name == name
    return upload
