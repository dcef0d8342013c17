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
* :class:`RunState` is one Start of a page.  :meth:`RunState.start` consumes the
  run's snapshot generator on a thread of its own, beside the page: each snapshot is
  recorded as it arrives (``latest`` is the newest frame, replaced whole, so a reader
  never sees a half-made one), and a page draws it at its own pace.  Stop
  (:meth:`RunState.request_stop`) ends the run at its next snapshot; what was made is
  kept, and the generator is always closed (nothing stays on the shared model).
  ``ended`` is set as soon as the run's status is final; work given as ``then`` (a
  finished run's scoring) follows on the same thread, and :meth:`RunState.wait` waits for it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from deepvis.display import DEFAULT_DISPLAY, show
from deepvis.errors import DeepvisError, one_line
from deepvis.experiment import Experiment
from deepvis.records import RunRecord, Snapshot

HISTORY_BYTES = 24 * 2**20  # frames kept per run (one per page), so a session's histories stay under 64 MB
HISTORY_FRAMES = 250
TOO_SMALL_HINT = " (is the image too small for this network?)"
log = logging.getLogger(__name__)


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
    def of(cls, snapshot: Snapshot, side: int | None = None,
           box: tuple[int, int, int, int] | None = None) -> Frame:
        """The snapshot's frame; ``box`` ``(top, left, bottom, right)``: only that part of each image is kept
        (0, the mean, where it leaves the image); ``side``: images larger than that are kept shrunk to it
        (area average)."""
        pixels = snapshot.pixels
        if box is not None:
            pixels = crop(pixels, box)
        if side is not None and max(pixels.shape[1:3]) > side:
            pixels = shrink(pixels, side)
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


def crop(pixels: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The part ``(top, left, bottom, right)`` of ``(B, H, W, C)`` images, 0 (the mean) where it leaves them."""
    top, left, bottom, right = box
    height, width = pixels.shape[1:3]
    out = np.zeros((pixels.shape[0], bottom - top, right - left, pixels.shape[3]), dtype=pixels.dtype)
    inner = pixels[:, max(0, top):min(height, bottom), max(0, left):min(width, right)]
    out[:, max(0, -top):max(0, -top) + inner.shape[1], max(0, -left):max(0, -left) + inner.shape[2]] = inner
    return out


def shrink(pixels: np.ndarray, side: int) -> np.ndarray:
    """``(B, H, W, C)`` float images with their longer side shrunk to ``side`` (area average)."""
    height, width = pixels.shape[1:3]
    scale = side / max(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    t = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2)
    return F.interpolate(t, size=size, mode="area").permute(0, 2, 3, 1).contiguous().numpy()


class FrameHistory:
    """Bounded history of a run's snapshots (pure; no Streamlit).

    Keeps 8-bit frames (and one scale per image) only, at most ``cap`` of them (from ``max_bytes`` and ``max_frames``, at least 2);
    with ``box``, only that part of each image; with ``side``, images are kept shrunk to at most that many
    pixels a side (a whole layer's history).
    Snapshot number k (in arrival order) is kept while k is a multiple of the stride; when more than
    ``cap`` would be kept the stride doubles, so the kept frames stay evenly spaced.  The newest frame is
    always kept as well, so the end of a run, or what a Stop left, is never lost.
    """

    def __init__(self, max_bytes: int = HISTORY_BYTES, max_frames: int = HISTORY_FRAMES,
                 side: int | None = None, box: tuple[int, int, int, int] | None = None) -> None:
        self.max_bytes, self.max_frames, self.side, self.box = max_bytes, max_frames, side, box
        self.stride, self.cap, self._count = 1, None, 0
        self._frames: list[tuple[int, Frame]] = []

    def add(self, snapshot: Snapshot) -> None:
        frame = Frame.of(snapshot, self.side, self.box)
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
    def newest(self) -> Frame:
        return self._frames[-1][1]

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
    """One Start of a page, kept in ``st.session_state``; filled as snapshots arrive (module docstring)."""

    run_id: int
    names: tuple[str, ...]  # one per column (batch row, or settings of a sheet)
    history: FrameHistory
    experiment: Experiment | None = None
    record: RunRecord | None = None
    total: int = 0
    status: str = "running"  # running → finished | stopped | failed
    error: str | None = None
    extra: dict = field(default_factory=dict)
    latest: Frame | None = None  # the newest snapshot, whole
    snapshots: int = 0  # how many have arrived
    thread: threading.Thread | None = None  # the thread computing it (:meth:`start`)
    stop: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)  # set once the status is final

    @property
    def active(self) -> bool:
        """Still computing: started, and its thread has not ended."""
        return self.status == "running" and self.thread is not None and self.thread.is_alive()

    @property
    def progress(self) -> tuple[float, int]:
        """(fraction done, iterations done) of the newest snapshot."""
        done = self.record.iteration + 1 if self.record is not None else 0
        return done / max(1, self.total), done

    def add(self, snapshot: Snapshot) -> None:
        self.history.add(snapshot)
        self.latest = self.history.newest
        self.record, self.total = snapshot.record, snapshot.total
        self.snapshots += 1
        if snapshot.done:
            self.status = "finished"

    def start(self, gen: Generator[Snapshot, None, None], watched: Callable[[], bool] | None = None,
              then: Callable[[RunState], None] | None = None) -> RunState:
        """Consume ``gen`` on a new daemon thread (:meth:`consume`), then call ``then(self)`` there once the
        run has ended with a record and its session is still watching (a failure in it is logged); returns
        ``self``."""
        self.thread = threading.Thread(target=self._run, args=(gen, watched, then), daemon=True, name="deepvis-run")
        self.thread.start()
        return self

    def _run(self, gen: Generator[Snapshot, None, None], watched: Callable[[], bool] | None,
             then: Callable[[RunState], None] | None) -> None:
        self.consume(gen, watched)
        if (then is not None and self.record is not None and self.status != "failed"
                and (watched is None or watched())):  # nobody to show it to: a session that has gone
            try:  # on the thread that ran the optimizer: its memory and thread pool are warm
                then(self)
            except Exception:
                log.exception("after run %s", self.run_id)

    def request_stop(self) -> None:
        """End the run at its next snapshot, keeping what it made."""
        self.stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the run's thread to end (the work given to :meth:`start` as ``then`` included); whether it
        has."""
        if self.thread is not None:
            self.thread.join(timeout)
        return not self.active and (self.thread is None or not self.thread.is_alive())

    def consume(self, gen: Generator[Snapshot, None, None], watched: Callable[[], bool] | None = None) -> None:
        """Record every snapshot of ``gen`` until it ends, a stop is requested, or ``watched()`` says nobody is
        watching any more (the page's session has gone: the run would compute for no one); a failure a person
        can cause (``DeepvisError``; ``RuntimeError``: torch cannot run the network on this input) becomes one
        line in ``error``, anything else a one-line bug report (its traceback in the log)."""
        try:
            for snapshot in gen:
                self.add(snapshot)
                if self.stop.is_set():
                    break
                if watched is not None and not watched():
                    log.warning("run %s stopped: its session has gone", self.run_id)
                    break
        except (DeepvisError, RuntimeError) as exc:
            self.status = "failed"
            self.error = one_line(exc) + (TOO_SMALL_HINT if not isinstance(exc, DeepvisError) else "")
        except Exception as exc:  # a bug: one line for the page, the traceback in the server log
            log.exception("optimization run failed")
            self.status = "failed"
            self.error = f"{type(exc).__name__}: {one_line(exc)} (a bug; the server log has the details)"
        finally:
            gen.close()
            if self.status == "running":
                self.status = "stopped"
            self.ended.set()
