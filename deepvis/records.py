"""What an optimization run records: per row and iteration, and the best image so far.

Conventions
-----------
* Images handed in are ``(B, C, H, W)`` float tensors in the optimizer's pixel
  space (0-255 units, mean subtracted; see :mod:`deepvis.optimize`).  Records keep
  them as float32 ``(H, W, C)`` (``best_x``, ``last_x``, ``Snapshot.pixels``), so any
  display (:mod:`deepvis.display`: scaled about zero, plus mean, clipped) can be drawn
  later without recomputing; ``best_image``/``last_image`` are the clipped uint8
  ``clip(x + mean, 0, 255)``, what the network saw.
* A :class:`Recorder` keeps everything on the run's device and copies it to the
  CPU only when a :class:`RunRecord` is asked for (at a snapshot).
* Records keep only what cannot be derived: a row's best objective, the first
  iteration at which its unit was its layer's argmax (``argmax_step``) and
  whether it has finished are computed from its arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from deepvis.errors import DeepvisError
from deepvis.display import DEFAULT_DISPLAY, show
from deepvis.settings import Settings
from deepvis.targets import Target


@dataclass(frozen=True, eq=False)
class RowRecord:
    """What one row recorded, iteration by iteration, up to the snapshot it came with."""

    target: Target
    settings: Settings
    objectives: np.ndarray = field(repr=False)  # (n,) float64, the objective of the image evaluated at each iteration
    is_argmax: np.ndarray = field(repr=False)  # (n,) bool: the unit was its layer's argmax there
    norms: np.ndarray = field(repr=False)  # (n,) L2 norm of x
    stds: np.ndarray = field(repr=False)  # (n,) std of x
    lrs: np.ndarray = field(repr=False)  # (n,) lr of the step after each iteration (0 after the last)
    best_x: np.ndarray = field(repr=False)  # (H, W, C) float32 pixel space (C: the network's channels), the image with the highest objective
    best_step: int
    last_x: np.ndarray = field(repr=False)  # (H, W, C) float32 pixel space, the row's image at the snapshot
    mean: tuple[float, ...]  # the model's mean per channel, 0-255 (x + mean is the picture)

    def image(self, which: str = "best", mode: str = DEFAULT_DISPLAY) -> np.ndarray:
        """The ``best`` or ``last`` image as ``(H, W, 3)`` uint8 in display ``mode`` (:mod:`deepvis.display`)."""
        if which not in ("best", "last"):
            raise DeepvisError(f"which must be 'best' or 'last', not {which!r}")
        return show(self.best_x if which == "best" else self.last_x, self.mean, mode)

    @property
    def best_image(self) -> np.ndarray:
        """``(H, W, 3)`` uint8, the best image as the network saw it (clipped)."""
        return self.image("best", "clipped")

    @property
    def last_image(self) -> np.ndarray:
        """``(H, W, 3)`` uint8, the last image as the network saw it (clipped)."""
        return self.image("last", "clipped")

    @property
    def steps_done(self) -> int:
        return int(self.objectives.shape[0])

    @property
    def finished(self) -> bool:
        return self.steps_done == self.settings.steps

    @property
    def initial(self) -> float:
        return float(self.objectives[0])

    @property
    def final(self) -> float:
        return float(self.objectives[-1])

    @property
    def best_objective(self) -> float:
        return float(self.objectives[self.best_step])

    @property
    def argmax_step(self) -> int | None:
        """The first iteration at which the unit was the largest of its layer (a class: the top-1 class)."""
        hits = np.flatnonzero(self.is_argmax)
        return int(hits[0]) if hits.size else None

    def summary(self) -> dict[str, Any]:
        composed = {"target": self.target.label} if self.target.composed else {}
        return {**composed, "layer": self.target.layer, "unit": self.target.unit, "objective": self.target.objective,
                "steps": self.steps_done, "initial": self.initial, "final": self.final,
                "best": self.best_objective, "best_step": self.best_step, "argmax_step": self.argmax_step}


@dataclass(frozen=True, eq=False)
class RunRecord:
    """All rows of a run, as of ``iteration``; ``seconds`` is compute time so far."""

    rows: tuple[RowRecord, ...]
    seed: int
    size: int
    iteration: int
    seconds: float

    @property
    def done(self) -> bool:
        return all(row.finished for row in self.rows)

    def summaries(self) -> list[dict[str, Any]]:
        return [row.summary() for row in self.rows]

    @property
    def last_images(self) -> np.ndarray:
        return np.stack([row.last_image for row in self.rows])

    @property
    def best_images(self) -> np.ndarray:
        return np.stack([row.best_image for row in self.rows])

    def images(self, which: str = "last", mode: str = DEFAULT_DISPLAY) -> np.ndarray:
        """``(B, H, W, 3)`` uint8: every row's ``best`` or ``last`` image in display ``mode``."""
        return np.stack([row.image(which, mode) for row in self.rows])


