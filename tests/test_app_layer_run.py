"""The Optimization page's whole-layer mode through AppTest: every filter in one batch, the grid, its history,
a tile's own history, and the results kept as the layer's pattern-mode images.  Four filters of
``_blocks.0._swish`` (32 channels at 112 × 112 for a 224-px input), 3 iterations at 64 px."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from deepvis import optimize as opt
from deepvis import patterns, presets
from deepvis.app import layer_run
from deepvis.hooks import hook_count
from deepvis.targets import Target
from tests.helpers import start_run

APP = str(Path(__file__).resolve().parents[1] / "streamlit_app.py")
LAYER, COUNT, STEPS, SIZE = "_blocks.0._swish", 4, 3, 64


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def ran(cache) -> AppTest:
    mp = pytest.MonkeyPatch()
    mp.setenv("DEEPVIS_CACHE", str(cache))
    at = AppTest.from_file(APP, default_timeout=180).run()
    at.switch_page("app_pages/optimization.py").run()
    at.segmented_control(key="opt_what").set_value("every filter of a layer").run()
    assert not at.exception and not at.error
    at.selectbox(key="lay_group_efficientnet_lite0").set_value("_blocks.0").run()
    at.selectbox(key="lay_layer_efficientnet_lite0").set_value(LAYER).run()
    at.number_input(key=f"lay_count_{LAYER}").set_value(COUNT)
    at.number_input(key="lay_steps").set_value(STEPS)
    at.number_input(key="lay_size_efficientnet_lite0").set_value(SIZE).run()
    assert not at.exception and not at.error
    start_run(at, "lay")
    assert not at.exception and not at.error
    yield at
    mp.undo()


def test_every_filter_runs_in_one_batch_as_the_library_does(ran, lite0):
    state = ran.session_state["lay_run"]
    assert state.status == "finished" and len(state.record.rows) == COUNT
    settings = presets.resolve(lite0, "3").replace(steps=STEPS)
    direct = opt.run(lite0, [Target(LAYER, c) for c in range(COUNT)], settings, seed=0, size=SIZE)
    for got, want in zip(state.record.rows, direct.rows):
        assert got.target == want.target
        np.testing.assert_allclose(got.objectives, want.objectives, rtol=1e-4, atol=1e-4)
    assert hook_count(lite0.module) == 0


def test_the_history_keeps_what_each_centre_neuron_sees_and_a_slider_runs_over_the_grid(ran, lite0):
    state = ran.session_state["lay_run"]
    assert state.history.iterations == list(range(STEPS))
    top, left, bottom, right = box = patterns.field_of(lite0, Target(LAYER, 0), SIZE)
    assert state.extra["box"] == box and bottom - top < SIZE  # an early layer sees a few pixels
    frame = state.history.newest
    assert frame.scaled.shape == (COUNT, bottom - top, right - left, 3)
    np.testing.assert_allclose(frame.pixels, np.stack([r.last_x[top:bottom, left:right] for r in state.record.rows]),
                               atol=float(frame.peaks.max()) / 100)
    slider = ran.select_slider(key=f"lay_history_{state.run_id}")
    assert slider.options == [str(i) for i in range(STEPS)]
    slider.set_value(0).run()
    assert not ran.exception
    assert any(c.value.startswith("Iteration 0: the first 4 filters") for c in ran.caption)


def test_a_tiles_own_history_follows_the_click(ran):
    state = ran.session_state["lay_run"]
    ran.session_state[f"lay_tile_{state.run_id}"] = 2  # what a click on the third tile sets
    ran.run()
    assert not ran.exception
    assert any(s.value == "Filter 2" for s in ran.subheader)
    own = ran.select_slider(key=f"lay_own_{state.run_id}")
    own.set_value(1).run()
    frame = state.history.at(1)
    (image,) = [i for i in ran.get("image") if i.captions and i.captions[0].startswith("filter 2 ·")]
    assert image.captions[0] == f"filter 2 · iteration 1 · objective {frame.objectives[2]:.4g}"


def test_the_finished_run_becomes_the_layers_pattern_mode_images(ran, lite0, cache, monkeypatch):
    monkeypatch.setenv("DEEPVIS_CACHE", str(cache))
    state = ran.session_state["lay_run"]
    assert state.extra["kept"] == COUNT
    settings = presets.resolve(lite0, "3").replace(steps=STEPS)
    for row in state.record.rows:
        found = patterns.load(lite0, row.target, settings, 0, SIZE)
        assert found is not None and np.array_equal(found.x, row.best_x)
    assert patterns.load(lite0, Target(LAYER, COUNT), settings, 0, SIZE) is None  # only the filters that ran


def test_shrinking_keeps_a_large_runs_history_small():
    from deepvis.history import FrameHistory, shrink

    pixels = np.random.default_rng(0).normal(size=(3, 192, 192, 3)).astype(np.float32)
    small = shrink(pixels, layer_run.TILE)  # 192 -> 96: each kept pixel is the mean of a 2 x 2 block
    assert small.shape == (3, 96, 96, 3)
    blocks = pixels.reshape(3, 96, 2, 96, 2, 3).mean(axis=(2, 4))
    np.testing.assert_allclose(small, blocks, atol=1e-5)
    assert FrameHistory(side=layer_run.TILE).side == layer_run.TILE
