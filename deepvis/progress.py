"""Long work as generators: one progress type, one way to drain it.

Conventions
-----------
* Long work (indexing a collection, a layer's pattern grid, an occlusion map, a
  calibration) is a generator that yields :class:`Progress` after each step and
  returns its result (``StopIteration.value``).  It keeps what it finished on disk
  itself, so closing it early loses only the step in progress.
* ``done`` and ``total`` count the work's own units (photos, units, windows, trials);
  ``skipped`` lists ``(path, reason)`` of the broken inputs met so far; ``resumed``
  marks a step read back from disk rather than done now (a bar counts it as done
  before this run, not in its rate); ``detail`` is the work's own report (for a
  calibration, the trial and each row's best so far).
* :func:`drain` runs a generator to its end for any consumer: a terminal bar
  (:mod:`deepvis.cli.common`), a page's bar or a background worker (:mod:`deepvis.app.jobs`).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

Result = TypeVar("Result")


@dataclass(frozen=True)
class Progress:
    """One step of long work (module docstring)."""

    done: int
    total: int
    skipped: tuple[tuple[str, str], ...] = ()
    resumed: bool = False
    detail: Any = None

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total > 0 else 1.0


class Stopped(Exception):
    """:func:`drain` closed the work because ``stop()`` said so; what it finished is kept."""


def drain(work: Generator[Progress, None, Result], step: Callable[[Progress], None] | None = None,
          stop: Callable[[], bool] | None = None) -> Result:
    """Run ``work`` to its end, handing each :class:`Progress` to ``step``; its return value.

    After each step ``stop()`` is asked; when it says so the generator is closed and :class:`Stopped` raised.
    """
    while True:
        try:
            progress = next(work)
        except StopIteration as finished:
            return finished.value
        if step is not None:
            step(progress)
        if stop is not None and stop():
            work.close()
            raise Stopped()
