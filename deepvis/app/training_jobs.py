"""Filling in what a run lacks on the Training page: one background job (:mod:`deepvis.app.jobs`) per run,
layer, preset and seed, shared by every session asking for it.

Conventions
-----------
* The job computes every step's missing measures first (a second each), then the layer's
  missing pictures (:func:`deepvis.timeline.compute`), one count over both; each is kept
  in the run folder as it ends, so a stopped job resumes where it stopped.
* With "compute as snapshots arrive" on (the default) it starts by itself whenever
  something is missing, unless its last run failed or was stopped; the button starts it
  again.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path

import streamlit as st

from deepvis import timeline as tl
from deepvis.app import jobs
from deepvis.app.training import Shown, device
from deepvis.progress import Progress
from deepvis.run import open_run


def fill(path: Path, pictures: tl.Pictures, device: str) -> Generator[Progress, None, list]:
    """Every missing measure of the run, then every missing picture of ``pictures``; one count over both."""
    view = open_run(path)
    if not view.steps:
        return []
    total = len(tl.missing(view, pictures))
    done: list = []
    for what in (None, pictures):
        work = tl.compute(view, what, device)
        if not isinstance(work, Generator):
            continue
        try:
            while True:
                try:
                    progress = next(work)
                except StopIteration as finished:
                    done += finished.value or []
                    break
                yield Progress(len(done) + progress.done, total, detail=progress.detail)
        finally:
            work.close()
    return done


def _job(shown: Shown) -> jobs.Job:
    p = shown.pictures
    return jobs.shared("training", str(shown.view.path.resolve()), p.layer, p.preset, p.seed)


def compute_panel(shown: Shown, auto: bool, key: str) -> None:
    """What the run lacks, its background job's bar and Stop, or a button; starts the job by itself with
    ``auto`` (module docstring)."""
    todo = tl.missing(shown.view, shown.pictures, shown.ref)
    job = _job(shown)
    layer = shown.pictures.layer
    if not job.running and todo and auto and job.error is None:
        jobs.start(job, lambda: fill(shown.view.path, shown.pictures, device()))
    if job.running:
        def draw() -> None:
            step = job.progress
            done, total = (step.done, step.total) if step else (0, max(1, len(todo)))
            detail = step.detail if step is not None and isinstance(step.detail, dict) else {}
            part = detail.get("fraction", 1.0) if detail.get("kind") == "pictures" else 1.0
            fraction = min(1.0, (done + (part if part < 1 else 0)) / max(1, total))
            doing = f" · now step {detail['step']}'s {detail['kind']}" if detail else ""
            if detail.get("kind") == "pictures" and part < 1:
                doing += f" ({part:.0%})"
            st.progress(fraction, text=f"Computing {shown.name}: {done} of {total} done{doing}")
            if st.button("Stop", key=f"{key}_stop", help="Stops after the step in progress; finished work is kept."):
                job.stop.set()

        jobs.poll(lambda: not job.running, draw)
        return
    if not todo:
        st.caption(f"{shown.name}: measures and `{layer}` pictures computed at all {len(shown.view.steps)} steps.")
        return
    jobs.report(job, f"Computing {shown.name}")
    measures = sum(kind == "measures" for _, kind in todo)
    pictures = len(todo) - measures
    if st.button(f"Compute {measures} measures and {pictures} `{layer}` pictures", key=f"{key}_compute",
                 type="primary", help="On a background worker, a step at a time; each is kept on disk as it ends."):
        jobs.start(job, lambda: fill(shown.view.path, shown.pictures, device()))
        st.rerun()
