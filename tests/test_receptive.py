"""Receptive fields (deepvis.receptive): hand-computed on stacked uniform convolutions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import deepvis
from deepvis import receptive
from deepvis.models import Normalization, wrap_model

NORM = Normalization((0.5,) * 3, (0.25,) * 3)


def _ones_conv(channels: int, stride: int) -> nn.Conv2d:
    conv = nn.Conv2d(channels, 2, 3, stride=stride, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    return conv


def test_receptive_field_of_stacked_uniform_convs_is_the_theoretical_one():
    # conv3x3/1 then conv3x3/2: every output position sees 5 x 5 input pixels, at stride 2;
    # uniform kernels spread the gradient mass as 1,2,3,2,1, whose middle 90 % is all five.
    module = nn.Sequential(_ones_conv(3, 1), nn.ReLU(), _ones_conv(2, 2)).eval().requires_grad_(False)
    loaded = deepvis.wrap(module, input="3x16x16", mean=NORM.mean, std=NORM.std, name="ones")
    (box, shape) = receptive.centre_field(loaded, "2")
    assert shape == (8, 8) and box == (6, 6, 11, 11)  # centre position 4 -> input pixel 8, +-2
    assert receptive.field(loaded, "2", 1, 6) == (0, 10, 5, 15)  # shifted by stride 2 per position
    assert receptive.field(loaded, "2", 0, 0) == (0, 0, 3, 3)  # clipped at the edge
    assert receptive.field(loaded, "2", 0, 0, clip=False) == (-2, -2, 3, 3)
    view = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)
    part = receptive.crop(view, (-2, -2, 3, 3))
    assert part.shape == (5, 5, 3) and (part[:2] == receptive.PAD).all() and (part[2:, 2:] == view[:3, :3]).all()
    with pytest.raises(ValueError, match="no position"):
        receptive.field(loaded, "2", 8, 0)


def test_a_one_by_one_convolution_sees_one_pixel_and_a_single_three_by_three_sees_nine():
    one = nn.Conv2d(3, 2, 1, bias=False)
    with torch.no_grad():
        one.weight.fill_(1.0)
    # 12 px is below the smallest input deepvis.wrap accepts (16): the low-level wrap_model builds these.
    loaded = wrap_model(nn.Sequential(one).eval().requires_grad_(False), "one", input_size=12, normalization=NORM)
    assert receptive.field(loaded, "0", 3, 7) == (3, 7, 4, 8)
    three = wrap_model(nn.Sequential(_ones_conv(3, 1)).eval().requires_grad_(False), "three", input_size=12,
                       normalization=NORM)
    assert receptive.field(three, "0", 5, 5) == (4, 4, 7, 7)
