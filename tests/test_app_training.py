"""The Training page through Streamlit's AppTest: runs recorded here in seconds.

The runs are the digits network (:mod:`deepvis.examples.digits`) recorded by hand with no training (a seeded
init nudged at each step), so recording takes no time; their measures are computed for real
(:func:`deepvis.timeline.compute`, a second), and their ``conv1`` pictures are written straight into the
timeline's layout (``pictures/<layer>-<key>/step-XXXXXXXX.npz``) as flat tiles that encode (filter, step), so
a test can tell exactly which tile the page drew without minutes of optimization.  In the ``dead`` run every
unit of ``relu_1`` is killed from step 1 on (``conv2``'s bias pushed far below zero).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

import deepvis
from deepvis import timeline as tl
from deepvis.app import training as tr
from deepvis.app import training_runs
from deepvis.progress import drain
from deepvis.render import upscale
from tests.app_media import record_media

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "streamlit_app.py")
PAGE = str(ROOT / "app_pages" / "training.py")
STEPS = (0, 10, 20)
LAYER = "conv1"


def tile(unit: int, index: int) -> np.ndarray:
    """The flat tile written for ``unit`` at the ``index``-th step: its colour names both."""
    return np.broadcast_to(np.array([unit * 15, 60 + index * 80, 200], np.uint8), (tl.TILE, tl.TILE, 3)).copy()


def write_pictures(view: deepvis.run.RunView, layer: str = LAYER) -> Path:
    """Flat :func:`tile` pictures of every filter of ``layer`` at every step, where the timeline keeps them."""
    loaded = view.load(view.steps[0], "cpu")
    folder = tl.Pictures(layer).folder(view, loaded)
    folder.mkdir(parents=True, exist_ok=True)
    channels, side = loaded.layer(layer).channels, loaded.spec.input_size
    for index, step in enumerate(view.steps):
        np.savez(folder / f"step-{step:08d}.npz", x=np.zeros((channels, side, side, 1), np.float32),
                 objective=np.arange(channels, dtype=np.float32) + index / 10, mean=np.asarray([127.5]),
                 tiles=np.stack([tile(u, index) for u in range(channels)]))
    return folder


def record(folder: Path, dead_from: int | None = None, steps: tuple[int, ...] = STEPS, seed: int = 0) -> Path:
    """The digits network recorded at ``steps`` (no training; module docstring)."""
    from deepvis.examples import digits

    torch.manual_seed(seed)
    x, y = digits.digits()
    probe = torch.cat([x[y == d][:1] for d in range(10)])
    net = digits.Net()
    run = deepvis.Run(folder, "deepvis.examples.digits:Net", input=digits.INPUT, mean=digits.MEAN, std=digits.STD,
                      classes=digits.CLASSES, probe=probe)
    for index, step in enumerate(steps):
        with torch.no_grad():
            if index:
                for parameter in net.parameters():
                    parameter.add_(0.02 * torch.randn_like(parameter))
            if dead_from is not None and index >= dead_from:
                net.conv2.bias.fill_(-1e3)
        run.snapshot(net, step=step, loss=2.3 / (index + 1), accuracy=0.1 + 0.4 * index)
    return folder


def make_runs(root: Path) -> dict[str, Path]:
    """``good`` and ``dead`` runs under ``root``, measured, with ``conv1`` pictures (module docstring)."""
    runs = {"good": record(root / "good"), "dead": record(root / "dead", dead_from=1, seed=1)}
    for path in runs.values():
        view = deepvis.open_run(path)
        drain(tl.compute(view, None, "cpu"))
        write_pictures(view)
    return runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    return make_runs(tmp_path_factory.mktemp("training-runs"))


@pytest.fixture
def served(runs, monkeypatch):
    """The server's arguments as ``streamlit run streamlit_app.py -- --runs ROOT`` gives them."""
    monkeypatch.setattr(sys, "argv", ["streamlit_app.py", "--runs", str(runs["good"].parent)])
    monkeypatch.delenv("DEEPVIS_RUNS", raising=False)
    return runs


def page(**params: str) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.query_params.update(params)
    at.session_state["train_auto"] = False  # no background optimization unless a test asks for it
    return at.run()


def fine(at: AppTest) -> None:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def captions(at: AppTest) -> list[str]:
    return [c.value for c in at.caption]


def image_captions(at: AppTest) -> list[str]:
    return [i.captions[0] for i in at.get("image") if i.captions]


def grid_caption(at: AppTest) -> str:
    return next(c for c in captions(at) if "filters of `" in c)


def big_tile(at: AppTest, pixels) -> tuple[str, np.ndarray]:
    """The chosen filter's enlarged tile: its caption and pixels."""
    (image,) = [i for i in at.get("image") if i.captions and i.captions[0].startswith(f"{LAYER} filter ")]
    return image.captions[0], pixels(image.value[0])


