"""A running run's live view as files (deepvis.app.stream): what the publisher writes while the run goes and once
it has ended, that the picture file and its caption belong together, what it keeps and removes, and its tokens."""

from __future__ import annotations

import io
import json
import os
import threading
import time

import numpy as np
import pytest
from PIL import Image

from deepvis import history
from deepvis.app import stream
from tests.test_app_optimization import snapshot

TOTAL = 6


def paced_run(step: threading.Event, done: list):
    """A run of TOTAL snapshots that waits for ``step`` before each one after the first."""
    for i in range(TOTAL):
        if i:
            assert step.wait(30)
            step.clear()
        done.append(i)
        yield snapshot(i, 1, 8)


def picture(state, frame):
    """Iteration i's picture is a flat grey of 30 * i (so the file tells which frame it is)."""
    return np.full((16, 16, 3), 30 * frame.iteration, np.uint8), f"iteration {frame.iteration}"


def status(publisher) -> dict:
    return json.loads((publisher.where / f"{publisher.token}.json").read_text())


def pixels(publisher, name: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO((publisher.where / name).read_bytes())).convert("RGB"))


def wait_for(check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if (found := check()):
                return found
        except (OSError, ValueError):  # not written yet
            pass
        time.sleep(0.02)
    raise AssertionError("timed out")


@pytest.mark.parametrize("lossless", [False, True])
def test_the_publisher_shows_each_newest_picture_with_its_caption_then_the_end(tmp_path, monkeypatch, lossless):
    monkeypatch.setattr(stream, "IMAGE_EVERY", 0.05)
    monkeypatch.setattr(stream, "KEEP_FOR", 0.3)
    step, made = threading.Event(), []
    state = history.RunState(1, ("x",), history.FrameHistory()).start(paced_run(step, made))
    publisher = stream.Publisher(state, tmp_path, picture, lambda s: f"line {s.progress[1]}",
                                 lambda s: b"\x89PNG chart", lossless=lossless).start()
    sizes = set()
    for i in range(TOTAL - 1):
        now = wait_for(lambda: (s := status(publisher))["caption"] == f"iteration {i}" and s)
        sizes.add((publisher.where / f"{publisher.token}.json").stat().st_size)
        assert not now["done"] and now["text"] == f"line {i + 1}" and now["fraction"] == pytest.approx((i + 1) / 1000)
        assert now["image"].endswith(".png" if lossless else ".jpg")
        shown = pixels(publisher, now["image"])  # the file named with a caption is that caption's frame
        assert np.abs(shown.astype(int) - 30 * i).max() <= (0 if lossless else 2)
        assert (tmp_path / now["chart"]).read_bytes() == b"\x89PNG chart"
        step.set()
    end = wait_for(lambda: (s := status(publisher))["done"] and s)
    assert end["caption"] == f"iteration {TOTAL - 1}" and made == list(range(TOTAL))
    assert np.abs(pixels(publisher, end["image"]).astype(int) - 30 * (TOTAL - 1)).max() <= (0 if lossless else 2)
    names = os.listdir(tmp_path)
    assert not [n for n in names if n.endswith(".part")]  # every file was written whole, then renamed
    assert sizes == {stream.STATE_BYTES}  # a state file swapped in while the server sends one has its size
    assert len([n for n in names if "-chart-" not in n and not n.endswith(".json")]) <= 3  # the last few kept
    wait_for(lambda: not os.listdir(tmp_path))  # removed a while after the end


def test_each_run_gets_its_own_unguessable_token_and_a_relative_url(tmp_path):
    state = history.RunState(1, ("x",), history.FrameHistory())
    first, second = (stream.Publisher(state, tmp_path, picture, str) for _ in range(2))
    assert first.token != second.token and len(first.token) == 32  # 128 random bits
    tokens = [stream.Publisher(state, tmp_path, picture, str).token for _ in range(200)]
    assert all(set(t) <= set("0123456789abcdef") for t in tokens)  # never "__": Streamlit refuses it in a key
    assert first.url == f"app/static/live/{first.token}.json"  # relative: a server under a base path works


def test_files_an_earlier_server_left_are_swept_and_a_fresh_one_is_kept(tmp_path):
    old, fresh = tmp_path / "old-1.jpg", tmp_path / "fresh-1.jpg"
    old.write_bytes(b"x")
    fresh.write_bytes(b"y")
    os.utime(old, (time.time() - 2 * stream.STALE_AFTER,) * 2)
    stream._sweep(tmp_path)
    assert not old.exists() and fresh.exists()


def test_outside_a_server_there_is_no_folder_to_stream_from():
    assert stream.folder() is None  # no script run, no runtime: the pages draw with a fragment instead


def test_a_picture_that_fails_to_draw_is_skipped_and_the_end_is_still_said(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(stream, "IMAGE_EVERY", 0.05)
    step, made = threading.Event(), []
    state = history.RunState(1, ("x",), history.FrameHistory()).start(paced_run(step, made))

    def broken(state, frame):
        if frame.iteration == 0:
            raise KeyError("a bug")
        return picture(state, frame)

    publisher = stream.Publisher(state, tmp_path, broken, str).start()
    wait_for(lambda: (tmp_path / f"{publisher.token}.json").exists())
    for _ in range(TOTAL - 1):
        step.set()
        wait_for(lambda: not step.is_set())
    end = wait_for(lambda: (s := status(publisher))["done"] and s)
    assert end["caption"] == f"iteration {TOTAL - 1}" and "a bug" in caplog.text
