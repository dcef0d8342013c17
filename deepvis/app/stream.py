"""A running run's live view, streamed past Streamlit's reruns: the newest picture, its caption, the progress and
the curve picture are files the browser fetches, so a run costs the page no script rerun until it ends.

Conventions
-----------
* A *publisher* thread per run (:func:`publish`) writes, under the app's static folder
  (``<main script's folder>/static/live/``, served by Streamlit at ``app/static/live/…`` when
  ``server.enableStaticServing`` is on), every :data:`IMAGE_EVERY` s at most:
  ``<token>-<n>.jpg`` (``.png`` when lossless) for the *n*-th picture published, ``<token>-chart-<m>.png`` for
  the *m*-th curve picture (every :data:`CHART_EVERY` s), and ``<token>.json``:
  ``{"image", "caption", "fraction", "text", "chart", "done"}`` (file names, the progress in 0-1 and its
  line, whether the run has ended), always :data:`STATE_BYTES` long.  Each file is written whole, then
  renamed into place.
* The token is 128 random bits, a new one per run: another session cannot guess it.  A run's files are
  removed :data:`KEEP_FOR` s after it ends, and files left by an earlier server after :data:`STALE_AFTER` s.
* The browser side is a small inline component (``assets/live_view.js``): it reads ``<token>.json``
  every :data:`POLL_MS` ms (:data:`POLL_END_MS` once :data:`NEAR` of the run is done, so that its end is
  seen sooner), swaps in a new picture once it has loaded (its caption with it), and, when
  the run is done and its last picture shown, sends one trigger, so that the page reruns to draw what the
  run made.
* Without static serving or a writable folder (AppTest, a read-only install), :func:`folder` is None and
  the pages fall back to a fragment that redraws the same pictures (:func:`deepvis.app.runs.live`).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import streamlit as st
from streamlit.runtime import Runtime
from streamlit.runtime.scriptrunner import get_script_run_ctx

from deepvis.history import Frame, RunState
from deepvis.render import jpeg_bytes, png_bytes

log = logging.getLogger(__name__)
IMAGE_EVERY, CHART_EVERY = 0.45, 2.0  # seconds between a running run's pictures, and between its curve pictures
POLL_MS, POLL_END_MS, NEAR = 250, 80, 0.97  # how often the browser reads the run's state; more often once this done
STATE_BYTES = 4096  # the state file's fixed size
KEEP_FOR, STALE_AFTER = 60.0, 3600.0  # seconds a finished run's files stay; files of an earlier server
_JS = (Path(__file__).parent / "assets" / "live_view.js").read_text(encoding="utf-8")

Picture = Callable[[RunState, Frame], tuple[np.ndarray, str]]  # (uint8 image, its caption)


def folder() -> Path | None:
    """Where live pictures are written and served from, or None when they cannot be (no server, static
    serving off, the folder not writable)."""
    ctx = get_script_run_ctx()
    if ctx is None or not Runtime.exists() or not type(Runtime.instance()).__module__.startswith("streamlit."):
        return None  # bare mode, or AppTest (whose runtime is a mock): no server to serve the files
    if not st.get_option("server.enableStaticServing"):
        return None
    path = Path(ctx.main_script_path).parent / "static" / "live"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError:
        return None
    return path


@dataclass
class Publisher:
    """One run's files (module docstring), written by its own thread until the run ends."""

    state: RunState
    where: Path
    picture: Picture
    progress: Callable[[RunState], str]
    chart: Callable[[RunState], bytes] | None = None
    lossless: bool = False
    # 128 random bits as hex: safe in a URL and in a component's key (which must not hold "__")
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    written: dict[str, list[Path]] = field(default_factory=lambda: {"image": [], "chart": []})

    def start(self) -> Publisher:
        _sweep(self.where)
        threading.Thread(target=self.loop, daemon=True, name="deepvis-live").start()
        return self

    @property
    def url(self) -> str:
        """The run's state file, relative to the page (so a server under a base path works too)."""
        return f"app/static/live/{self.token}.json"

    def loop(self) -> None:
        """Publish until the run has ended; a picture that fails to draw or write is logged and skipped, and the
        last state file always says the run is done (else the page would wait for it for ever)."""
        shown, image, chart, chart_at, n, m, ended = None, None, None, -CHART_EVERY, 0, 0, False
        while not ended:
            ended = not self.state.active  # read first: what follows is then the run's last word
            try:
                frame = self.state.latest
                if frame is not None and frame is not shown:
                    shown = frame  # tried once: a frame that fails to draw is not retried
                    pixels, caption = self.picture(self.state, frame)
                    n += 1
                    image = self._write("image", f"{self.token}-{n}.{'png' if self.lossless else 'jpg'}",
                                        png_bytes(pixels) if self.lossless else jpeg_bytes(pixels)), caption
                if self.chart is not None and self.state.record is not None and (
                        ended or time.monotonic() - chart_at >= CHART_EVERY):
                    chart_at, m = time.monotonic(), m + 1
                    chart = self._write("chart", f"{self.token}-chart-{m}.png", self.chart(self.state))
                text = self.progress(self.state) if self.state.record else ""
            except Exception:  # a bug in a picture, a full disk: the page still hears when the run ends
                log.exception("live view of run %s", self.state.run_id)
                text = ""
            status = {"image": image[0] if image else None, "caption": image[1] if image else "",
                      "fraction": self.state.progress[0], "text": text, "chart": chart, "done": ended}
            try:
                self._write(None, f"{self.token}.json", _state_bytes(status))
            except OSError:
                log.exception("live view of run %s", self.state.run_id)
            if not ended:
                self.state.ended.wait(IMAGE_EVERY)  # returns at once when the run ends
        threading.Timer(KEEP_FOR, self.remove).start()

    def _write(self, kind: str | None, name: str, data: bytes) -> str:
        path = self.where / name
        partial = path.with_name(f".{name}.part")
        partial.write_bytes(data)
        os.replace(partial, path)
        if kind is not None:  # keep the last few of a kind: the browser may still be loading them
            kept = self.written[kind] = [*self.written[kind], path]
            for old in kept[:-3]:
                old.unlink(missing_ok=True)
            self.written[kind] = kept[-3:]
        return name

    def remove(self) -> None:
        for path in [*self.written["image"], *self.written["chart"], self.where / f"{self.token}.json"]:
            path.unlink(missing_ok=True)


