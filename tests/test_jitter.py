"""Jitter: the view rolled by a random offset each step, on a hand-built net whose gradient is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from deepvis import optimize as opt
from deepvis.cli import main as cli_main
from deepvis.models import LoadedModel, Normalization, wrap_model
from deepvis.settings import Settings
from deepvis.targets import Target

WEIGHTS = np.array([1.0, 2.0, 3.0])
NORM = Normalization((0.5, 0.4, 0.3), (0.25, 0.5, 1.0))
SIZE = 12
NO_REG = dict(decay=0.0, blur_radius=0.0, blur_every=0, norm_pct=0.0, contrib_pct=0.0)
MEAN = np.array(NORM.mean255).reshape(3, 1, 1)
STD = np.array(NORM.std255).reshape(3, 1, 1)


@pytest.fixture(scope="module")
def tiny() -> LoadedModel:
    conv = nn.Conv2d(3, 1, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(WEIGHTS, dtype=torch.float32).view(1, 3, 1, 1))
    return wrap_model(nn.Sequential(conv).eval().requires_grad_(False), "tiny_jitter", title="1x1 conv",
                      input_size=SIZE, normalization=NORM)


def expected(jitter: int, steps: int, lr: float, seed: int = 0) -> tuple[np.ndarray, list[float], set]:
    """The run recomputed here: the shifts replayed from the documented stream, the objective of the centre
    neuron of the rolled view, the step landing on the pixel that neuron saw."""
    x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))[0].double().numpy() * 10
    stream = torch.Generator().manual_seed(seed)
    objectives, moved = [], set()
    c = SIZE // 2
    for it in range(steps):
        x = np.clip(x + MEAN, 0, 255) - MEAN
        u = torch.rand(2, generator=stream).tolist()
        dy, dx = (int(v * (2 * jitter + 1)) - jitter for v in u)
        y0, x0 = (c - dy) % SIZE, (c - dx) % SIZE  # roll: the view's (c, c) is the image's (c - dy, c - dx)
        objectives.append(float((WEIGHTS * x[:, y0, x0] / STD[:, 0, 0]).sum()))
        if it < steps - 1:
            x[:, y0, x0] += lr * WEIGHTS
            moved.add((y0, x0))
    return x, objectives, moved


def test_each_step_sees_the_view_rolled_by_a_seeded_offset_and_moves_the_pixel_it_saw(tiny):
    x, objectives, moved = expected(jitter=2, steps=8, lr=4.0)
    row = opt.run(tiny, Target("0", 0), Settings(**NO_REG, steps=8, lr=4.0, jitter=2)).rows[0]
    np.testing.assert_allclose(row.objectives, objectives, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(row.last_x.transpose(2, 0, 1), x, atol=1e-3)
    assert len(moved) > 2 and all(abs(p - SIZE // 2) <= 2 for pos in moved for p in pos)

    still = opt.run(tiny, Target("0", 0), Settings(**NO_REG, steps=8, lr=4.0)).rows[0]  # jitter 0: one pixel
    changed = np.argwhere(np.abs(still.last_x - expected(0, 1, 0.0)[0].transpose(1, 2, 0)).max(axis=2) > 1e-3)
    assert changed.tolist() == [[SIZE // 2, SIZE // 2]]


def test_rows_of_other_jitters_in_one_batch_each_equal_their_single_run(tiny):
    settings = [Settings(**NO_REG, steps=6, lr=3.0, jitter=j) for j in (3, 0, 1)]
    batch = opt.run(tiny, [Target("0", 0)] * 3, settings).rows
    for row, one in zip(batch, settings):
        single = opt.run(tiny, Target("0", 0), one).rows[0]
        np.testing.assert_allclose(row.last_x, single.last_x, atol=1e-4)
        np.testing.assert_allclose(row.last_x.transpose(2, 0, 1), expected(one.jitter, 6, 3.0)[0], atol=1e-3)


def test_jitter_is_a_theta_setting_with_a_cli_flag_a_label_and_a_range(tmp_path, capsys):
    assert "jitter 8" in Settings(jitter=8).label and "jitter" not in Settings().label
    with pytest.raises(ValueError, match="jitter must be in"):
        Settings(jitter=-1)
    code = cli_main(["optimize", "--layer", "_fc", "--unit", "0", "--steps", "2", "--size", "32", "--jitter", "4",
                     "--out", str(tmp_path / "o.png")])
    assert code == 0 and '"jitter": 4' in capsys.readouterr().out
