"""Scale and rotation of the view (θ's ``scale`` and ``rotate``), on hand-built cases whose answer is known."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from deepvis import calibrate
from deepvis import optimize as opt
from deepvis import parametrize as pz
from deepvis.cli import main as cli_main
from deepvis.settings import Settings
from deepvis.targets import Target

from tests.test_calibrate import STEPS, finish, logged
from tests.test_jitter import NO_REG, NORM, SIZE, WEIGHTS
from tests.test_jitter import tiny  # noqa: F401  (fixture: a 1x1 conv of known weights)
from tests.test_calibrate import judge, model  # noqa: F401  (fixtures)

STD = np.array(NORM.std255)


def test_zoom_about_the_centre_of_a_ramp_halves_its_slope():
    ramp = torch.arange(8, dtype=torch.float64).view(1, 1, 1, 8).expand(1, 1, 8, 8)  # x[i, j] = j
    zoomed = pz.rotate(ramp, 0.0, fill=0.0, zoom=2.0)[0, 0]
    expected = 3.5 + (torch.arange(8, dtype=torch.float64) - 3.5) / 2  # bilinear on a ramp is exact
    torch.testing.assert_close(zoomed, expected.expand(8, 8))
    shrunk = pz.rotate(ramp, 0.0, fill=-1.0, zoom=0.5)[0, 0]
    assert shrunk[4, 0] == -1.0 and shrunk[4, 3] == pytest.approx(3.5 - 0.5 * 2)  # edges uncovered, centre kept
    assert pz.rotate(ramp, 0.0, zoom=1.0) is ramp


def test_each_step_sees_the_view_zoomed_and_turned_by_the_seeded_draws(tiny):
    """The run replayed here: the draws from a generator seeded with seed + 1, the centre neuron of the turned
    and zoomed view, and the pixels that moved spread over the neighbours the draws reached."""
    scale, rotate, steps, lr = 0.2, 30.0, 6, 3.0
    row = opt.run(tiny, Target("0", 0), Settings(**NO_REG, steps=steps, lr=lr, scale=scale, rotate=rotate)).rows[0]
    x = opt.initial_image(SIZE, 0).double()
    mean = torch.tensor(NORM.mean255, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float64).view(1, 3, 1, 1)
    weights = torch.tensor(WEIGHTS, dtype=torch.float64).view(1, 3, 1, 1)
    stream = torch.Generator().manual_seed(1)
    objectives = []
    for it in range(steps):
        x = ((x + mean).clamp(0, 255) - mean).detach().requires_grad_(True)
        v = (2 * torch.rand(2, generator=stream) - 1).tolist()
        view = pz.rotate(x, v[1] * rotate, fill=0.0, zoom=1 + v[0] * scale)
        value = (weights * view / std).sum(dim=1)[0, SIZE // 2, SIZE // 2]
        objectives.append(float(value.detach()))
        (grad,) = torch.autograd.grad(value, x)
        if it < steps - 1:
            x = x + lr * grad * std
    np.testing.assert_allclose(row.objectives, objectives, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(row.last_x.transpose(2, 0, 1), x[0].detach().numpy(), atol=1e-2)
    moved = np.abs(row.last_x - opt.initial_image(SIZE, 0)[0].permute(1, 2, 0).numpy()).max(axis=2) > 1e-3
    assert moved.sum() > 4  # bilinear views spread the step; a fixed view moves one pixel (test_jitter)


def test_rows_with_and_without_transforms_in_one_batch_each_equal_their_single_run(tiny):
    settings = [Settings(**NO_REG, steps=5, lr=3.0, **t) for t in
                (dict(scale=0.3, rotate=20.0), {}, dict(jitter=2, rotate=10.0), dict(jitter=2))]
    batch = opt.run(tiny, [Target("0", 0)] * 4, settings).rows
    for row, one in zip(batch, settings):
        np.testing.assert_allclose(row.last_x, opt.run(tiny, Target("0", 0), one).rows[0].last_x, atol=1e-4)
    # the jitter-only row (its single run draws no transforms) matched above: the transforms' draws leave the
    # jitter's alone; and the turned row is not the plain one
    assert not np.allclose(batch[2].last_x, batch[3].last_x, atol=1e-3)


def test_scale_and_rotate_are_theta_settings_with_flags_labels_ranges_and_old_files_keep_their_keys(
        tmp_path, capsys):
    assert "scale ±0.1 · rotate ±10°" in Settings(scale=0.1, rotate=10).label and "scale" not in Settings().label
    assert "scale" not in Settings().to_dict() and Settings(rotate=5).to_dict()["rotate"] == 5
    for bad in (dict(scale=-0.1), dict(scale=0.6), dict(rotate=50)):
        with pytest.raises(ValueError, match="must be in"):
            Settings(**bad)
    code = cli_main(["optimize", "--layer", "_fc", "--unit", "0", "--steps", "2", "--size", "32", "--scale", "0.1",
                     "--rotate", "10", "--out", str(tmp_path / "o.png")])
    out = capsys.readouterr().out
    assert code == 0 and '"scale": 0.1' in out and '"rotate": 10' in out


def test_the_transform_stage_starts_from_the_jitter_stages_choice_and_keeps_the_better(model, judge, tmp_path):  # noqa: F811
    jittered = finish(calibrate.search(model, tmp_path / "j.json", classes=("red", "blue"), trials=2, steps=STEPS,
                                       validate=("green", "dark"), top=1, judge_with=judge, jitters=(2,)))
    out = tmp_path / "t.json"
    pairs = ((0.1, 10.0), (0.3, 25.0))
    found = finish(calibrate.search(model, out, classes=("red", "blue"), trials=2, steps=STEPS,
                                    validate=("green", "dark"), top=1, judge_with=judge, jitters=(2,),
                                    transforms=pairs))
    lines = logged(tmp_path / "t.json.trials.jsonl")
    tried = {(t.stage, t.row, t.settings.scale): t for t in lines if t.stage.startswith("transform")}
    assert len(tried) == 2 * 4 * 2  # two transforms, four rows, both class sets
    for row in (1, 2, 3, 4):
        base = jittered.rows[row]
        scores = {(0.0, 0.0): jittered.scores[row]}
        for scale, rotate in pairs:
            one, two = tried[("transform", row, scale)], tried[("transform-validate", row, scale)]
            assert one.settings == two.settings == base.replace(scale=scale, rotate=rotate)
            scores[(scale, rotate)] = round(0.5 * one.score + 0.5 * two.score, 4)
        best = max(scores, key=lambda k: scores[k])  # dicts keep order: a tie keeps the earlier candidate
        assert found.rows[row] == base.replace(scale=best[0], rotate=best[1])
    assert json.loads(out.read_text())["rows"]["1"].get("scale", 0.0) in (0.0, 0.1, 0.3)
    with pytest.raises(ValueError, match="transforms must be"):
        calibrate.search(model, tmp_path / "x.json", classes=("red",), trials=1, steps=STEPS, top=0,
                         judge_with=judge, transforms=((0.1, 90.0),))


def test_the_robust_space_draws_the_same_magnitudes_and_adds_the_views_jitter_scale_and_rotation():
    from deepvis import search_space

    drawn = [search_space.trial_settings(row, t, 0, (4, 6), robust=True) for row in (1, 2, 3, 4) for t in range(12)]
    plain = [search_space.trial_settings(row, t, 0, (4, 6)) for row in (1, 2, 3, 4) for t in range(12)]
    for robust, one in zip(drawn, plain):
        assert robust.replace(jitter=0, scale=0.0, rotate=0.0) == one  # the plain space's draws, unchanged
        assert robust.jitter in (0, 4, 8, 16) and robust.scale in (0.0, 0.1, 0.2) and robust.rotate in (0.0, 10.0, 20.0)
    assert len({(s.jitter, s.scale, s.rotate) for s in drawn}) > 6  # the lists are drawn, not fixed


def test_a_second_round_searches_some_rows_again_and_keeps_the_start_files_row_unless_it_finds_better(
        model, judge, tmp_path):  # noqa: F811
    first = finish(calibrate.search(model, tmp_path / "first.json", classes=("red", "blue"), trials=2, steps=STEPS,
                                    validate=("green", "dark"), top=1, judge_with=judge, command="first"))
    second = finish(calibrate.search(model, tmp_path / "second.json", classes=("red", "blue"), trials=3, steps=STEPS,
                                     validate=("green", "dark"), top=1, judge_with=judge, rows=(2, 4), robust=True,
                                     start=first, command="second"))
    lines = logged(tmp_path / "second.json.trials.jsonl")
    assert {t.row for t in lines} == {2, 4} and len([t for t in lines if t.stage == "search"]) == 6
    for row in (1, 3):
        assert second.rows[row] == first.rows[row] and second.scores[row] == first.scores[row]
    for row in (2, 4):
        validated = {t.index: t.score for t in lines if t.row == row and t.stage == "validate"}
        found = max(round(0.5 * t.score + 0.5 * validated[t.index], 4)
                    for t in lines if t.row == row and t.stage == "search" and t.index in validated)
        if found > first.scores[row]:
            assert second.scores[row] == found and second.rows[row] != first.rows[row]
        else:
            assert second.rows[row] == first.rows[row] and second.scores[row] == first.scores[row]
    assert second.command == "first; then second" and second.seconds > first.seconds
    with pytest.raises(ValueError, match="needs a start file"):
        calibrate.search(model, tmp_path / "x.json", classes=("red",), trials=1, steps=STEPS, top=0,
                         judge_with=judge, rows=(2,))
    with pytest.raises(ValueError, match="another model, judge or classes"):
        calibrate.search(model, tmp_path / "y.json", classes=("green",), trials=1, steps=STEPS, top=1,
                         validate=("green", "dark"), judge_with=judge, rows=(2,), start=first)
