"""Bounded, pure history of a running optimization, for pages and tests (no Streamlit).

Conventions
-----------
* A :class:`Frame` is one snapshot of a batch, kept as each image *scaled about
  zero* in 8 bits plus its scale ``max|x|`` (one float per image), the model's
  ``mean`` and what each row scored.  That is the default display exactly, and
  ``x = (v / 255 - 0.5) · 2·max|x|`` back to within ``max|x| / 255`` — under one grey
  level of the other displays even for a saturated image, and far finer than 8-bit
  ``x + mean`` for a faint one.  :meth:`Frame.view` draws any display
  (:mod:`deepvis.display`) without recomputing the run.  Never tensors; as small as
  uint8 frames.
* :class:`FrameHistory` keeps at most ``cap`` frames (from a byte budget and a
  frame limit), evenly spaced, always including the newest; a 1000-iteration
  run at 224 px stays within :data:`HISTORY_BYTES` (24 MB), so a session's two
  pages stay under 64 MB.
* :class:`RunState` is one Start of a page: it is filled as snapshots arrive
  (:func:`stream` records a snapshot before drawing it), so it survives a Stop
  or an interrupted script run; :func:`stream` always closes the generator.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

import numpy as np

from deepvis.display import DEFAULT_DISPLAY, show
from deepvis.experiment import Experiment
from deepvis.records import RunRecord, Snapshot

HISTORY_BYTES = 24 * 2**20  # frames kept per run (one per page), so a session's histories stay under 64 MB
HISTORY_FRAMES = 250


def snapshot_every(steps: int) -> int:
    """Snapshots every k iterations: about 200 per run, so the page updates often and Stop answers quickly
    (an interrupted run ends at its next snapshot), while the history stays small."""
    return max(1, steps // 200)


@dataclass(frozen=True, eq=False)
class Frame:
    """One recorded snapshot: the images of every row and what they scored."""

    iteration: int
    scaled: np.ndarray  # (B, H, W, 3) uint8: each image scaled about zero
    peaks: np.ndarray  # (B,) float32: each image's max|x|
    mean: tuple[float, float, float]
    objectives: np.ndarray  # (B,)
    steps: tuple[int, ...]  # each row's own iteration of its image
    finished: tuple[bool, ...]

    @classmethod
    def of(cls, snapshot: Snapshot) -> Frame:
        pixels = snapshot.pixels
        rows = snapshot.record.rows
        return cls(snapshot.iteration, show(pixels, snapshot.mean, "zero"),
                   np.abs(pixels).max(axis=(1, 2, 3)).astype(np.float32), snapshot.mean,
                   np.asarray(snapshot.objectives, dtype=np.float64).copy(),
                   tuple(row.steps_done - 1 for row in rows), tuple(row.finished for row in rows))

    @property
    def pixels(self) -> np.ndarray:
        """``(B, H, W, 3)`` float32 in the optimizer's pixel space (module docstring)."""
        return (self.scaled.astype(np.float32) / 255.0 - 0.5) * (2.0 * self.peaks.reshape(-1, 1, 1, 1))

    def view(self, mode: str = DEFAULT_DISPLAY) -> np.ndarray:
        """``(B, H, W, 3)`` uint8: every row's image in display ``mode``."""
        return self.scaled if mode == "zero" else show(self.pixels, self.mean, mode)

    @property
    def nbytes(self) -> int:
        return self.scaled.nbytes + self.peaks.nbytes


class FrameHistory:
    """Bounded history of a run's snapshots (pure; no Streamlit).

    Keeps 8-bit frames (and one scale per image) only, at most ``cap`` of them (from ``max_bytes`` and ``max_frames``, at least 2).
    Snapshot number k (in arrival order) is kept while k is a multiple of the stride; when more than
    ``cap`` would be kept the stride doubles, so the kept frames stay evenly spaced.  The newest frame is
    always kept as well, so the end of a run, or what a Stop left, is never lost.
    """

    def __init__(self, max_bytes: int = HISTORY_BYTES, max_frames: int = HISTORY_FRAMES) -> None:
        self.max_bytes, self.max_frames = max_bytes, max_frames
        self.stride, self.cap, self._count = 1, None, 0
        self._frames: list[tuple[int, Frame]] = []

    def add(self, snapshot: Snapshot) -> None:
        frame = Frame.of(snapshot)
        if self.cap is None:
            self.cap = max(2, min(self.max_frames, self.max_bytes // max(1, frame.nbytes)))
        if self._frames and self._frames[-1][0] % self.stride:
            self._frames.pop()  # the previous newest frame was only kept for being the newest
        self._frames.append((self._count, frame))
        self._count += 1
        while len(self._frames) > self.cap:
            self.stride *= 2
            newest = self._frames[-1]
            self._frames = [f for f in self._frames[:-1] if f[0] % self.stride == 0] + [newest]

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def frames(self) -> list[Frame]:
        return [f for _, f in self._frames]

    @property
    def iterations(self) -> list[int]:
        return [f.iteration for _, f in self._frames]

    def at(self, iteration: int) -> Frame:
        return next(f for _, f in self._frames if f.iteration == iteration)

    @property
    def nbytes(self) -> int:
        return sum(f.nbytes for _, f in self._frames)


@dataclass(eq=False)
class RunState:
    """One Start of a page, kept in ``st.session_state``; filled as snapshots arrive, so it survives Stop."""

    run_id: int
    names: tuple[str, ...]  # one per column (batch row, or settings of a sheet)
    history: FrameHistory
    experiment: Experiment | None = None
    record: RunRecord | None = None
    total: int = 0
    status: str = "running"  # running → finished | stopped | failed
    error: str | None = None
    extra: dict = field(default_factory=dict)
    thread: threading.Thread = field(default_factory=threading.current_thread)  # the script run computing it

    @property
    def active(self) -> bool:
        """Still computing in its own script thread (e.g. a Stop was clicked and it has not reached a snapshot)."""
        return self.status == "running" and self.thread.is_alive()

    def add(self, snapshot: Snapshot) -> None:
        self.history.add(snapshot)
        self.record, self.total = snapshot.record, snapshot.total
        if snapshot.done:
            self.status = "finished"


def stream(gen: Generator[Snapshot, None, None], state: RunState, draw: Callable[[Snapshot], None]) -> None:
    """Consume ``gen``, recording each snapshot in ``state`` before drawing it.

    A click anywhere while this loops makes Streamlit raise at the next ``st`` call inside ``draw``; the
    exception passes through, ``finally`` closes the generator (nothing stays on the shared model) and
    the run is marked stopped with everything recorded so far.
    """
    try:
        for snapshot in gen:
            state.add(snapshot)
            draw(snapshot)
    finally:
        gen.close()
        if state.status == "running":
            state.status = "stopped"
