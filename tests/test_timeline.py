"""Measures and pictures over a run's steps (deepvis.health, deepvis.timeline) and ``deepvis timeline``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from deepvis import health, timeline
from deepvis.diagnosis import diagnose
from deepvis.cli import main
from deepvis.progress import drain
from deepvis.run import Run, open_run
from tests.conftest import NETS_FILE

GRAY = {"input": "1x28x28", "mean": [0.5], "std": [0.5]}
MODEL = f"{NETS_FILE}:GrayNet"
QUICK = timeline.Pictures("conv1", steps=40)  # conv1's 8 filters, 40 iterations each: a test-sized timeline
DEAD = [2, 5]


def _net(seed: int = 0, dead: list[int] = ()):
    from deepvis.user_code import import_file

    torch.manual_seed(seed)
    net = import_file(NETS_FILE).GrayNet()
    with torch.no_grad():
        for c in dead:  # conv2's channel c: zero weights and a negative bias, so relu_1's channel c is 0 everywhere
            net.conv2.weight[c] = 0.0
            net.conv2.bias[c] = -1.0
    return net


@pytest.fixture(scope="module")
def dying_run(tmp_path_factory):
    """Step 0 healthy, steps 10 and 20 with conv2's channels 2 and 5 zeroed by hand; pictures of conv1 computed."""
    path = tmp_path_factory.mktemp("dying") / "run"
    run = Run(path, MODEL, **GRAY, probe=torch.randn(6, 1, 28, 28, generator=torch.Generator().manual_seed(0)))
    for step, dead in ((0, []), (10, DEAD), (20, DEAD)):
        run.snapshot(_net(0, dead), step=step, loss=2.0 - step / 20)
    view = open_run(path)
    done = drain(timeline.compute(view, QUICK))
    assert done == [(0, "measures"), (0, "pictures"), (10, "measures"), (10, "pictures"), (20, "measures"),
                    (20, "pictures")]
    return view


def test_layer_health_by_hand():
    act = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]], [[2.0, -1.0], [0.0, 3.0]]],
                        [[[0.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [1.0, 0.0]]]])  # (2, 3, 2, 2)
    found = health.layer_health(act)
    assert found.dead == pytest.approx(1 / 3) and found.dead_channels == (1,)
    assert found.sparsity == pytest.approx(19 / 24)  # 24 values, 5 non-zero
    assert found.mean == pytest.approx(6 / 24)
    assert health.layer_health(torch.tensor([[0.0, 1.0], [0.0, 0.0]])).dead_channels == (0,)  # a vector layer


def test_weight_noise_by_hand_and_on_noise_versus_smooth_kernels():
    as_weight = lambda rows: torch.tensor(rows, dtype=torch.float32)[None, None]  # noqa: E731
    assert health.weight_noise(as_weight([[1, -1], [-1, 1]])) == pytest.approx(1.5)  # a checkerboard
    assert health.weight_noise(as_weight([[0, 1], [0, 1]])) == pytest.approx(0.75)  # a step
    assert health.weight_noise(torch.ones(4, 3, 1, 1)) is None and health.weight_noise(torch.zeros(2, 1, 3, 3)) is None
    white = torch.randn(64, 1, 5, 5, generator=torch.Generator().manual_seed(0))
    y, x = torch.meshgrid(torch.arange(5.0), torch.arange(5.0), indexing="ij")
    smooth = torch.stack([torch.exp(-((x - 2 - s) ** 2 + (y - 2) ** 2) / 4) for s in (-1, 0, 1)])[:, None]
    assert health.weight_noise(white) == pytest.approx(1.0, abs=0.1)
    assert health.weight_noise(smooth) < 0.5 < health.NOISY < health.weight_noise(white)
    assert health.weight_norm(as_weight([[3, 4]])) == pytest.approx(5.0)


def test_channels_zeroed_by_hand_are_reported_dead_since_the_step_they_died(dying_run):
    found = timeline.summary(dying_run)
    assert found["steps"] == [0, 10, 20] and found["scalars"] == {"loss": [2.0, 1.5, 1.0]}
    relu = found["layers"]["relu_1"]
    natural = timeline.read_measures(dying_run, 0)["layers"]["relu_1"]["dead_channels"]  # dead on the probe at init
    expected = sorted(set(natural) | set(DEAD))
    assert not set(natural) & set(DEAD) and relu["dead"] == [len(natural) / 16] + [len(expected) / 16] * 2
    assert timeline.read_measures(dying_run, 20)["layers"]["relu_1"]["dead_channels"] == expected
    assert found["layers"]["conv2"]["dead"] == [0.0, 0.0, 0.0]  # -1 everywhere is not zero
    assert found["convs"]["conv1"]["noise"][0] == found["convs"]["conv1"]["noise"][2]  # conv1 never changed
    assert found["first_conv"] == "conv1"
    dead = [d for d in diagnose(dying_run) if d.kind == "dead"]
    assert len(dead) == 1  # relu_1 and the pooling after it are the same units: said once
    assert dead[0].layer == "relu_1" and dead[0].evidence["channels"] == DEAD and dead[0].evidence["since"] == 10
    assert dead[0].evidence["dead_from_the_start"] == natural  # dead on the probe at init: not training's doing
    assert dead[0].text.startswith("12% of `relu_1`'s channels have been dead since step 10")
    assert not [d for d in diagnose(dying_run, at=0) if d.kind == "dead"]
    noisy = [d for d in diagnose(dying_run) if d.layer == "conv1"]
    assert noisy[0].kind == "noisy" and "still noisy" in noisy[0].text  # an untrained first layer


