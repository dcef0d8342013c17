"""Which graph nodes are offered as layers (deepvis.layers), how they are grouped and described.

The hand-built network of test_graph: stem conv 1x1 -> ReLU6 -> block (conv 1x1, ReLU) -> mean -> linear.
"""

from __future__ import annotations

import torch
from torch import nn

from deepvis.layers import groups, list_layers, teaching_layer
from tests.test_graph import Net


def test_offered_layers_their_shapes_groups_and_descriptions():
    layers = list_layers(Net(), 8)
    assert [(i.name, i.shape, i.group) for i in layers] == [
        ("stem", (2, 8, 8), "stem"), ("act", (2, 8, 8), "stem"), ("block.conv", (2, 8, 8), "block"),
        ("block.relu", (2, 8, 8), "block"), ("mean", (2,), "head"), ("head", (3,), "head")]
    by_name = {i.name: i for i in layers}
    assert by_name["act"].description == "ReLU6 after 1×1 conv · 2 × 8 × 8" and by_name["act"].rectified
    assert by_name["block.relu"].short_name == "relu" and by_name["block.relu"].after == "1×1 conv"
    assert by_name["mean"].rectified  # the mean of a rectified map stays >= 0
    assert not by_name["stem"].rectified and by_name["head"].op == "fully connected"
    assert list(groups(layers)) == ["stem", "block", "head"]


def test_the_teaching_layer_is_the_deepest_rectified_map():
    assert teaching_layer(list_layers(Net(), 8), 8).name == "block.relu"


def test_plumbing_is_not_offered_and_shapes_follow_the_input_size():
    module = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.Dropout(), nn.ReLU(), nn.Flatten(),
                           nn.Identity()).eval().requires_grad_(False)
    layers = list_layers(module, 10)
    assert [(i.name, i.shape) for i in layers] == [("0", (4, 5, 5)), ("2", (4, 5, 5))]
    assert [i.name for i in list_layers(module, 16)] == ["0", "2"] and list_layers(module, 16)[0].shape == (4, 8, 8)
    assert torch.is_grad_enabled()  # listing layers leaves autograd as it was
