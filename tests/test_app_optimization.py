"""The Optimization page through Streamlit's AppTest, and the bounded history it keeps.

Runs are a handful of iterations at 64 px on the embedded model, so each test takes seconds.
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from deepvis import charts, display, history, presets, quality
from deepvis.app import runs
from deepvis import optimize as opt
from deepvis.hooks import hook_count
from deepvis.render import upscale
from deepvis.records import RowRecord, RunRecord, Snapshot
from deepvis.settings import THETA
from deepvis.targets import Target
from tests.app_media import record_media
from tests.helpers import start_run

APP = str(Path(__file__).resolve().parents[1] / "streamlit_app.py")
SIZE, STEPS = 64, 5


def page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180).run()
    at.switch_page("app_pages/optimization.py").run()
    assert not at.exception and not at.error
    return at


def chart(at: AppTest) -> dict:
    return json.loads(at.get("plotly_chart")[0].proto.spec)


def shown_image(at: AppTest) -> tuple[str, str]:
    (image,) = [i for i in at.get("image") if i.captions and (i.captions[0] or "").startswith("iteration")]
    return image.captions[0], image.value[0]


@pytest.fixture(scope="module")
def finished() -> AppTest:
    """The default target (class 130, flamingo) with Table 1 row 3, shortened to STEPS iterations at SIZE px."""
    at = page()
    at.number_input(key="opt_steps").set_value(STEPS)
    at.number_input(key="opt_size_efficientnet_lite0").set_value(SIZE)
    at.button(key="opt_start").click().run()
    assert not at.exception and not at.error
    assert at.session_state["opt_run"].wait(180)  # the run computes beside the page, on its own thread
    at.run()
    assert not at.exception and not at.error
    return at


def test_start_runs_the_library_and_shows_image_and_chart(finished, lite0):
    state = finished.session_state["opt_run"]
    assert finished.session_state["opt_runs"] == 1 and state.status == "finished"
    assert state.history.iterations == list(range(STEPS))  # snapshot every iteration for a short run

    # The page ran exactly what its widgets say: the same run done directly gives the same numbers.
    settings = presets.resolve("efficientnet_lite0", "3")  # the page's default: Lite0's calibrated row 3
    direct = opt.run(lite0, Target("_fc", 130), settings.replace(steps=STEPS), seed=0, size=SIZE)
    row = state.record.rows[0]
    np.testing.assert_allclose(row.objectives, direct.rows[0].objectives, rtol=1e-4, atol=1e-4)
    # The logit rises (at some iteration: calibrated row 3 takes large steps, lr 124, and its objective swings
    # in the first iterations; over its own run it rises, which test_calibrate checks for every calibrated row).
    assert row.best_objective > row.objectives[0] + 0.5

    assert not finished.get("progress")  # the bar is for a running run
    assert any(c.value.startswith(f"Finished {STEPS} iterations in") for c in finished.caption)
    caption, _ = shown_image(finished)
    assert caption == f"iteration {STEPS - 1} · objective {row.objectives[-1]:.4g}"
    lines = {trace["name"]: trace for trace in chart(finished)["data"] if trace["mode"] == "lines"}
    np.testing.assert_allclose(lines["objective (each iteration)"]["y"], row.objectives)
    np.testing.assert_allclose(lines["objective"]["y"], charts.trailing_mean(row.objectives))  # the trend over it
    np.testing.assert_allclose(lines["image norm"]["y"], charts.trailing_mean(row.norms))
    assert len(finished.get("download_button")) == 4  # final PNG, best PNG, best .npy, GIF
    assert hook_count(lite0.module) == 0


def test_the_image_is_shown_scaled_about_zero_with_its_quality_below(finished, lite0, monkeypatch):
    pixels = record_media(monkeypatch)
    state = finished.session_state["opt_run"]
    row = state.record.rows[0]
    assert finished.radio(key="opt_display").value == "zero"  # the paper's way is the default
    finished.run()
    frame = state.history.at(STEPS - 1)
    want = display.show(frame.pixels[0], frame.mean, "zero")  # the library's display, enlarged as the page does
    assert np.array_equal(pixels(shown_image(finished)[1]), upscale(want, runs.LIVE_SIZE, smooth=False))
    assert want.min() == 0 or want.max() == 255  # the strongest pixel reaches black or white
    (verdict,) = quality.assess(lite0, row.best_x[None], [row.target])
    (line,) = [m for m in finished.markdown if m.value.startswith("**Quality**")]
    assert line.value == f"**Quality** of the best image (iteration {row.best_step}) — {verdict.label} · " + \
        ("legible" if verdict.legible else "not legible")
    assert line.proto.help == quality.JUDGE_HELP  # what the judge is, in the line's tooltip
    assert verdict.judge == "efficientnet_lite2" and verdict.rank is not None


def test_switching_the_display_redraws_the_same_iteration_without_a_forward_pass(finished, lite0, monkeypatch):
    pixels = record_media(monkeypatch)
    state = finished.session_state["opt_run"]
    finished.select_slider(key="opt_history_1").set_value(2).run()

    def no_forward(*args, **kwargs):
        raise AssertionError("a forward pass ran")

    # Every forward pass of every network (the optimizers' captures, param_ascent's too, the judge, fx's
    # truncated modules) goes through torch.nn.Module.__call__; and neither a run nor a scoring starts.
    monkeypatch.setattr(torch.nn.Module, "__call__", no_forward)
    for module, name in [(opt, "optimize"), (quality, "assess_record")]:
        monkeypatch.setattr(module, name, no_forward)
    with pytest.raises(AssertionError, match="a forward pass ran"):  # the net catches a forward pass
        lite0.module(torch.zeros(1, 3, SIZE, SIZE))
    frame = state.history.at(2)
    views = {}
    for mode in ("mean", "clipped", "zero"):
        finished.radio(key="opt_display").set_value(mode).run()
        assert not finished.exception and not finished.error
        caption, url = shown_image(finished)
        assert caption.startswith("iteration 2 ·")
        views[mode] = pixels(url)
        assert np.array_equal(views[mode], upscale(display.show(frame.pixels[0], frame.mean, mode), runs.LIVE_SIZE, smooth=False))
    assert not np.array_equal(views["zero"], views["clipped"])  # the modes differ on this faint 5-step image
    assert finished.session_state["opt_runs"] == 1
    finished.select_slider(key="opt_history_1").set_value(STEPS - 1).run()  # as the other tests expect it


def test_history_slider_browses_without_rerunning(finished):
    state = finished.session_state["opt_run"]
    _, last_url = shown_image(finished)

    finished.select_slider(key="opt_history_1").set_value(2).run()
    assert not finished.exception
    assert finished.session_state["opt_runs"] == 1 and finished.session_state["opt_run"] is state
    assert not finished.get("progress")  # nothing ran in this rerun
    caption, url = shown_image(finished)
    assert caption == f"iteration 2 · objective {state.record.rows[0].objectives[2]:.4g}"
    assert url != last_url
    spec = chart(finished)
    (dot,) = [trace for trace in spec["data"] if trace["mode"] == "markers"]
    assert dot["x"] == [2] and dot["y"] == pytest.approx([state.record.rows[0].objectives[2]])
    assert spec["layout"]["shapes"][0]["x0"] == 2

    finished.select_slider(key="opt_history_1").set_value(STEPS - 1).run()
    assert shown_image(finished)[1] == last_url  # the same frame again, byte for byte
    assert finished.session_state["opt_runs"] == 1


def test_the_run_computes_beside_the_page_and_stop_keeps_its_history(lite0):
    """Start returns at once with the run on its own thread; a rerun meanwhile draws its newest snapshot and
    leaves it running; Stop ends it at its next snapshot, keeping what it made, with the model left clean."""
    at = page()
    at.number_input(key="opt_steps").set_value(2000)
    at.number_input(key="opt_size_efficientnet_lite0").set_value(SIZE)
    at.button(key="opt_start").click().run()
    assert not at.exception and not at.error
    state = at.session_state["opt_run"]
    assert state.active and state.thread is not threading.current_thread()
    deadline = time.monotonic() + 120
    while state.snapshots < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert state.snapshots >= 3
    at.run()  # any rerun while it runs: the page draws the newest snapshot, the run goes on
    assert not at.exception and not at.error and state.active
    (progress,) = at.get("progress")
    assert re.match(r"iteration \d+ of 2000 · flamingo", progress.proto.text), progress.proto.text
    caption, _ = shown_image(at)
    assert caption.startswith("iteration ")
    assert at.session_state["opt_runs"] == 1

    at.button(key="opt_stop").click().run()  # its callback asks the run to end at its next snapshot
    assert state.wait(120)
    assert state.status == "stopped" and 3 <= state.record.iteration + 1 < 2000
    assert state.history.iterations[-1] == state.record.iteration
    assert hook_count(lite0.module) == 0 and not any(p.grad is not None for p in lite0.module.parameters())

    at.run()
    assert not at.exception and not at.error
    done = state.record.iteration + 1
    assert at.info[0].value.startswith(f"Stopped after {done} of 2000 iterations")
    assert at.select_slider(key="opt_history_1").options[-1] == str(done - 1)
    assert shown_image(at)[0] == f"iteration {done - 1} · objective {state.record.rows[0].objectives[-1]:.4g}"
    assert len(at.get("download_button")) == 4


def test_preset_fills_theta_and_editing_makes_it_custom():
    at = page()
    labels = [f"Lite0 row {r} (calibrated)" for r in range(1, 5)] + [f"Table 1 row {r} (verbatim)" for r in range(1, 5)]
    labels += ["No regularization (fooling images)"]
    later = ["Fourier + decorrelated + transforms (Olah 2017)", "magnitude-constrained phase (MACO, Fel 2023)",
             "feature accentuation of a photo (Hamblin 2024)"]
    assert at.selectbox(key="opt_preset").options == labels + later + ["custom θ"]
    at.selectbox(key="opt_preset").set_value("table1:1").run()
    assert at.number_input(key="opt_steps").value == 500 and at.slider(key="opt_norm_pct").value == 50
    assert at.radio(key="opt_lr_policy").value == "progress"
    at.number_input(key="opt_decay").set_value(0.01).run()
    assert at.selectbox(key="opt_preset").value == "custom"
    assert at.slider(key="opt_norm_pct").value == 50  # the other θ stay
    assert len(at.caption) >= len(THETA)  # every θ explained in a line
    calibrated = presets.resolve("efficientnet_lite0", "2")
    at.selectbox(key="opt_preset").set_value("2").run()
    assert at.number_input(key="opt_steps").value == calibrated.steps
    assert at.number_input(key="opt_decay").value == calibrated.decay
    assert at.slider(key="opt_norm_pct").value == calibrated.norm_pct


def test_no_regularization_says_what_the_paper_concluded_and_shows_the_network_sure_and_the_judge_not():
    at = page()
    assert not any(c.value == presets.FOOLING_NOTE for c in at.caption)
    at.selectbox(key="opt_preset").set_value("none").run()
    assert at.number_input(key="opt_decay").value == 0 and at.slider(key="opt_norm_pct").value == 0
    assert any(c.value == presets.FOOLING_NOTE for c in at.caption)
    at.number_input(key="opt_steps").set_value(40)
    at.number_input(key="opt_size_efficientnet_lite0").set_value(96).run()
    assert at.selectbox(key="opt_preset").value == "custom" and any(c.value == presets.FOOLING_NOTE for c in at.caption)
    at.button(key="opt_start").click().run()
    assert at.session_state["opt_run"].wait(180)
    at.run()
    assert not at.exception and not at.error
    (line,) = [m.value for m in at.markdown if m.value.startswith("**Quality**")]
    own = float(line.split("network p ")[1].split(" ")[0])
    rank = int(line.split("rank ")[1].split(" ")[0])
    assert own >= 0.99 and rank > 5 and line.endswith("not legible"), line


def test_minus_another_unit_and_diversity_run_the_librarys_composed_batch(lite0):
    from deepvis.objectives import feature_distance, parse, with_diversity

    at = page()
    at.selectbox(key="opt_group_efficientnet_lite0").set_value("_blocks.9").run()
    at.selectbox(key="opt_layer_efficientnet_lite0").set_value("_blocks.9._swish_1").run()
    at.number_input(key="opt_unit").set_value(20).run()
    at.number_input(key="opt_minus").set_value(7).run()
    at.number_input(key="opt_div_n").set_value(3).run()
    at.number_input(key="opt_steps").set_value(8)
    at.number_input(key="opt_size_efficientnet_lite0").set_value(SIZE).run()
    at.button(key="opt_start").click().run()
    assert at.session_state["opt_run"].wait(180)
    at.run()
    assert not at.exception and not at.error
    record = at.session_state["opt_run"].record
    want = with_diversity(parse(lite0, "_blocks.9._swish_1:20 - 0.5*_blocks.9._swish_1:7"), 3.0, 3)
    assert [row.target for row in record.rows] == want
    direct = opt.run(lite0, want, presets.resolve(lite0, "3").replace(steps=8), seed=0, size=SIZE)
    for ours, theirs in zip(record.rows, direct.rows):
        np.testing.assert_allclose(ours.objectives, theirs.objectives, rtol=1e-4, atol=1e-4)
    caption, _ = shown_image(at)
    assert caption.startswith("iteration 7 · objectives ") and caption.count(" · ") == 3  # one value per image
    distance = feature_distance(lite0, np.stack([r.best_x for r in record.rows]), "_blocks.9._swish_1")
    assert any(c.value.endswith(f"features {distance:.3f} (0 = the same, 2 = opposite)") for c in at.caption)


def test_a_photos_representation_is_inverted_and_shown_beside_the_photo(lite0):
    from deepvis.images import decode_image, model_view, sample_bytes
    from deepvis.inversion import inversion_target, representation_distance

    at = page()
    at.segmented_control(key="opt_what").set_value("a photo's representation").run()
    assert not at.exception and not at.error
    assert at.selectbox(key="inv_preset").value == "fourier"  # the default for inversion
    layer = at.selectbox(key="inv_layer_efficientnet_lite0").value
    at.number_input(key="inv_steps").set_value(12)
    at.number_input(key="inv_size_efficientnet_lite0").set_value(SIZE).run()
    at.button(key="inv_start").click().run()
    assert at.session_state["inv_run"].wait(180)
    at.run()
    assert not at.exception and not at.error
    row = at.session_state["inv_run"].record.rows[0]
    view = model_view(decode_image(sample_bytes("chelsea")), lite0.spec)  # the default sample photo
    assert row.target == inversion_target(view, layer)
    distance = representation_distance(lite0, row.best_x, view, layer)
    assert any(c.value.startswith(f"Relative distance of the representations ||Φ(x) − Φ0|| / ||Φ0|| at {layer}: "
                                  f"{distance:.3f}") for c in at.caption)
    captions = [c for img in at.get("image") for c in img.captions]
    assert "The photo" in captions and any(c.startswith(f"Recovered from its {layer}") for c in captions)
    assert not any(m.value.startswith("**Quality**") for m in at.markdown)  # no class to judge


@pytest.mark.parametrize(("key", "value", "message"), [
    ("opt_decay", 1.5, "decay must be in [0, 1), not 1.5"),
    ("opt_lr", -1.0, "lr must be at least 0, not -1"),
    ("opt_steps", 0, "steps must be in [1, 100000], not 0"),
])
def test_bad_settings_give_one_error_line_and_no_start(key, value, message):
    at = page()
    at.number_input(key=key).set_value(value).run()
    assert not at.exception
    assert len(at.error) == 1 and message in at.error[0].value and "\n" not in at.error[0].value
    assert at.button(key="opt_start").disabled


def snapshot(iteration: int, rows: int, size: int) -> Snapshot:
    n, image = iteration + 1, np.zeros((size, size, 3), np.float32)
    row = RowRecord(Target("_fc", 1), presets.table1_row(3), np.zeros(n), np.zeros(n, bool), np.zeros(n),
                        np.zeros(n), np.zeros(n), image, 0, image, (127.0, 127.0, 127.0))
    return Snapshot(iteration, 1000, RunRecord((row,) * rows, 0, size, iteration, 0.0))


@pytest.mark.parametrize("rows", [1, 6])
def test_history_of_a_1000_iteration_run_at_224px_stays_bounded_and_even(rows):
    frames = history.FrameHistory()
    every = history.snapshot_every(1000)
    for it in [*range(0, 1000, every), 999]:  # what optimize yields
        frames.add(snapshot(it, rows, 224))
    assert frames.nbytes <= history.HISTORY_BYTES <= 32 * 2**20  # two pages' histories stay under 64 MB
    assert len(frames) >= (100 if rows == 1 else 20)  # still plenty to browse
    iterations = frames.iterations
    assert iterations[0] == 0 and iterations[-1] == 999
    gaps = set(np.diff(iterations[:-1]))
    assert len(gaps) == 1  # evenly spaced, apart from the final frame
    assert gaps == {history.snapshot_every(1000) * frames.stride}


def test_an_image_too_small_for_the_network_gives_one_error_line():
    at = page()
    at.number_input(key="opt_steps").set_value(2)
    at.number_input(key="opt_size_efficientnet_lite0").set_value(16)  # the logits need at least 32 px
    start_run(at, "opt")
    assert not at.exception
    assert len(at.error) == 1 and at.error[0].value.startswith("Cannot start: A 16-pixel image is too small")
    assert "\n" not in at.error[0].value
    assert "opt_run" not in at.session_state and not at.get("image")


def test_accentuation_asks_for_a_photo_and_starts_from_it(lite0):
    at = page()
    assert not any(r.key == "opt_accent_source" for r in at.radio)  # no photo picker for the paper's rows
    at.selectbox(key="opt_preset").set_value("accentuate").run()
    assert at.number_input(key="opt_decay").disabled and not at.number_input(key="opt_adam_lr").disabled
    assert at.radio(key="opt_accent_source").value == "Sample photo"
    at.selectbox(key="opt_accent_sample").set_value("coffee")
    at.number_input(key="opt_steps").set_value(3)
    at.number_input(key="opt_size_efficientnet_lite0").set_value(SIZE).run()
    start_run(at, "opt")
    assert not at.exception and not at.error
    state = at.session_state["opt_run"]
    row = state.record.rows[0]
    assert state.status == "finished" and row.settings.param == "accentuate" and row.steps_done == 3
    # it started from the coffee photo: the first image is the network's 64-px view of it, not noise
    from deepvis import param_ascent
    from deepvis.images import decode_image, sample_bytes

    photo = np.asarray(decode_image(sample_bytes("coffee")))
    start = param_ascent.photo_rgb(photo, lite0.spec, SIZE)[0].permute(1, 2, 0).numpy() * 255
    first = state.history.frames[0].pixels[0].astype(np.float32) + np.array(row.mean)
    assert np.abs(first - start).mean() < 2.0
    # choosing Upload with nothing uploaded keeps Start disabled, with a one-line hint
    at.radio(key="opt_accent_source").set_value("Upload").run()
    assert at.button(key="opt_start").disabled and not at.exception


@pytest.mark.parametrize("failure, line", [
    (RuntimeError("Given input size: (16x1x1). Calculated output size: (16x0x0).\nmore"),
     "Given input size: (16x1x1). Calculated output size: (16x0x0). (is the image too small for this network?)"),
    (opt.OptimizeError("the unit left its layer"), "the unit left its layer"),
    (KeyError("bug"), "KeyError: 'bug' (a bug; the server log has the details)"),
])
def test_a_run_that_fails_on_its_thread_keeps_what_it_made_and_one_line(failure, line):
    closed = []

    def run():
        try:
            yield snapshot(0, 1, 8)
            yield snapshot(1, 1, 8)
            raise failure
        finally:
            closed.append(True)

    state = history.RunState(1, ("x",), history.FrameHistory()).start(run())
    assert state.wait(30)
    assert state.status == "failed" and state.error == line and "\n" not in state.error
    assert state.history.iterations == [0, 1] and state.record.iteration == 1 and closed == [True]


def test_stop_ends_a_run_at_its_next_snapshot_and_closes_it():
    release, closed, made = threading.Event(), [], []

    def run():
        try:
            for i in range(1000):
                made.append(i)
                yield snapshot(i, 1, 8)
                if i == 2:
                    release.wait(30)
        finally:
            closed.append(True)

    state = history.RunState(1, ("x",), history.FrameHistory()).start(run())
    deadline = time.monotonic() + 30
    while state.snapshots < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    state.request_stop()
    release.set()
    assert state.wait(30)
    assert state.status == "stopped" and closed == [True]
    assert made == [0, 1, 2, 3] and state.history.iterations[-1] == 3  # the snapshot in progress, then no more


def test_a_run_nobody_watches_any_more_stops_and_closes():
    closed, asked = [], []

    def run():
        try:
            for i in range(1000):
                yield snapshot(i, 1, 8)
        finally:
            closed.append(True)

    def watched():  # the session is there for three snapshots, then gone
        asked.append(True)
        return len(asked) < 3

    state = history.RunState(1, ("x",), history.FrameHistory()).start(run(), watched)
    assert state.wait(30)
    assert state.status == "stopped" and state.error is None and closed == [True]
    assert state.history.iterations == [0, 1, 2]


def test_a_finished_run_is_scored_on_its_own_thread_before_the_page_draws_it(lite0, monkeypatch):
    at = page()
    at.number_input(key="opt_steps").set_value(STEPS)
    at.number_input(key="opt_size_efficientnet_lite0").set_value(SIZE)
    scored_on, assess = [], quality.assess_record

    def recorded(*args, **kwargs):
        scored_on.append(threading.current_thread())
        return assess(*args, **kwargs)

    monkeypatch.setattr(quality, "assess_record", recorded)
    at.button(key="opt_start").click().run()
    state = at.session_state["opt_run"]
    assert state.wait(180) and state.status == "finished"
    assert scored_on == [state.thread]  # scored where the run computed, before any rerun of the page
    row = state.record.rows[0]
    (verdict,) = quality.assess(lite0, row.best_x[None], [row.target])
    assert state.extra["quality"] == [verdict] and state.extra["quality_at"] == STEPS - 1

    def no_scoring(*args, **kwargs):
        raise AssertionError("scored again")

    monkeypatch.setattr(quality, "assess_record", no_scoring)  # the page's rerun uses what the run's thread made
    at.run()
    assert not at.exception and not at.error
    assert any(m.value.startswith(f"**Quality** of the best image (iteration {row.best_step}) — {verdict.label}")
               for m in at.markdown)


def test_work_after_a_run_follows_on_its_thread_once_it_has_ended_and_wait_covers_it():
    release, seen = threading.Event(), []

    def then(state):
        seen.append((threading.current_thread(), state.ended.is_set(), state.active, state.status))
        assert release.wait(30)

    state = history.RunState(1, ("x",), history.FrameHistory()).start(
        (snapshot(i, 1, 8) for i in range(3)), then=then)
    assert state.ended.wait(30)
    assert not state.wait(0.2)  # the run is over, the work after it is not
    release.set()
    assert state.wait(30)
    assert seen == [(state.thread, True, False, "stopped")]  # a run whose last snapshot is not `done` stopped

    def broken(state):
        raise KeyError("bug")

    def failing():
        yield snapshot(0, 1, 8)
        raise RuntimeError("the network cannot run this")

    called = []
    ok = history.RunState(2, ("x",), history.FrameHistory()).start((snapshot(i, 1, 8) for i in range(2)),
                                                                   then=broken)
    failed = history.RunState(3, ("x",), history.FrameHistory()).start(failing(), then=called.append)
    gone = history.RunState(4, ("x",), history.FrameHistory()).start((snapshot(i, 1, 8) for i in range(5)),
                                                                     lambda: False, then=called.append)
    assert ok.wait(30) and ok.status == "stopped"  # a failure after the run is logged, the run kept
    assert failed.wait(30) and failed.status == "failed" and called == []  # nothing to score after a failure
    assert gone.wait(30) and gone.status == "stopped" and called == []  # nor for a session that has gone
