"""The calibration's objective (deepvis.eot): a verdict must hold when the judge's view changes.

A hand-built judge of 16 classes has one class that fires on a pixel-aligned checkerboard (a
pattern only an exact view keeps: a shift by one pixel flips its sign, a resize averages it
away) and one that fires on red (which a shifted, scaled or rotated view keeps); the other 14
classes have fixed logits between 0 and 1.3.  Seen once, as it is, both images rank first.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import deepvis
from deepvis import calibrate, eot, quality
from deepvis.models import LoadedModel, Normalization

SIZE = 32
NORM = Normalization((0.5,) * 3, (0.25,) * 3)
NAMES = tuple(f"class{k}" for k in range(16))


class HandJudge(nn.Module):
    """logit 0: half the mean of a stride-2 2x2 checker filter; logit 1: 5 x mean(R - G); 2-15: constants."""

    def __init__(self) -> None:
        super().__init__()
        self.checker = nn.Conv2d(3, 1, 2, stride=2, bias=False)
        self.checker.weight.data[:] = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
        self.register_buffer("background", torch.linspace(0, 1.3, 14))
        self.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        checker = 0.5 * self.checker(x).mean(dim=(1, 2, 3))
        red = 5 * (x[:, 0] - x[:, 1]).mean(dim=(1, 2))
        return torch.cat([checker[:, None], red[:, None], self.background.expand(x.shape[0], -1)], dim=1)


def wrap(module: nn.Module, name: str) -> LoadedModel:
    return deepvis.wrap(module, input=f"3x{SIZE}x{SIZE}", mean=NORM.mean, std=NORM.std, classes=NAMES, name=name)


@pytest.fixture(scope="module")
def judge() -> LoadedModel:
    return wrap(HandJudge(), "hand judge")


def images() -> np.ndarray:
    """A ±100 checkerboard (class 0) and a red disc on the mean colour (class 1), in pixel space."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    checker = np.where((yy + xx) % 2 == 0, 100.0, -100.0)[..., None].repeat(3, axis=2)
    disc = ((yy - SIZE / 2) ** 2 + (xx - SIZE / 2) ** 2) < 10 ** 2
    red = np.zeros((SIZE, SIZE, 3))
    red[disc] = (100.0, -100.0, -100.0)
    return np.stack([checker, red]).astype(np.float32)


def test_a_transformation_fragile_image_scores_below_a_robust_one_although_both_rank_first_as_they_are(judge):
    pixels = images()
    # One view, as it is: the single-view judge (the reporting judge's rule) ranks both first.
    assert [rank for rank, _ in quality.judge(judge, pixels, [0, 1], judge_with=judge)] == [1, 1]
    fragile, robust = eot.holding(judge, judge, pixels, [0, 1], [1.0, 1.0])
    assert robust.hits == 1.0 and robust.soft > 0.99
    assert fragile.hits < 0.35 and fragile.soft < robust.soft
    assert fragile.score < robust.score - 0.2


def test_views_are_seeded_the_same_for_every_image_and_stay_in_their_documented_ranges():
    views = eot.draw_views(240, 64, seed=3)
    assert views == eot.draw_views(240, 64, seed=3) != eot.draw_views(240, 64, seed=4)
    assert all(abs(v.dx) <= eot.JITTER and abs(v.dy) <= eot.JITTER and abs(v.angle) <= eot.ROTATION for v in views)
    assert all(eot.SCALE[0] <= v.scale <= eot.SCALE[1] for v in views)
    assert {v.side for v in views} <= set(range(round(240 * eot.RESIZE[0]), round(240 * eot.RESIZE[1]) + 1))
    assert len({v.side for v in views}) > 10  # the judge's own input size varies too


def test_the_identity_view_gives_the_single_view_rank(judge):
    """With no change of view, the rank is the plain judge's: the view code adds nothing of its own."""
    pixels = images()
    identity = eot.View(0.0, 0.0, 1.0, 0.0, SIZE)
    ranks = eot.view_ranks(judge, judge, pixels, [0, 2], [identity])
    assert ranks[:, 0].tolist() == [rank for rank, _ in quality.judge(judge, pixels, [0, 2], judge_with=judge)]


def test_holding_score_follows_the_documented_weights():
    h = eot.Holding(0.5, 0.8, 1.7)
    assert h.score == pytest.approx(0.4 * 0.5 + 0.4 * 0.8 + 0.2 * 1.0)
    assert eot.Holding(0.0, 0.1, None).score == pytest.approx(0.04)


def test_calibration_refuses_the_reporting_judge(tmp_path):
    from deepvis.models import load_model

    lite0 = load_model(device="cpu")
    reporting = quality.judge_model(quality.judge_name(lite0), "cpu")
    with pytest.raises(ValueError, match="reporting judge"):
        calibrate.search(lite0, tmp_path / "p.json", trials=1, judge_with=reporting)
