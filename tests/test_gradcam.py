"""Grad-CAM, Grad-CAM++ and Guided Grad-CAM: hand-computed maps on a tiny network, Captum's LayerGradCam and
GuidedGradCam on the embedded model and on a user's networks, and the shared-model rules."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from deepvis.gradcam import GradCamError, gradcam, layer_maps
from deepvis.hooks import hook_count
from deepvis.images import model_view, to_batch

X = torch.tensor([[1.0, -2.0, 0.0], [3.0, 0.0, -1.0], [0.0, 2.0, 0.0]]).view(1, 1, 3, 3)


class Tiny(nn.Module):
    """A0 = ReLU(x), A1 = ReLU(-x) (a 1x1 convolution with weights 1 and -1); logits = W · mean(A)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1, bias=False)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
            self.fc.weight.copy_(torch.tensor([[2.0, 1.0], [-1.0, 1.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu(self.conv(x)).mean((2, 3)))


def test_gradcam_of_a_tiny_network_by_hand():
    a0, a1 = X.clamp(min=0)[0, 0], (-X).clamp(min=0)[0, 0]
    # Class 0: g = (2, 1) / 9 everywhere, so the map is ReLU((2 A0 + A1) / 9).
    maps, scores = layer_maps(Tiny().eval(), X, "relu", "fc", 0)
    assert torch.allclose(maps[0, 0], (2 * a0 + a1) / 9)
    assert scores.item() == pytest.approx((2 * a0.sum() + a1.sum()).item() / 9)
    # Class 1: ReLU((-A0 + A1) / 9): the positive pixels vanish.
    maps, _ = layer_maps(Tiny().eval(), X, "relu", "fc", 1)
    assert torch.allclose(maps[0, 0], torch.relu(-a0 + a1) / 9)
    assert maps[0, 0, 1, 0] == 0 and maps[0, 0, 0, 1] > 0
    # Grad-CAM++, class 0: alpha_k = 1 / (2 + S_k g_k) with S = (6, 3): alpha = (3/10, 3/7);
    # w_k = 9 alpha_k g_k = (0.6, 3/7).
    maps, _ = layer_maps(Tiny().eval(), X, "relu", "fc", 0, "gradcam++")
    assert torch.allclose(maps[0, 0], 0.6 * a0 + 3 / 7 * a1)


def test_bad_layers_and_units_are_one_line_errors(lite0, photos):
    with pytest.raises(GradCamError, match="needs a layer with spatial maps; .* is a vector of 1000 units"):
        gradcam(lite0, photos["chelsea"], lite0.logits_layer)
    with pytest.raises(GradCamError, match="does not exist"):
        layer_maps(lite0.module, torch.zeros(1, 3, 224, 224), "_conv_head.conv2d", lite0.logits_layer, 1000)
    with pytest.raises(GradCamError, match="method must be one of"):
        gradcam(lite0, photos["chelsea"], "_conv_head.conv2d", method="cam")
    with pytest.raises(GradCamError, match="does not depend"):
        gradcam(lite0, photos["chelsea"], "_blocks.9._project_conv.conv2d", 3, score_layer="_blocks.5._swish_1")


def _captum_gradcam(module: nn.Module, layer: str, x: torch.Tensor, target: int) -> torch.Tensor:
    from captum.attr import LayerGradCam

    reference = copy.deepcopy(module)  # Captum hooks its model: keep the shared one to ourselves
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LayerGradCam(reference, reference.get_submodule(layer)).attribute(
            x.clone(), target=target, relu_attributions=True).detach()


@pytest.mark.parametrize("layer", ["_conv_head.conv2d", "_blocks.9._project_conv.conv2d"])
def test_equals_captum_layer_gradcam_on_the_embedded_model(lite0, photos, layer):
    module = layer.removesuffix(".conv2d")  # the padding module whose output is this functional convolution
    view = model_view(Image.fromarray(photos["chelsea"]), lite0.spec)
    cam = gradcam(lite0, view, layer)  # the top class
    inputs = to_batch(view, lite0.spec.normalization, lite0.device)
    with torch.no_grad():
        assert cam.unit == int(lite0.module(inputs).argmax(1)[0]) and cam.label.startswith(f"class {cam.unit} (")
    theirs = _captum_gradcam(lite0.module, module, inputs, cam.unit)[0, 0].numpy()
    assert cam.map.shape == theirs.shape and theirs.max() > 0
    assert np.abs(cam.map - theirs).max() <= 1e-5 * theirs.max()
    assert cam.heat.shape == (224, 224) and cam.heat.max() == pytest.approx(1.0) and cam.heat.min() >= 0
    # Another class gives another map; the shared model is as it was.
    other = gradcam(lite0, view, layer, "tiger cat" if cam.unit != 282 else "tabby")
    assert np.abs(other.map - cam.map).max() > 1e-3
    assert hook_count(lite0.module) == 0 and not lite0.module.training
    assert all(p.grad is None and not p.requires_grad for p in lite0.module.parameters())


def test_equals_captum_on_a_users_networks_and_guided_gradcam(gray_net, color_net):
    from captum.attr import GuidedGradCam

    gray = gray_net["loaded"]
    digit = (np.random.default_rng(0).random((28, 28, 1)) * 255).astype(np.uint8)
    cam = gradcam(gray, digit, "conv2")  # its top class
    inputs = to_batch(digit, gray.spec.normalization, gray.device)
    theirs = _captum_gradcam(gray.module, "conv2", inputs, cam.unit)[0, 0].numpy()
    assert theirs.max() > 0 and np.abs(cam.map - theirs).max() <= 1e-5 * theirs.max()
    # Guided Grad-CAM on a network with ReLU modules (Captum's guided backprop hooks nn.ReLU): Captum's with
    # bilinear stretching, up to the scale of the map (ours is scaled to a peak of 1).
    colour = color_net["loaded"]
    photo = (np.random.default_rng(1).random((32, 32, 3)) * 255).astype(np.uint8)
    ours = gradcam(colour, photo, "features.3", method="guided")
    reference = copy.deepcopy(colour.module)
    x = to_batch(photo, colour.spec.normalization, colour.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = GuidedGradCam(reference, reference.features[3]).attribute(
            x.clone(), target=ours.unit, interpolate_mode="bilinear")[0].detach().numpy()
    assert ours.guided.shape == theirs.shape == (3, 32, 32) and np.abs(theirs).max() > 0
    scale = np.abs(theirs).max() / np.abs(ours.guided).max()
    assert np.abs(ours.guided * scale - theirs).max() <= 1e-4 * np.abs(theirs).max()
    assert hook_count(colour.module) == 0