def test_the_runs_under_the_root_are_listed_and_the_last_step_is_shown(served):
    at = page()
    fine(at)
    assert at.selectbox(key="train_run_choice").options == ["dead", "good", "a folder on the server…"]
    name = at.selectbox(key="train_run_choice").value
    assert at.selectbox(key="train_layer").value == LAYER  # the layer whose pictures exist
    assert at.select_slider(key="train_step").value == STEPS[-1]
    assert grid_caption(at).startswith(f"{name} at step {STEPS[-1]}: all 16 filters of `{LAYER}`")
    assert any(c.endswith(f"pictures computed at all {len(STEPS)} steps.") for c in captions(at))
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    titles = [a["text"] for a in spec["layout"]["annotations"]]
    assert titles[:2] == ["loss", "accuracy"] and "dead channels (fraction)" in titles and \
        "weight noise (high-frequency ratio)" in titles
    assert {s["x0"] for s in spec["layout"]["shapes"]} == {STEPS[-1]}  # the step's marker in every panel
    loss = next(t for t in spec["data"] if t["name"] == name and t["xaxis"] == "x")
    assert loss["x"] == list(STEPS) and loss["y"] == pytest.approx([2.3, 1.15, 2.3 / 3])
    assert any("probe image" in s.value for s in at.subheader)


def test_the_step_slider_redraws_every_part_without_building_a_network(served, monkeypatch):
    pixels = record_media(monkeypatch)
    at = page()
    fine(at)
    for step in STEPS:  # every step seen once
        at.select_slider(key="train_step").set_value(step).run()

    def no_build(*args, **kwargs):
        raise AssertionError("a network was built")

    monkeypatch.setattr(deepvis.run.RunView, "load", no_build)
    for index, step in reversed(list(enumerate(STEPS))):
        started = time.perf_counter()
        at.select_slider(key="train_step").set_value(step).run()
        print(f"step {step}: {1000 * (time.perf_counter() - started):.0f} ms (AppTest, shared CPU)")
        fine(at)
        assert f"at step {step}:" in grid_caption(at)
        assert at.select_slider(key="train_hist_step").value == step  # the history follows the step slider
        caption, shown = big_tile(at, pixels)
        assert caption.startswith(f"{LAYER} filter 0 at step {step} · objective {index / 10:.4g}")
        assert np.array_equal(shown, upscale(tile(0, index), 256, smooth=False))
        assert any(c.startswith(f"loss {2.3 / (index + 1):.4g} · accuracy") for c in captions(at))
        spec = json.loads(at.get("plotly_chart")[0].proto.spec)
        assert {s["x0"] for s in spec["layout"]["shapes"]} == {step}
        assert any(c.startswith(f"`{LAYER}` activations at step {step}") for c in image_captions(at))
        assert any(c.startswith(f"dead's first convolution at step {step}") for c in image_captions(at))


def test_a_filters_history_has_its_own_slider_and_downloads(served, monkeypatch):
    pixels = record_media(monkeypatch)
    at = page(run=str(served["good"]))
    fine(at)
    at.number_input(key="train_unit").set_value(5).run()
    fine(at)
    assert "the framed one is filter 5" in grid_caption(at)
    at.select_slider(key="train_hist_step").set_value(STEPS[0]).run()
    caption, shown = big_tile(at, pixels)
    assert caption.startswith(f"{LAYER} filter 5 at step {STEPS[0]}")
    assert np.array_equal(shown, upscale(tile(5, 0), 256, smooth=False))
    assert at.select_slider(key="train_step").value == STEPS[-1]  # the step slider stays where it was
    assert f"at step {STEPS[-1]}:" in grid_caption(at)
    labels = {b.proto.label: b for b in at.get("download_button")}
    assert set(labels) == {"History (animated GIF)", "Layer over steps (PNG)"}
    assert not labels["History (animated GIF)"].proto.disabled
    assert dict(at.query_params)["unit"] == "5"


def test_a_folder_that_is_not_a_run_gives_one_line(served, tmp_path):
    at = page()
    at.selectbox(key="train_run_choice").set_value(training_runs.OTHER).run()
    for folder, words in [(tmp_path, "is not a deepvis run"), (tmp_path / "nowhere", "no run folder")]:
        at.text_input(key="train_run_folder").input(str(folder)).run()
        assert not at.exception
        (error,) = at.error
        assert words in error.value and "\n" not in error.value
    (tmp_path / "run.json").write_text("{not json")
    at.text_input(key="train_run_folder").input(str(tmp_path)).run()
    (error,) = at.error
    assert "cannot be read" in error.value and not at.exception