def test_pictures_are_the_same_at_every_step_of_an_unchanged_layer_and_a_missing_one_is_computed_alone(dying_run):
    loaded = dying_run.load(0, "cpu")
    folder = QUICK.folder(dying_run, loaded)
    pictures = [timeline.read_pictures(folder, step) for step in dying_run.steps]
    assert all(p is not None for p in pictures)
    assert pictures[0].x.shape == (8, 28, 28, 1) and pictures[0].tiles.shape == (8, timeline.TILE, timeline.TILE, 3)
    # conv1 is the same at every step, and so are the seed and settings: the same images
    assert np.array_equal(pictures[0].x, pictures[2].x) and np.array_equal(pictures[0].tiles, pictures[1].tiles)
    assert pictures[0].tiles.std() > 10  # not blank
    kept = {p: p.stat().st_mtime_ns for p in folder.iterdir()}
    (folder / "step-00000010.npz").unlink()
    (dying_run.path / "measures" / "step-00000020.json").unlink()
    assert timeline.missing(dying_run, QUICK, loaded) == [(10, "pictures"), (20, "measures")]
    assert drain(timeline.compute(dying_run, QUICK)) == [(10, "pictures"), (20, "measures")]
    again = timeline.read_pictures(folder, 10)
    assert np.array_equal(again.x, pictures[1].x)
    assert {p: p.stat().st_mtime_ns for p in folder.iterdir() if p.name != "step-00000010.npz"} == \
        {p: t for p, t in kept.items() if p.name != "step-00000010.npz"}
    strip = timeline.history(dying_run, QUICK, 3, loaded)
    assert [s for s, _ in strip] == [0, 10, 20] and np.array_equal(strip[0][1], pictures[0].tiles[3])
    sheet = timeline.sheet(dying_run, QUICK, loaded)
    assert sheet.shape[0] > 8 * timeline.TILE and sheet.shape[1] > 3 * timeline.TILE
    assert timeline.first_filters_at(dying_run, 0).shape == timeline.first_filters(loaded).shape


def test_a_closed_fill_keeps_what_it_finished(tmp_path):
    run = Run(tmp_path / "r", MODEL, **GRAY)
    for step in (0, 1):
        run.snapshot(_net(step), step=step)
    view = open_run(tmp_path / "r")
    work = timeline.compute(view, QUICK)
    for progress in work:
        if progress.done == 2:  # step 0's measures and pictures
            work.close()
    assert timeline.missing(view, QUICK, view.load(0)) == [(1, "measures"), (1, "pictures")]


def test_the_timeline_command(dying_run, tmp_path, capsys):
    sheet = tmp_path / "sheet.png"
    assert main(["timeline", str(dying_run.path), "--layer", "conv1", "--steps", "40", "--out", str(sheet)]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["steps"] == [0, 10, 20]
    assert list(found["layers"])[0] == "conv1" and set(found["layers"]["relu_1"]) == {"dead", "sparsity", "mean"}
    assert found["layers"]["relu_1"]["dead"] == timeline.summary(dying_run)["layers"]["relu_1"]["dead"]
    assert found["layers"]["relu_1"]["dead"][1] == found["layers"]["relu_1"]["dead"][0] + 2 / 16
    assert found["pictures"]["missing"] == [] and sheet.stat().st_size > 1000
    assert any("relu_1" in d["text"] for d in found["diagnoses"])
    assert main(["timeline", str(tmp_path)]) == 2
    assert "not a deepvis run" in capsys.readouterr().err
    assert main(["timeline", str(dying_run.path), "--layer", "conv9"]) == 2
    err = capsys.readouterr().err
    assert "no layer 'conv9'" in err and len(err.strip().splitlines()) == 1


def test_the_offline_demo_learns_and_a_high_learning_rate_kills_units_which_the_diagnosis_says(tmp_path):
    from deepvis.examples.digits import train

    good = open_run(train(str(tmp_path / "good"), epochs=2, quiet=True))
    assert good.steps == [0, 57, 114]
    accuracy = good.scalars()["accuracy"]
    assert accuracy[0] < 0.3 < 0.9 < accuracy[-1]
    bad = open_run(train(str(tmp_path / "bad"), lr=0.5, epochs=2, quiet=True))
    drain(timeline.compute(good))
    drain(timeline.compute(bad))
    assert not [d for d in diagnose(good) if d.kind == "dead"]
    dead = [d for d in diagnose(bad) if d.kind == "dead"]
    assert dead and dead[0].layer == "relu_1" and dead[0].evidence["dead"] >= 0.5
    noise = timeline.summary(good)["convs"]["conv1"]["noise"]
    assert noise[0] > health.NOISY and noise[-1] < noise[0]  # noise at initialization, smoother as it learns
