"""Small helpers shared by tests (import as ``from helpers import …``)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def jpeg_bytes(array: np.ndarray, quality: int = 92) -> bytes:
    """Encode a ``(H, W, 3)`` uint8 array as JPEG bytes, as a phone or camera would send it."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
