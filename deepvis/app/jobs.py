"""Long work seen from the page: one background-job mechanism, one polling fragment, one page-side bar.

Conventions
-----------
* Long work is a :mod:`deepvis.progress` generator, always run through
  :func:`deepvis.progress.drain`: on a background thread (:func:`start`) or, when the
  page waits for it, under a progress bar (:func:`with_bar`).
* A :class:`Job` is shared by every session that asks for the same thing (the same
  index, the same layer's patterns): :func:`shared` looks it up by a key.  Its thread
  keeps the latest :class:`~deepvis.progress.Progress`; Stop sets its event, and the
  work is closed after the step in progress (``Stopped``: what was finished is kept,
  and the next start goes on from there).  A failure a person can cause
  (``DeepvisError``, ``OSError``) ends it with one line; anything else is a bug: one
  line on the page too, and its traceback in the server log.
* :func:`poll` is the one polling fragment (every half second): it draws what it is
  given and reruns the page once the thing it watches is done.  Jobs show their bar
  and Stop button through it (:func:`show`).  An optimization run is not a job: it
  belongs to one session and has its own live fragments (:func:`deepvis.app.runs.live`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import streamlit as st

from deepvis.errors import DeepvisError, one_line
from deepvis.progress import Progress, Stopped, drain

Result = TypeVar("Result")
STOPPED = "stopped; what was finished is kept, and the next start goes on from there"


@dataclass
class Job:
    """Background work shared by every session that asks for the same thing (module docstring)."""

    thread: threading.Thread | None = None
    progress: Progress | None = None  # the latest step
    result: Any = None  # what the work returned, once it finished
    error: str | None = None  # one line: why the last run ended early (STOPPED when asked to)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()


@st.cache_resource(show_spinner=False)
def _jobs() -> dict[tuple, Job]:
    return {}


def shared(*key: object) -> Job:
    """The job of ``key`` (e.g. ``("index", path, layers)``), the same object for every session."""
    return _jobs().setdefault(key, Job())


def _work(job: Job, work: Generator[Progress, None, Any]) -> None:
    try:
        job.result = drain(work, step=lambda progress: setattr(job, "progress", progress), stop=job.stop.is_set)
    except Stopped:
        job.error = STOPPED
    except (DeepvisError, OSError) as exc:
        job.error = one_line(exc)
    except Exception as exc:  # a bug: one line on the page, the traceback in the server log
        job.error = f"failed ({type(exc).__name__}: {one_line(exc)}); this is a bug, the server log has the details"
        raise


def start(job: Job, work: Callable[[], Generator[Progress, None, Any]]) -> None:
    """Run the generator ``work()`` makes on a background thread, unless the job runs already."""
    with job.lock:
        if not job.running:
            job.error, job.result, job.progress = None, None, None
            job.stop.clear()
            job.thread = threading.Thread(target=_work, args=(job, work()), daemon=True, name="deepvis-job")
            job.thread.start()


def report(job: Job, what: str) -> None:
    """One line on how the job's last run ended, if it did not finish."""
    if job.error == STOPPED:
        st.info(f"{what} {job.error}.")
    elif job.error:
        st.error(f"{what} stopped: {job.error}")


def poll(done: Callable[[], bool], draw: Callable[[], None] | None = None) -> None:
    """Every half second: ``draw()`` (when given), then rerun the whole page once ``done()``."""
    @st.fragment(run_every=0.5)
    def fragment() -> None:
        if draw is not None:
            draw()
        if done():
            st.rerun()

    fragment()


def show(job: Job, doing: str, noun: str) -> None:
    """The running job's bar (``Indexing… 48 of 120 photos``) and its Stop button, until it ends."""
    def draw() -> None:
        step = job.progress
        done, total = (step.done, step.total) if step else (0, 1)
        bar, stop = st.columns([5, 1], vertical_alignment="bottom")
        bar.progress(done / max(1, total), text=f"{doing} {done} of {total} {noun}")
        if stop.button("Stop", key=f"stop_{id(job)}", help="Stops after the step in progress; finished work is kept."):
            job.stop.set()

    poll(lambda: not job.running, draw)


def with_bar(work: Generator[Progress | float, None, Result], text: str, noun: str = "") -> Result:
    """Drain ``work`` on the page under a progress bar; its value.  Steps are :class:`Progress` (the bar says
    ``{text} {done} of {total} {noun}``) or a fraction done (the bar says ``text``).  The bar is gone
    afterwards, also when the work raises."""
    bar = st.progress(0.0, text=text)

    def step(progress: Progress | float) -> None:
        if isinstance(progress, Progress):
            bar.progress(progress.fraction, text=f"{text} {progress.done} of {progress.total} {noun}")
        else:
            bar.progress(float(progress), text=text)

    try:
        return drain(work, step)
    finally:
        bar.empty()
