"""Redirected rectifier gradients: the rule on hand-made numbers, a hand-built net whose unit is off on the noise
(moved by exactly the hand-computed redirected step, while a live row in the same batch moves as it always did),
and Lite0 units that never turned on from seed 0 before."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from deepvis import optimize as opt
from deepvis import presets
from deepvis.activations import capture
from deepvis.hooks import hook_count
from deepvis.models import Normalization, wrap_model
from deepvis.redirect import _Redirected, redirected
from deepvis.settings import Settings
from deepvis.targets import Target

NORM = Normalization((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # x / 127.5 on the network's input
SIZE = 8
NO_REG = dict(decay=0.0, blur_radius=0.0, blur_every=0, norm_pct=0.0, contrib_pct=0.0)


def test_the_rule_on_hand_made_numbers():
    # Element 0: one input is on, so its ordinary gradient stands.  Element 1: all off or over the cap, so the
    # redirected gradient: through where it pushes back towards (0, 6), 0 where it pushes further out.
    x = torch.tensor([[-1.0, 0.5, 7.0], [-1.0, -2.0, 7.0]], requires_grad=True)
    g = torch.tensor([[1.0, -1.0, 1.0], [1.0, -1.0, -1.0]])
    y = _Redirected.apply(x, 6.0)
    assert y.tolist() == [[0.0, 0.5, 6.0], [0.0, 0.0, 6.0]]
    (grad,) = torch.autograd.grad(y, x, g)
    assert grad.tolist() == [[0.0, -1.0, 0.0], [1.0, 0.0, -1.0]]
    z = _Redirected.apply(x, None)  # a plain ReLU: no cap, so 7 is on and element 1 keeps its ordinary gradient
    (grad,) = torch.autograd.grad(z, x, g)
    assert grad.tolist() == [[0.0, -1.0, 1.0], [0.0, 0.0, -1.0]]


@pytest.fixture(scope="module")
def gated():
    """Channel 0 of ``0`` is ``x_r + x_g + x_b`` (network input) minus 20: off on the noise.  Channel 1 is the
    same sum, on.  ``2`` copies each channel: its unit 0 gets no ordinary gradient, its unit 1 does."""
    first = nn.Conv2d(3, 2, 1)
    second = nn.Conv2d(2, 2, 1, bias=False)
    with torch.no_grad():
        first.weight.fill_(1.0)
        first.bias.copy_(torch.tensor([-20.0, 20.0]))
        second.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
    module = nn.Sequential(first, nn.ReLU(), second).eval().requires_grad_(False)
    return wrap_model(module, "gated", title="gated", input_size=SIZE, normalization=NORM)


def test_a_unit_off_on_the_noise_moves_by_the_redirected_step_and_a_live_row_as_before(gated):
    settings = Settings(**NO_REG, steps=2, lr=10.0)
    both = opt.run(gated, [Target("2", 0), Target("2", 1)], settings)
    alone = opt.run(gated, Target("2", 1), settings)
    np.testing.assert_array_equal(both.rows[1].last_x, alone.rows[0].last_x)  # the live row: untouched
    dead = both.rows[0]
    assert dead.objectives[0] == 0.0
    # The redirected gradient w.r.t. the network's input is 1 for each colour at the centre (the ReLU passes
    # it: it pushes the input up); the step adds lr * 1 to each colour there, and nothing elsewhere.
    start = opt.initial_image(SIZE, 0)[0].permute(1, 2, 0).numpy()
    start = np.clip(start + 127.5, 0, 255) - 127.5
    moved = dead.last_x - start
    centre = SIZE // 2
    np.testing.assert_allclose(moved[centre, centre], [10.0, 10.0, 10.0], atol=1e-4)
    moved[centre, centre] = 0
    assert np.abs(moved).max() < 1e-4
    # Without the redirection nothing would move it: its ordinary gradient is exactly zero.
    image = torch.tensor(start).permute(2, 0, 1)[None].requires_grad_(True)
    out = capture(gated.module, image / 127.5, "2", keep_graph=True, folded=True)["2"][0, 0, centre, centre]
    (plain,) = torch.autograd.grad(out, image)
    assert plain.abs().max() == 0
    with redirected():
        out = capture(gated.module, image / 127.5, "2", keep_graph=True, folded=True)["2"][0, 0, centre, centre]
    (redirected_grad,) = torch.autograd.grad(out, image)
    assert redirected_grad[0, :, centre, centre].tolist() == pytest.approx([1 / 127.5] * 3)
    # The shared model is as it was: no hook, no gradient, eval mode, its own ReLU.
    assert hook_count(gated.module) == 0 and not gated.module.training
    assert type(gated.module[1]) is nn.ReLU and all(p.grad is None for p in gated.module.parameters())


class _FunctionalGated(nn.Module):
    """``gated`` with functional rectifiers: ``F.relu(..., inplace=True)`` then ``x.relu()``, as GoogLeNet's
    ``BasicConv2d`` and many hand-written networks do."""

    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = nn.Conv2d(3, 2, 1), nn.Conv2d(2, 2, 1, bias=False)
        with torch.no_grad():
            self.first.weight.fill_(1.0)
            self.first.bias.copy_(torch.tensor([-20.0, 20.0]))
            self.second.weight.copy_(torch.eye(2).view(2, 2, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(nn.functional.relu(self.first(x), inplace=True).relu())


def test_functional_rectifiers_are_redirected_too_and_plain_otherwise():
    model = wrap_model(_FunctionalGated().eval().requires_grad_(False), "fgated", title="functional gated",
                       input_size=SIZE, normalization=NORM)
    settings = Settings(**NO_REG, steps=2, lr=10.0)
    dead = opt.run(model, Target("second", 0), settings).rows[0]
    start = np.clip(opt.initial_image(SIZE, 0)[0].permute(1, 2, 0).numpy() + 127.5, 0, 255) - 127.5
    moved = dead.last_x - start
    np.testing.assert_allclose(moved[SIZE // 2, SIZE // 2], [10.0, 10.0, 10.0], atol=1e-4)  # as the module net
    moved[SIZE // 2, SIZE // 2] = 0
    assert np.abs(moved).max() < 1e-4
    # Outside the redirection the graph's rectifiers are the network's own: the same values, and no gradient.
    image = torch.tensor(start).permute(2, 0, 1)[None].requires_grad_(True)
    out = capture(model.module, image / 127.5, "second", keep_graph=True, folded=True)["second"]
    torch.testing.assert_close(out, model.module(image / 127.5), rtol=0, atol=0)
    (plain,) = torch.autograd.grad(out[0, 0, SIZE // 2, SIZE // 2], image)
    assert plain.abs().max() == 0
    assert hook_count(model.module) == 0 and all(p.grad is None for p in model.module.parameters())


def test_lite0_units_that_stayed_off_from_seed_0_now_turn_on(lite0):
    """Units 2 and 5 of _blocks.9._swish_1 gave objective 0 at every one of 500 iterations of row 3 from seed 0
    (what feeds them is off on the noise); unit 11's weights are ~0, so nothing can turn it on."""
    layer = "_blocks.9._swish_1"
    settings = presets.resolve(lite0, "3").replace(steps=12)
    record = opt.run(lite0, [Target(layer, u) for u in (2, 5, 11)], settings, size=96)
    on, still_on, dead = record.rows
    assert on.objectives[0] == 0 and on.best_objective > 0.5
    assert still_on.objectives[0] == 0 and still_on.best_objective > 0.5
    assert dead.best_objective == 0


