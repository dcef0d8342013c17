"""Raw weights of any convolution: the filter behind a layer's channel, on hand-built nets and Lite0."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import deepvis
from deepvis.models import LoadedModel
from deepvis.weights import conv_weights, filter_tiles, kernel_norms

SIZE = 16


def tiny(module: nn.Module) -> LoadedModel:
    module = module.eval().requires_grad_(False)
    return deepvis.wrap(module, input=f"3x{SIZE}x{SIZE}", mean=(0.5,) * 3, std=(0.25,) * 3, name="tiny")


class Functional(nn.Module):
    """A functional conv2d on a weight attribute (as Lite0's same-padding convolutions are traced)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2) - 11.5)
        self.norm = nn.BatchNorm2d(2)

    def forward(self, x):
        return torch.relu(self.norm(nn.functional.conv2d(x, self.weight)))


def test_a_layer_finds_the_convolution_above_it_and_its_filter():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3, groups=4), nn.ReLU())
    loaded = tiny(net)
    names = [info.name for info in loaded.layers]
    first = conv_weights(loaded, names[2])  # the first ReLU: through BN to conv 0
    assert first.conv == "0" and torch.equal(first.weight, net[0].weight) and not first.depthwise
    depthwise = conv_weights(loaded, names[-1])
    assert depthwise.conv == "3" and depthwise.depthwise and depthwise.weight.shape == (4, 1, 3, 3)
    # channel 1's kernels, scaled by the filter's largest |w| about mid-grey
    tiles, layout = filter_tiles(first, 1)
    kernels = net[0].weight[1].numpy()
    bound = np.abs(kernels).max()
    y, x = layout.origin(2)
    factor = layout.tile // 3
    np.testing.assert_array_equal(tiles[y:y + 3 * factor:factor, x:x + 3 * factor:factor],
                                  np.clip(kernels[2] / bound * 127.5 + 128.0, 0, 255).astype(np.uint8))
    np.testing.assert_allclose(kernel_norms(first)[1], np.sqrt((kernels ** 2).sum(axis=(1, 2))), rtol=1e-6)
    with pytest.raises(ValueError, match="filters 0 to 3"):
        filter_tiles(first, 4)


def test_a_functional_convolution_counts_and_an_addition_has_none():
    loaded = tiny(Functional())
    found = conv_weights(loaded, loaded.layers[-1].name)
    assert found is not None and torch.equal(found.weight, loaded.module.weight) and found.groups == 1
    np.testing.assert_allclose(kernel_norms(found)[0, 0], np.linalg.norm(np.arange(4) - 11.5), rtol=1e-6)

    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1)

        def forward(self, x):
            return self.a(x) + self.b(x)

    residual = tiny(Residual())
    assert conv_weights(residual, residual.layers[-1].name) is None


def test_lite0_layers_map_to_their_convolutions(lite0):
    depthwise = conv_weights(lite0, "_blocks.9._swish_1")
    assert depthwise.conv == "_blocks.9._depthwise_conv.conv2d" and depthwise.weight.shape == (672, 1, 5, 5)
    assert depthwise.depthwise and depthwise.groups == 672
    project = conv_weights(lite0, "_blocks.9._bn2")
    assert project.weight.shape == (112, 672, 1, 1) and not project.depthwise
    torch.testing.assert_close(project.weight, lite0.module._blocks[9]._project_conv.weight.detach())
    assert conv_weights(lite0, "_fc") is None
