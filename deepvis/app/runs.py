"""Live runs of the Optimization and Comparison pages: Start and Stop, streaming, how a run ended, its images in
the chosen display, its quality and its summary table.

Conventions
-----------
* A run computes beside the page, on a thread of its own (:func:`start_run`,
  :meth:`deepvis.history.RunState.start`), into a ``RunState`` kept in the session, so
  what was made survives Stop, reruns and page switches; :func:`last_run` gives it
  back.  History frames are 8-bit and bounded (``FrameHistory``).
* While it runs, the page shows its newest snapshot at its own pace (:func:`live`): the
  picture every :data:`IMAGE_EVERY` s and the chart every :data:`CHART_EVERY` s, streamed
  as files the browser fetches (:mod:`deepvis.app.stream`; a fragment where that cannot be);
  the page reruns once the run has ended.  Stop asks the run to end at its next snapshot.
  A run whose browser session has gone for :data:`ORPHAN_AFTER` s (tab closed, page
  reloaded) stops by itself (:func:`session_watch`).
* Optimized images are drawn from the float history in the chosen display
  (:func:`frame_view`, :mod:`deepvis.display`), so switching it never recomputes a run;
  a finished or stopped run's quality (:mod:`deepvis.quality`) is computed once and
  kept with the run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Generator, Sequence

import numpy as np
import streamlit as st
from streamlit.runtime import Runtime
from streamlit.runtime.scriptrunner import get_script_run_ctx

from deepvis import inversion, objectives, quality, render
from deepvis.app import stream
from deepvis.app.inputs import enlarged
from deepvis.app.stream import CHART_EVERY, IMAGE_EVERY
from deepvis.display import show
from deepvis.errors import DeepvisError
from deepvis.experiment import Experiment
from deepvis.history import Frame, FrameHistory, RunState
from deepvis.models import LoadedModel
from deepvis.records import RunRecord, Snapshot
from deepvis.render import jpeg_bytes, png_bytes

# Seconds a run goes on once its session has gone (a brief disconnection keeps it); DEEPVIS_ORPHAN_AFTER sets it.
ORPHAN_AFTER = float(os.environ.get("DEEPVIS_ORPHAN_AFTER", "30"))
LIVE_SIZE = 448  # the side a running or finished single image is drawn at (nearest neighbour, so pixels stay sharp)

OWN_COLUMN = {"network p": "The visualized network's own probability for the unit's class on the image: near 1 "
                            "with a judge p near 0 is a fooling image."}
JUDGE_COLUMNS = {  # the summary table's judge columns, with the quality line's explanation in brief
    "judge rank": "Rank of the unit's class among the judge network's 1000 (1 = its top class); the judge took no "
                  "part in making the image or choosing the presets.",
    "judge p": "The judge network's probability for the unit's class.",
}
ROBUSTNESS_HELP = ("No judge network here: this network's classes are not ImageNet's (or the unit is not a class), so "
                   "robustness alone speaks: the unit's value on 8 small shifts, scalings and rotations of the image "
                   "over its value on the image (about 1 = robust; legible from 0.5).")


def start_stop(page: str, ready: bool, begin: Callable[[], RunState | None], where: tuple | None = None,
               fold: Sequence[str] = ()) -> None:
    """The Start and Stop buttons (in the two columns ``where``, else a row of their own): Start folds the
    expanders whose open state is kept under the keys ``fold`` (so that the run's picture is in view) and
    calls ``begin()`` (:func:`start_run`); Stop asks the page's running run to end at its next snapshot (what
    it made is kept)."""
    start_col, stop_col = where or st.columns([1, 1, 6])[:2]
    if start_col.button("Start", type="primary", key=f"{page}_start", disabled=not ready,
                        on_click=lambda: st.session_state.update({key: False for key in fold})):
        begin()
    state = last_run(page)
    stop_col.button("Stop", key=f"{page}_stop", disabled=state is None or not state.active,
                    on_click=state.request_stop if state is not None else None,
                    help="Ends the run at its next snapshot and keeps what was made.")


def picture_columns() -> tuple:
    """The picture's column (:data:`LIVE_SIZE` px wide on a 1440-px screen) and the chart's beside it."""
    return st.columns([LIVE_SIZE, 1000 - LIVE_SIZE], gap="medium")


def start_run(key: str, start: Callable[[], Generator[Snapshot, None, None]], names: Sequence[str],
              history: FrameHistory | None = None, experiment: Experiment | None = None,
              scored: LoadedModel | None = None, **extra: object) -> RunState | None:
    """Start a run (``start()`` -> generator) on its own thread and keep its ``RunState`` as
    ``st.session_state[f"{key}_run"]`` (a run still going from before is asked to stop).  A ``DeepvisError``
    at the start (bad settings, target, size) is one ``st.error`` line and no run; a failure during the run
    is kept in the state for :func:`run_status` to show.  With ``scored`` (the run's model), the images'
    quality (:func:`run_quality`) is computed on the run's thread as soon as it ends, while the page is
    still being told so."""
    try:
        gen = start()
    except DeepvisError as exc:
        st.error(f"Cannot start: {exc}")
        return None
    previous = last_run(key)
    if previous is not None:
        previous.request_stop()
    st.session_state[f"{key}_runs"] = st.session_state.get(f"{key}_runs", 0) + 1
    state = RunState(st.session_state[f"{key}_runs"], tuple(names), history if history is not None else FrameHistory(), experiment,
                     extra=dict(extra))
    st.session_state[f"{key}_run"] = state
    return state.start(gen, session_watch(), then=None if scored is None else lambda done: _assess(done, scored))


def session_watch(grace: float | None = None) -> Callable[[], bool] | None:
    """For a run started by this script: whether its browser session is still connected, or has been gone for
    less than ``grace`` seconds (default :data:`ORPHAN_AFTER`); None outside a Streamlit server (AppTest, bare
    mode), where no session can go away."""
    ctx = get_script_run_ctx()
    if ctx is None or not Runtime.exists():
        return None
    runtime, session_id, gone_since = Runtime.instance(), ctx.session_id, [None]

    def watched() -> bool:
        if runtime.is_active_session(session_id):
            gone_since[0] = None
            return True
        now = time.monotonic()
        if gone_since[0] is None:
            gone_since[0] = now
        return now - gone_since[0] < (ORPHAN_AFTER if grace is None else grace)
    return watched


def last_run(page: str) -> RunState | None:
    """The page's latest run in this session (running, stopped, finished or failed), if any."""
    return st.session_state.get(f"{page}_run")


def live(state: RunState, picture: stream.Picture, progress: Callable[[RunState], str],
         chart_picture: Callable[[RunState], bytes] | None = None, stacked: bool = False,
         width: int | str = LIVE_SIZE, lossless: bool = False) -> None:
    """While ``state`` runs: its newest picture (``picture(state, frame)`` -> uint8 image and caption; a JPEG,
    or a PNG if ``lossless``), ``width`` px wide (or ``"stretch"``: the page's width; ``"content"``: its own),
    and beside it (under it if ``stacked``)
    the progress line ``progress(state)`` and the PNG ``chart_picture(state)``.  Streamed through files the
    browser fetches (:mod:`deepvis.app.stream`), so the run costs no script rerun until it ends; where that
    cannot be (AppTest, static serving off), one fragment redraws them every :data:`IMAGE_EVERY` s.  The whole
    page reruns once the run has ended (to draw what it made)."""
    where = stream.folder()
    if where is not None:
        publisher = state.extra.get("publisher")
        if publisher is None:
            publisher = state.extra["publisher"] = stream.Publisher(state, where, picture, progress, chart_picture,
                                                                     lossless).start()
        stream.show(publisher, stacked, width)
        return
    chart = {"at": -CHART_EVERY, "png": None}  # lives as long as the fragment (until the page's next full run)

    @st.fragment(run_every=IMAGE_EVERY)
    def view() -> None:
        if not state.active:
            st.rerun()
        picture_box, chart_box = (st.container(), st.container()) if stacked else picture_columns()
        frame = state.latest
        if frame is None:
            picture_box.progress(0.0, text="Starting… (the first snapshot is on its way)")
            return
        if state.record is not None:
            (picture_box if stacked else chart_box).progress(state.progress[0], text=progress(state))
        pixels, caption = picture(state, frame)
        if isinstance(width, int) and max(pixels.shape[:2]) < width:  # sharp, as the streamed view draws it
            pixels = render.upscale(pixels, width, smooth=False)
        picture_box.image(png_bytes(pixels) if lossless else jpeg_bytes(pixels), caption=caption,
                          output_format="PNG" if lossless else "JPEG", width=width)
        if chart_picture is not None and state.record is not None:
            if time.monotonic() - chart["at"] >= CHART_EVERY:
                chart["at"], chart["png"] = time.monotonic(), chart_picture(state)
            chart_box.image(chart["png"], output_format="PNG")

    view()


def run_status(state: RunState) -> None:
    """One line on how the last run ended."""
    shown = state.record.iteration + 1 if state.record else 0
    seconds = state.record.seconds if state.record else 0.0
    if state.status == "stopped":
        st.info(f"Stopped after {shown} of {state.total} iterations; the images made so far are kept below.")
    elif state.status == "finished":
        st.caption(f"Finished {state.total} iterations in {seconds:.1f} s.")
    elif state.status == "failed":
        st.error(f"The run failed: {state.error}")


def frame_view(pixels: np.ndarray, mean: Sequence[float], mode: str, min_size: int = 224) -> np.ndarray:
    """What the pages show of one float image ``(H, W, C)`` (pixel space; gray is shown as gray RGB): drawn in
    display ``mode`` (:mod:`deepvis.display`), small images enlarged (nearest neighbour) to ``min_size``."""
    shown = show(pixels, mean, mode)
    return render.upscale(shown, min_size, smooth=False) if max(shown.shape[:2]) < min_size else shown


def sheet_image(pixels: np.ndarray, mean: Sequence[float], row_names: Sequence[str], col_names: Sequence[str],
                mode: str) -> np.ndarray:
    """Rows x columns of ``(R*C, H, W, C)`` float images (row-major) as one labelled image (small ones enlarged
    to at least 128 px by a whole factor, with no smoothing)."""
    shown = [show(image, mean, mode) for image in pixels]
    shown = np.stack([enlarged(s, 128) if max(s.shape[:2]) < 128 else s for s in shown])
    return render.compose_sheet(shown, len(row_names), len(col_names), row_names, col_names)


def run_quality(state: RunState, loaded: LoadedModel) -> list[quality.Quality]:
    """The quality of every row's best image, computed once per finished or stopped run (about 0.1 s a row
    on a CPU) and kept in the run's state; where :func:`start_run` scores it as the run ends, waited for."""
    if not state.wait(0) and state.extra.get("quality_at") != state.record.iteration:
        with st.spinner("Scoring the images…"):
            state.wait()
    if state.extra.get("quality_at") != state.record.iteration:
        judged = quality.judge_name(loaded) is not None
        with st.spinner("Scoring the images (judge network and robustness)…" if judged else "Scoring the images "
                        "(robustness)…"):
            _assess(state, loaded)
    return state.extra["quality"]


def _assess(state: RunState, loaded: LoadedModel) -> None:
    quality_of = quality.assess_record(loaded, state.record)
    state.extra["quality"], state.extra["judged"] = quality_of, quality.judge_name(loaded) is not None
    state.extra["quality_at"] = state.record.iteration  # last: a reader sees all three or none


def diversity_line(loaded: LoadedModel, record: RunRecord) -> str:
    """How different a diverse batch's best images are to the network (:func:`deepvis.objectives.feature_distance`)."""
    target = record.rows[0].target
    layer = next((t.layer for t in target.terms if t.kind == "diversity"), target.layer)
    pixels = np.stack([row.best_x for row in record.rows])
    return (f"{target.label}: {len(record.rows)} images, each from its own seed; mean pairwise distance of their "
            f"{layer} features {objectives.feature_distance(loaded, pixels, layer):.3f} (0 = the same, 2 = opposite)")


def inversion_pair(loaded: LoadedModel, record: RunRecord, mode: str) -> None:
    """An inversion's photo and its best image side by side, with how far their representations are apart."""
    row = record.rows[0]
    found = inversion.matched_photo(row.target)
    if found is None:
        return
    photo, layer = found
    distance = inversion.representation_distance(loaded, row.best_x, photo, layer)
    left, right = st.columns(2)
    left.image(enlarged(photo[..., 0] if photo.shape[-1] == 1 else photo, 224), caption="The photo", width="stretch")
    right.image(enlarged(frame_view(row.best_x, row.mean, mode), 224), width="stretch",
                caption=f"Recovered from its {layer} (best, iteration {row.best_step})")
    st.caption(f"Relative distance of the representations ||Φ(x) − Φ0|| / ||Φ0|| at {layer}: {distance:.3f} "
               "(0 = the same). Deeper layers keep less of the photo's detail.")


def quality_caption(verdict: quality.Quality, best_step: int) -> str:
    mark = "legible" if verdict.legible else "not legible"
    return f"**Quality** of the best image (iteration {best_step}) — {verdict.label} · {mark}"


def quality_line(verdict: quality.Quality, best_step: int) -> None:
    """The quality line under an optimized image, with what the judge is as its tooltip (what robustness is,
    where no judge took part: a network of one's own, a unit that is not a class)."""
    st.markdown(quality_caption(verdict, best_step), help=quality.JUDGE_HELP if verdict.rank is not None
                else ROBUSTNESS_HELP)


def summary_rows(record: RunRecord, names: Sequence[str], verdicts: Sequence[quality.Quality]) -> list[dict]:
    """Per row: its parametrization, the best objective with the best image's quality score beside it, then
    the other objectives, iterations, the judge's verdict, final norm and std."""
    names = [names[b % len(names)] for b in range(len(record.rows))]  # a sheet: every unit under each setting
    return [{"unit": row.target.unit, "setting": name, "parametrization": row.settings.param,
             "best objective": row.best_objective, "quality score": q.score, "final objective": row.final,
             "best iteration": row.best_step, "argmax from": row.argmax_step, "network p": q.own_prob,
             "judge rank": q.rank, "judge p": q.prob, "robustness": q.robustness, "legible": q.legible, "final norm": float(row.norms[-1]),
             "final std": float(row.stds[-1]), "iterations": row.steps_done}
            for row, name, q in zip(record.rows, names, verdicts)]


def summary_table(state: RunState, verdicts: Sequence[quality.Quality]) -> None:
    """:func:`summary_rows` as a table; the judge's columns explain themselves in their tooltips, and are left
    out for a network no judge can read (its classes are not ImageNet's)."""
    rows = summary_rows(state.record, state.names, verdicts)
    if not state.extra.get("judged", True):
        rows = [{k: v for k, v in row.items() if k not in JUDGE_COLUMNS} for row in rows]
    st.dataframe(rows, hide_index=True,
                 column_config={name: st.column_config.Column(help=text)
                                for name, text in {**OWN_COLUMN, **JUDGE_COLUMNS}.items()})