def test_the_parametrized_engine_redirects_a_stuck_row_and_leaves_a_live_one_as_it_was(gated):
    """Fourier rows: the unit off on every view gets the redirected gradient (its image changes), while the live
    row of the same batch equals its run alone, bit for bit."""
    settings = Settings(param="fourier", adam_lr=0.05, steps=3)
    both = opt.run(gated, [Target("2", 0), Target("2", 1)], settings)
    alone = opt.run(gated, Target("2", 1), settings)
    np.testing.assert_array_equal(both.rows[1].last_x, alone.rows[0].last_x)
    dead = both.rows[0]
    assert dead.best_objective == 0.0  # 3 colours in [-1, 1] cannot pass 20: it stays off...
    start = opt.run(gated, Target("2", 0), settings.replace(steps=1)).rows[0].last_x  # one step only evaluates
    assert np.abs(dead.last_x - start).max() > 1.0  # ...but it moved


def test_lite0_units_off_on_the_noise_turn_on_under_the_fourier_preset(lite0):
    layer = "_blocks.9._swish_1"
    settings = presets.resolve(lite0, "fourier").replace(steps=12)
    record = opt.run(lite0, [Target(layer, u) for u in (2, 5)], settings, size=96)
    for row in record.rows:
        assert row.objectives[0] == 0 and row.best_objective > 0.5, row.objectives
