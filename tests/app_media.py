"""What an AppTest run really drew: an image element's pixels, read back from the files the run sent.

An image element's value is a URL (``/mock/media/<id>.png``) into the in-memory media storage of the run,
which AppTest drops when the run ends; :func:`record_media` keeps each file as it is added.  Reading the
bytes that were sent checks the picture itself, not a helper of the page.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import PurePosixPath

import numpy as np
import pytest
from PIL import Image
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage


def record_media(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], np.ndarray]:
    """From now on (until the test ends), keep every media file the app sends; returns ``pixels(url)``,
    the uint8 pixels of the image at ``url`` as it was encoded (``(H, W)`` grey or ``(H, W, 3)`` RGB)."""
    files: dict[str, bytes] = {}
    real = MemoryMediaFileStorage.load_and_get_id

    def recording(self, path_or_data, mimetype, kind, filename=None) -> str:
        file_id = real(self, path_or_data, mimetype, kind, filename)
        files[file_id] = self.get_file(file_id).content
        return file_id

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", recording)

    def pixels(url: str) -> np.ndarray:
        data = files[PurePosixPath(url).stem]
        return np.asarray(Image.open(io.BytesIO(data)))

    return pixels