def test_deleted_half_written_and_mismatched_snapshots_give_one_line_each(served, tmp_path):
    from safetensors.torch import save_file

    run = record(tmp_path / "damaged", steps=(0, 10, 20, 30, 40))
    snapshots = sorted((run / "snapshots").iterdir())
    snapshots[0].unlink()  # deleted
    data = snapshots[1].read_bytes()
    snapshots[1].write_bytes(data[: len(data) // 2])  # half-written (and not the last one)
    save_file({"conv1.weight": torch.zeros(3, 1, 5, 5)}, str(snapshots[2]))  # another network's shapes
    at = page(run=str(run))
    fine(at)
    lines = [w.value for w in at.warning]
    assert len(lines) == 3 and all("\n" not in line and "left out" in line for line in lines)
    assert lines[0] == f"damaged, step 0: its snapshot {snapshots[0].name} was deleted; left out"
    assert lines[1].startswith(f"damaged, step 10: {snapshots[1].name} cannot be read (")
    assert lines[2] == (f"damaged, step 20: {snapshots[2].name} has conv1.weight of shape (3, 1, 5, 5), not "
                        "(16, 1, 5, 5) as the run began; left out")
    assert at.select_slider(key="train_step").options == ["30", "40"]  # the page goes on with what is left
    assert grid_caption(at).startswith("damaged at step 40")


def test_dead_units_are_diagnosed_and_two_runs_compare_side_by_side(served):
    at = page(run=str(served["dead"]))
    fine(at)
    dead = [w.value for w in at.warning if "have been dead" in w.value]
    assert dead and dead[0].startswith("100% of `relu_1`'s channels have been dead since step 10")
    assert "*Evidence (relu_1):* dead 1 · channels 0–31 · since 10" in dead[0]
    at.select_slider(key="train_step").set_value(0).run()
    assert not any("have been dead" in w.value for w in at.warning)  # not yet at step 0
    at.toggle(key="train_compare").set_value(True).run()
    at.selectbox(key="train_cmp_choice").set_value("good").run()
    fine(at)
    assert dict(at.query_params)["compare"] == str(served["good"])
    at.select_slider(key="train_step").set_value(STEPS[-1]).run()
    grids = [c for c in captions(at) if "filters of `" in c]
    assert [g.split(":")[0] for g in grids] == [f"dead at step {STEPS[-1]}", f"good at step {STEPS[-1]}"]
    assert len([w for w in at.warning if "have been dead" in w.value]) == 1  # only the dead run's
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    losses = [t for t in spec["data"] if t["xaxis"] == "x"]
    assert [t["name"] for t in losses] == ["dead", "good"] and losses[1]["line"]["dash"] == "dash"


def test_the_page_is_registered_at_training():
    source = Path(APP).read_text()
    assert 'st.Page("app_pages/training.py", title="Training", icon=":material/timeline:", url_path="training")' \
        in source  # the browser test opens it at /training


def test_the_training_url_round_trips_and_a_bad_link_warns(served):
    at = page(run=str(served["good"]), step=str(STEPS[1]), layer=LAYER, unit="3")
    fine(at)
    assert at.select_slider(key="train_step").value == STEPS[1]
    assert at.number_input(key="train_unit").value == 3
    assert dict(at.query_params) == {"run": str(served["good"]), "step": str(STEPS[1]), "layer": LAYER, "unit": "3"}
    at.select_slider(key="train_step").set_value(STEPS[2]).run()
    assert dict(at.query_params)["step"] == str(STEPS[2])

    bad = page(run=str(served["good"]), step="7", layer="no_such_layer", unit="99")
    assert not bad.exception and not bad.error
    assert sorted(w.value.split(";")[0] for w in bad.warning if w.value.startswith("The link")) == [
        "The link's filter 99 does not exist here (filters 0-15)", "The link's layer 'no_such_layer' is not a layer "
        "of good", "The link's step 7 is not a snapshot of good"]


def test_a_new_snapshot_appears_and_missing_measures_fill_in_on_a_background_job(served, tmp_path):
    run = record(tmp_path / "live", steps=STEPS[:2])
    write_pictures(deepvis.open_run(run))  # pictures yes, measures no
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.query_params.update(run=str(run))
    at.run()  # "compute as snapshots arrive" is on: the measures job starts by itself
    assert not at.exception and not at.error
    assert at.select_slider(key="train_step").value == STEPS[1]
    for _ in range(600):
        at.run()
        if any(c.endswith(f"pictures computed at all {len(STEPS) - 1} steps.") for c in captions(at)):
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"the measures were not computed: {captions(at)}")
    assert tl.read_measures(deepvis.open_run(run), STEPS[1]) is not None

    shown = tr.Shown(deepvis.open_run(run), None)
    before = shown.fingerprint()
    from deepvis.examples import digits

    torch.manual_seed(5)
    deepvis.Run(run, "deepvis.examples.digits:Net", input=digits.INPUT, mean=digits.MEAN, std=digits.STD,
                classes=digits.CLASSES).snapshot(digits.Net(), step=STEPS[2], loss=0.5, accuracy=0.9)
    assert shown.fingerprint() != before  # what the live watch notices
    at.session_state["train_auto"] = False  # (its pictures would be optimized for real)
    at.run()
    fine(at)
    assert at.select_slider(key="train_step").options == [str(s) for s in STEPS]
    assert at.select_slider(key="train_step").value == STEPS[1]  # the newest step with pictures
    assert any(b.proto.label.startswith("Compute 1 measures and 1 `conv1` pictures") for b in at.button)
    at.select_slider(key="train_step").set_value(STEPS[2]).run()
    assert "not computed yet" in grid_caption(at)
    at.select_slider(key="train_step").set_value(STEPS[1]).run()
    write_pictures(deepvis.open_run(run))  # as the job would: the slider, left on the newest, moves on
    at.run()
    fine(at)
    assert at.select_slider(key="train_step").value == STEPS[2] and "not computed yet" not in grid_caption(at)
