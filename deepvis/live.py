"""Live video through the network: one camera frame in, the layer's grid, the top-5 and a unit's map out.

Conventions
-----------
* A frame is ``(H, W, 3)`` uint8 RGB, any size; the network sees its centre crop at the model's input
  size, as a still photo's (:func:`deepvis.activations.analyze`, one forward pass for the layer and the
  logits, through the BatchNorm-folded copy of the shared model's graph (:func:`deepvis.activations.capture`;
  the same values to about 1e-5, a quarter faster): nothing is left on the model, and any number of threads
  can analyze frames at once, each getting its own result).
* Only the newest frame is analyzed: the page takes every frame that arrived since the last one and uses
  the newest, so a slow analysis drops frames instead of queueing them and the view never falls behind.
* :class:`Meter` keeps the frame rate (frames drawn per second over the last :data:`WINDOW` seconds),
  the latency (a frame's age when its result is drawn) and what was dropped, as a person reads them.
* ICE servers (:func:`ice_servers`): none by default, so a browser and a server on one machine connect
  without contacting anything (no STUN, no TURN); ``DEEPVIS_ICE_SERVERS`` (a JSON list of WebRTC
  ``RTCIceServer`` objects, e.g. ``[{"urls": "stun:stun.l.google.com:19302"}]``) adds servers for use across
  networks.
"""

from __future__ import annotations

import collections
import json
import os
import time
from dataclasses import dataclass

import numpy as np
from PIL import Image

from deepvis.errors import DeepvisError
from deepvis.activations import ImageAnalysis, analyze
from deepvis.models import LoadedModel
from deepvis.render import GridLayout, channel_grid

WINDOW = 2.0  # seconds of history behind the frame rate shown
ICE_ENV = "DEEPVIS_ICE_SERVERS"


class LiveError(DeepvisError):
    """A live setting is unusable (bad ICE server list, not an RGB frame); the message is one line."""


def ice_servers() -> list[dict]:
    """The ICE servers WebRTC may use: ``[]`` (offline, same machine) unless ``DEEPVIS_ICE_SERVERS`` names some."""
    text = os.environ.get(ICE_ENV, "").strip()
    if not text:
        return []
    try:
        servers = json.loads(text)
    except ValueError:
        raise LiveError(f"{ICE_ENV} is not JSON; give a list like [{{\"urls\": \"stun:host:3478\"}}].") from None
    if not isinstance(servers, list) or not all(isinstance(s, dict) and "urls" in s for s in servers):
        raise LiveError(f"{ICE_ENV} must be a JSON list of objects with \"urls\".")
    return servers


@dataclass(frozen=True)
class LiveResult:
    """One analyzed frame: the still-image analysis, the layer's grid, and how long it took."""

    analysis: ImageAnalysis
    grid: np.ndarray  # (H', W') uint8, every channel of the layer (deepvis.render.channel_grid)
    layout: GridLayout
    seconds: float  # analysis and grid, on this thread


def analyze_frame(loaded: LoadedModel, frame: np.ndarray, layer: str, unit: int | None = None,
                  scaling: str = "channel") -> LiveResult:
    """One camera frame through ``loaded`` to ``layer``: predictions, activation, its channel grid (``unit``
    framed)."""
    array = np.asarray(frame)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise LiveError(f"a frame is an (H, W, 3) uint8 RGB image, not {array.dtype} {array.shape}")
    started = time.perf_counter()
    result = analyze(loaded, Image.fromarray(array), layer, folded=True)
    grid, layout = channel_grid(result.activation, scaling, numbers=False, highlight=unit)
    return LiveResult(result, grid, layout, time.perf_counter() - started)


class Meter:
    """Frames per second and latency over the last :data:`WINDOW` seconds (module docstring).

    Latency is a frame's age when its result is drawn: ``now − (capture time + offset)``, where the capture
    time is the frame's own timestamp (the browser's clock) and the offset is the smallest ``arrival −
    capture time`` seen so far (the two clocks' difference plus the fastest transport).  So it counts the
    waiting and the work on this side, and none of the clock difference.
    """

    def __init__(self) -> None:
        self._done: collections.deque[tuple[float, float]] = collections.deque()
        self._offset: float | None = None
        self.frames = self.dropped = 0

    def arrived(self, captured: float, received: int = 1, now: float | None = None) -> None:
        """``received`` frames came in (only the newest, captured at ``captured`` s, is used)."""
        now = time.perf_counter() if now is None else now
        self._offset = now - captured if self._offset is None else min(self._offset, now - captured)
        self.dropped += received - 1

    def drawn(self, captured: float, now: float | None = None) -> None:
        """The frame captured at ``captured`` is on screen ``now``."""
        now = time.perf_counter() if now is None else now
        offset = self._offset if self._offset is not None else now - captured
        self._done.append((now, now - (captured + offset)))
        self.frames += 1
        while self._done and self._done[0][0] < now - WINDOW:
            self._done.popleft()

    @property
    def fps(self) -> float:
        if len(self._done) < 2:
            return 0.0
        span = self._done[-1][0] - self._done[0][0]
        return (len(self._done) - 1) / span if span > 0 else 0.0

    @property
    def latency_ms(self) -> float:
        return 1000 * float(np.mean([lag for _, lag in self._done])) if self._done else 0.0

    @property
    def label(self) -> str:
        return (f"{self.fps:.1f} frames/s · latency {self.latency_ms:.0f} ms · {self.frames} frames shown, "
                f"{self.dropped} dropped")