@dataclass(frozen=True, eq=False)
class Snapshot:
    """What :func:`optimize` yields every ``every`` iterations and at the end."""

    iteration: int
    total: int
    record: RunRecord = field(repr=False)

    @property
    def pixels(self) -> np.ndarray:
        """``(B, H, W, C)`` float32 pixel space: each row's image at this snapshot (see :mod:`deepvis.display`)."""
        return np.stack([row.last_x for row in self.record.rows])

    @property
    def mean(self) -> tuple[float, ...]:
        return self.record.rows[0].mean

    @property
    def images(self) -> np.ndarray:
        """``(B, H, W, 3)`` uint8: each row's image at this snapshot, as the network saw it (clipped)."""
        return self.record.last_images

    def view(self, mode: str = DEFAULT_DISPLAY) -> np.ndarray:
        """``(B, H, W, 3)`` uint8: each row's image at this snapshot in display ``mode``."""
        return show(self.pixels, self.mean, mode)

    @property
    def objectives(self) -> np.ndarray:
        return np.array([row.final for row in self.record.rows])

    @property
    def done(self) -> bool:
        return self.iteration == self.total - 1

    @property
    def progress(self) -> float:
        return (self.iteration + 1) / self.total


class Recorder:
    """Per-row, per-iteration records and the best image so far, kept on the device until a snapshot.

    ``x`` at construction is the start ``(B, C, H, W)`` in pixel space (the best image until one scores).
    An iteration costs a few tensor ops and no copy to the CPU: its values are kept as the tensors they
    came in (:data:`PENDING` iterations at most) and written into the ``(iterations, B)`` arrays in a few
    batched ops when a record is asked for; the image's L2 norm and std are computed there, in float64,
    from its sum of squares and sum.
    """

    PENDING = 64

    def __init__(self, x: torch.Tensor, total: int) -> None:
        rows, device = x.shape[0], x.device
        self.values = {name: torch.zeros(total, rows, dtype=torch.float64, device=device)
                       for name in ("objective", "squares", "sums", "lr")}
        self.is_max = torch.zeros(total, rows, dtype=torch.bool, device=device)
        self.best = torch.full((rows,), -math.inf, dtype=torch.float64, device=device)
        self.best_rank = torch.full((rows,), -math.inf, dtype=torch.float64, device=device)
        self.best_step = torch.zeros(rows, dtype=torch.long, device=device)
        self.best_x = x.clone()
        self.pixels = x[0].numel()  # values per image, for the std
        self._pending: list[tuple] = []  # (it, where, objective, squares, sums, is_max, improved)
        self._pending_lr: list[tuple] = []  # (it, where, lr)

    def record(self, it: int, where: slice | torch.Tensor, x: torch.Tensor, values: torch.Tensor,
               is_max: torch.Tensor, ranks: torch.Tensor | None = None) -> None:
        """Iteration ``it`` of the rows ``where``: the image ``x`` they evaluated and what it scored.
        ``values`` and ``is_max`` are kept as they are: nothing may write into them afterwards.  The best image
        has the highest objective; of equal objectives, the highest rank (:mod:`deepvis.rows`; default the
        objective): a ReLU6 unit's image keeps improving after it first reaches the cap."""
        ranks = values if ranks is None else ranks
        # One pass of sums instead of torch.std (several ms per row on a CPU); x has mean ~0, so no cancellation.
        # Summed over (C, H, W) in place, not flattened: x is channels-last on a CPU, and flattening would copy it.
        squares, sums = x.pow(2).sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3))
        if isinstance(where, slice) and where == slice(None):
            improved = (values > self.best) | ((values == self.best) & (ranks > self.best_rank))
            torch.where(improved, values, self.best, out=self.best)
            torch.where(improved, ranks, self.best_rank, out=self.best_rank)
            torch.where(improved.view(-1, 1, 1, 1), x, self.best_x, out=self.best_x)
        else:
            best = self.best[where]
            improved = (values > best) | ((values == best) & (ranks > self.best_rank[where]))
            self.best[where] = torch.where(improved, values.double(), best)
            self.best_rank[where] = torch.where(improved, ranks.double(), self.best_rank[where])
            self.best_x[where] = torch.where(improved.view(-1, 1, 1, 1), x, self.best_x[where])
        self._pending.append((it, where, values, squares, sums, is_max, improved))
        if len(self._pending) >= self.PENDING:
            self._flush()

    def record_lr(self, it: int, where: slice | torch.Tensor, lr: torch.Tensor) -> None:
        """The lr of the step that followed iteration ``it`` (0 for a row's last iteration); kept as given."""
        self._pending_lr.append((it, where, lr))
        if len(self._pending_lr) >= self.PENDING:
            self._flush()

    def _flush(self) -> None:
        """Write the pending iterations into the arrays: one batched write per field and run of iterations
        that recorded the same rows at consecutive iterations."""
        for run in _runs(self._pending):
            its, where = [entry[0] for entry in run], run[0][1]
            steps = slice(its[0], its[-1] + 1)
            for name, column in (("objective", 2), ("squares", 3), ("sums", 4)):
                self.values[name][steps, where] = torch.stack([entry[column] for entry in run]).double()
            self.is_max[steps, where] = torch.stack([entry[5] for entry in run])
            # The last iteration that improved a row is its best step (the running best only rises).
            improved = torch.stack([entry[6] for entry in run])
            at = torch.arange(its[0], its[-1] + 1, device=improved.device).view(-1, 1)
            last = torch.where(improved, at, -1).amax(dim=0)
            self.best_step[where] = torch.where(last >= 0, last, self.best_step[where])
        for run in _runs(self._pending_lr):
            its, where = [entry[0] for entry in run], run[0][1]
            self.values["lr"][its[0]:its[-1] + 1, where] = torch.stack([entry[2] for entry in run]).double()
        self._pending.clear()
        self._pending_lr.clear()

    def run_record(self, it: int, targets: Sequence[Target], settings: Sequence[Settings], x: torch.Tensor,
                   mean: torch.Tensor, seed: int, seconds: float) -> RunRecord:
        """Everything recorded up to iteration ``it``; ``x`` ``(B, C, H, W)`` are the rows' current images."""
        self._flush()
        squares, sums = self.values["squares"], self.values["sums"]
        stats = {"norm": squares.sqrt(), "std": (squares / self.pixels - (sums / self.pixels) ** 2).clamp(min=0).sqrt()}
        arrays = {name: values.cpu().numpy() for name, values in {**self.values, **stats}.items()}
        is_max, best_xs, last_xs = self.is_max.cpu().numpy(), to_hwc(self.best_x), to_hwc(x)
        mean_rgb = tuple(float(v) for v in mean.flatten().tolist())
        best_steps = self.best_step.cpu().tolist()
        rows = []
        for b, (target, row_settings) in enumerate(zip(targets, settings)):
            n = min(it + 1, row_settings.steps)
            rows.append(RowRecord(target, row_settings, arrays["objective"][:n, b].copy(), is_max[:n, b].copy(),
                                  arrays["norm"][:n, b].copy(), arrays["std"][:n, b].copy(),
                                  arrays["lr"][:n, b].copy(), best_xs[b], int(best_steps[b]), last_xs[b], mean_rgb))
        return RunRecord(tuple(rows), seed, last_xs.shape[1], it, seconds)


def _runs(entries: list[tuple]) -> list[list[tuple]]:
    """``entries`` (iteration first, rows second) cut into runs of consecutive iterations of the same rows."""
    runs: list[list[tuple]] = []
    for entry in entries:
        if runs and runs[-1][-1][1] is entry[1] and runs[-1][-1][0] + 1 == entry[0]:
            runs[-1].append(entry)
        else:
            runs.append([entry])
    return runs


def to_hwc(x: torch.Tensor) -> np.ndarray:
    """``(B, C, H, W)`` floats -> ``(B, H, W, C)`` float32 numpy on the CPU (a copy)."""
    return x.detach().permute(0, 2, 3, 1).to("cpu", torch.float32).numpy().copy()
