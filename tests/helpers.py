"""Small helpers shared by tests (import as ``from tests.helpers import …``: one module object for all)."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image
from torch import nn


def jpeg_bytes(array: np.ndarray, quality: int = 92) -> bytes:
    """Encode a ``(H, W, 3)`` uint8 array as JPEG bytes, as a phone or camera would send it."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


class Untraceable(nn.Module):
    """conv 3->4 (3x3) -> ReLU -> conv 4->2 (1x1), with data-dependent control flow torch.fx cannot trace."""

    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):  # the same weights whatever ran before
            torch.manual_seed(0)
            self.conv, self.relu, self.head = nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1)
        self.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.conv(x))
        return self.head(y) if y.sum() > 0 else self.head(-y)


def drain(generator):
    """Run a generator to its end: ``(its return value, everything it yielded)``."""
    steps = []
    while True:
        try:
            steps.append(next(generator))
        except StopIteration as stop:
            return stop.value, steps


def start_run(at, page: str, timeout: float = 300):
    """Click the page's Start (``page`` is ``"opt"`` or ``"cmp"``), wait for the run computing beside the page
    to end, and rerun the page to draw what it made; the run's state."""
    at.button(key=f"{page}_start").click().run()
    state = at.session_state[f"{page}_run"] if f"{page}_run" in at.session_state else None
    if state is not None and state.thread is not None:
        assert state.wait(timeout), "the run did not end in time"
        at.run()
    return state