def _state_bytes(status: dict) -> bytes:
    """The state file, always :data:`STATE_BYTES` long (JSON padded with spaces): the server reads a file's size
    before its bytes, and a state file of another size swapped in between would break that response."""
    data = json.dumps(status).encode()
    if len(data) > STATE_BYTES:  # long texts are cut, never the file's size
        status = {**status, "caption": status["caption"][:200], "text": status["text"][:200]}
        data = json.dumps(status).encode()
    return data.ljust(STATE_BYTES)


def _sweep(where: Path) -> None:
    """Remove files an earlier server left behind."""
    now = time.time()
    for path in where.iterdir():
        try:
            if now - path.stat().st_mtime > STALE_AFTER:
                path.unlink()
        except OSError:
            pass


@st.cache_resource
def _component():
    return st.components.v2.component("deepvis_live_view", js=_JS, isolate_styles=False)


def show(publisher: Publisher, stacked: bool, width: int | str) -> None:
    """Mount the browser side for ``publisher``'s run: the picture (``width`` px, ``"stretch"``: the page's
    width, ``"content"``: its own) beside the progress and the curves, or under the progress and above the
    curves (``stacked``)."""
    _component()(data={"url": publisher.url, "poll": POLL_MS, "poll_end": POLL_END_MS, "near": NEAR,
                       "stacked": stacked, "width": width,
                       "run": publisher.token},
                 key=f"deepvis_live_{publisher.token}", on_ended_change=lambda: None)
