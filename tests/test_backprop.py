"""Backward images of one unit: saliency, deconvnet, guided backprop, display filters, CLI."""

from __future__ import annotations

import copy
import io
import threading
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import nn

from deepvis.backprop import (MODES, BackpropError, Unit, UnsupportedModeError, backprop, deconvnet,
                              guided_backprop, mode_support, saliency, supported_modes)
from deepvis.hooks import hook_count
from deepvis.images import decode_image, model_view, preprocess, sample_bytes, to_batch
from deepvis.models import REGISTRY, build_module
from deepvis.render import BACKPROP_FILTERS, backprop_image, backprop_overlay, gaussian_blur

from tests.helpers import Untraceable

# ---------------------------------------------------------------------------------------------------------
# A hand-weighted 1-channel net on a 1 x 5 strip:  conv [1, -1]  ->  rectifier  ->  conv [2, 1, -1, 3].
# For x = [12, 5, 3, 0, 1] the pre-activation is a = x[i] - x[i+1] = [7, 2, 3, -1], and the gradient
# arriving at the rectifier from the output unit is g = [2, 1, -1, 3].  Through conv1 the input
# gradient is [d0, d1 - d0, d2 - d1, d3 - d2, -d3] for a rectifier gradient d:
#   ReLU  (mask a > 0     = [1, 1, 1, 0]):
#     saliency d = g * mask           = [2, 1, -1, 0] -> [2, -1, -2, 1, 0]
#     deconv   d = max(g, 0)          = [2, 1, 0, 3]  -> [2, -1, -1, 3, -3]
#     guided   d = max(g, 0) * mask   = [2, 1, 0, 0]  -> [2, -1, -1, 0, 0]
#   ReLU6 (mask 0 < a < 6 = [0, 1, 1, 0]):
#     saliency d = [0, 1, -1, 0] -> [0, 1, -2, 1, 0]
#     deconv   d = [2, 1, 0, 3]  -> [2, -1, -1, 3, -3]
#     guided   d = [0, 1, 0, 0]  -> [0, 1, -1, 0, 0]
# The output unit is z = 2 r0 + r1 - r2 + 3 r3: 13 with ReLU (r = [7, 2, 3, 0]), 11 with ReLU6 (r0 = 6).
# ---------------------------------------------------------------------------------------------------------
STRIP = torch.tensor([12.0, 5.0, 3.0, 0.0, 1.0]).view(1, 1, 1, 5)
EXPECTED = {
    nn.ReLU: {"saliency": [2, -1, -2, 1, 0], "deconv": [2, -1, -1, 3, -3], "guided": [2, -1, -1, 0, 0]},
    nn.ReLU6: {"saliency": [0, 1, -2, 1, 0], "deconv": [2, -1, -1, 3, -3], "guided": [0, 1, -1, 0, 0]},
}
UNIT_VALUE = {nn.ReLU: 13.0, nn.ReLU6: 11.0}


def strip_net(activation: type[nn.Module], inplace: bool) -> nn.Sequential:
    net = nn.Sequential(nn.Conv2d(1, 1, (1, 2), bias=False), activation(inplace=inplace),
                        nn.Conv2d(1, 1, (1, 4), bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([1.0, -1.0]).view(1, 1, 1, 2))
        net[2].weight.copy_(torch.tensor([2.0, 1.0, -1.0, 3.0]).view(1, 1, 1, 4))
    return net.eval().requires_grad_(False)


def as_row(gradient: torch.Tensor) -> list[float]:
    return gradient.view(-1).tolist()


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("activation", [nn.ReLU, nn.ReLU6])
def test_hand_computed_gradients_for_all_modes(activation, inplace):
    net = strip_net(activation, inplace)
    for mode in MODES:
        gradient = backprop(net, STRIP, "2", (0, 0, 0), mode)
        assert gradient.shape == STRIP.shape
        assert as_row(gradient) == EXPECTED[activation][mode], mode
    # The named functions are the same three modes.
    assert as_row(saliency(net, STRIP, "2", (0, 0, 0))) == EXPECTED[activation]["saliency"]
    assert as_row(deconvnet(net, STRIP, "2", (0, 0, 0))) == EXPECTED[activation]["deconv"]
    assert as_row(guided_backprop(net, STRIP, "2", (0, 0, 0))) == EXPECTED[activation]["guided"]
    assert hook_count(net) == 0 and net[1].inplace is inplace


def test_map_seed_weights_the_backward_pass_by_the_units_activation():
    for activation in (nn.ReLU, nn.ReLU6):
        net = strip_net(activation, inplace=True)
        for mode in MODES:
            # A 1 x 1 map: the seed is the unit's value, so the image is value x the one-hot image.
            gradient = backprop(net, STRIP, "2", 0, mode)  # default seed for a channel: "map"
            assert as_row(gradient) == [UNIT_VALUE[activation] * v for v in EXPECTED[activation][mode]]


def test_works_under_no_grad_and_refuses_inference_mode_plainly():
    net = strip_net(nn.ReLU, inplace=True)
    with torch.no_grad():
        assert as_row(guided_backprop(net, STRIP, "2", (0, 0, 0))) == EXPECTED[nn.ReLU]["guided"]
    with torch.inference_mode(), pytest.raises(BackpropError, match="inference_mode"):
        guided_backprop(net, STRIP, "2", (0, 0, 0))
    assert hook_count(net) == 0


def test_point_seed_without_position_uses_each_images_strongest_position():
    net = strip_net(nn.ReLU, inplace=False)
    # Image 0: r = [7, 2, 3, 0] peaks at 0.  Image 1: x = [0, 0, 5, 1, 1], a = [0, -5, 4, 0], r peaks at 2.
    batch = torch.cat([STRIP, torch.tensor([0.0, 0.0, 5.0, 1.0, 1.0]).view(1, 1, 1, 5)])
    gradient = saliency(net, batch, "1", 0, seed="point")  # layer "1" is the ReLU itself
    assert as_row(gradient[0]) == [1, -1, 0, 0, 0]
    assert as_row(gradient[1]) == [0, 0, 1, -1, 0]
    # Explicit position, image by image, and the map seed (r itself; the ReLU masks image 1's a = 0).
    assert as_row(saliency(net, batch, "1", (0, 0, 2))[1]) == [0, 0, 1, -1, 0]
    assert as_row(saliency(net, batch, "1", 0, seed="map")[0]) == [7, -5, 1, -3, 0]
    assert as_row(saliency(net, batch, "1", 0, seed="map")[1]) == [0, 0, 4, -4, 0]


class SharedActivation(nn.Module):
    """conv -> act -> conv -> act -> conv with ONE activation module called twice (like EfficientNet-Lite)."""

    def __init__(self, separate: bool) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(3)
        self.conv1, self.conv2, self.conv3 = (nn.Conv2d(c_in, c_out, 3, padding=1) for c_in, c_out in
                                              ((2, 4), (4, 4), (4, 3)))
        for conv in (self.conv1, self.conv2, self.conv3):
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator))
                conv.bias.copy_(torch.randn(conv.bias.shape, generator=generator))
        self.act = nn.ReLU6(inplace=True)
        self.act2 = nn.ReLU6(inplace=True) if separate else self.act
        self.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.act2(self.conv2(self.act(self.conv1(x)))))


def test_a_module_called_twice_gets_the_rule_on_each_call():
    x = torch.randn(2, 2, 6, 6, generator=torch.Generator().manual_seed(4)) * 3
    shared, separate = SharedActivation(separate=False), SharedActivation(separate=True)
    results = {}
    for mode in MODES:
        got = backprop(shared, x, "conv3", (1, 2, 3), mode)
        assert torch.equal(got, backprop(separate, x, "conv3", (1, 2, 3), mode)), mode
        results[mode] = got
    assert not torch.equal(results["deconv"], results["saliency"])
    assert not torch.equal(results["guided"], results["saliency"])
    assert not torch.equal(results["guided"], results["deconv"])
    assert hook_count(shared) == 0


class FunctionalRelu(nn.Module):
    def __init__(self, activation=F.relu) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3)
        self.activation = activation
        self.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.activation(self.conv1(x)))


class ModuleRelu(FunctionalRelu):
    """FunctionalRelu's twin with an nn.ReLU module (same weights)."""

    def __init__(self, source: FunctionalRelu) -> None:
        super().__init__(nn.ReLU())
        self.load_state_dict(source.state_dict())


@pytest.mark.parametrize("activation", [F.relu, torch.relu_, torch.relu, lambda x: x.relu(),
                                        lambda x: F.relu(x, inplace=True)],
                         ids=["F.relu", "torch.relu_", "torch.relu", "method", "F.relu-inplace"])
def test_functional_rectifiers_get_the_rule_like_modules(activation):
    net = FunctionalRelu(activation)
    twin = ModuleRelu(net)
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert mode_support(net).modes == MODES
    results = {mode: backprop(net, x, "conv2", (0, 1, 1), mode) for mode in MODES}
    for mode in MODES:
        assert torch.equal(results[mode], backprop(twin, x, "conv2", (0, 1, 1), mode)), mode
    assert not torch.equal(results["deconv"], results["saliency"])
    assert not torch.equal(results["guided"], results["deconv"])
    assert hook_count(net) == 0


@pytest.mark.parametrize("activation, word", [(nn.SiLU(), "silu"), (nn.GELU(), "gelu"), (F.silu, "silu")])
def test_non_relu_activations_allow_only_saliency(activation, word):
    net = FunctionalRelu(activation)
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    support = mode_support(net, input_size=8)
    assert support.modes == ("saliency",)
    assert word in support.reason.lower() and "only saliency is available" in support.reason
    assert saliency(net, x, "conv2", (0, 1, 1)).abs().sum() > 0
    for mode in ("deconv", "guided"):
        with pytest.raises(UnsupportedModeError, match="only saliency is available for this network"):
            backprop(net, x, "conv2", (0, 1, 1), mode)
    assert hook_count(net) == 0
    # Before the activation runs, nothing needs overriding: deconv of conv1 is its plain gradient.
    assert torch.equal(deconvnet(net, x, "conv1", (0, 1, 1)), saliency(net, x, "conv1", (0, 1, 1)))


def test_an_untraceable_network_keeps_saliency_and_says_why_the_rest_is_missing():
    net = Untraceable()
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    support = mode_support(net)
    assert support.modes == ("saliency",) and "cannot be traced" in support.reason and "\n" not in support.reason
    assert saliency(net, x, "head", (0, 1, 1)).abs().sum() > 0
    with pytest.raises(UnsupportedModeError, match="cannot be traced"):
        guided_backprop(net, x, "head", (0, 1, 1))
    assert hook_count(net) == 0


def test_registry_models_report_their_supported_modes(lite0):
    assert supported_modes(lite0.module) == MODES
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        # Same architectures as the registry's (weights do not matter for which modes apply).
        alexnet = torchvision.models.alexnet(weights=None).eval()
        resnet = torchvision.models.resnet50(weights=None).eval()  # one ReLU module reused 3x per block
        googlenet = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False).eval()
    for model in (alexnet, resnet, googlenet):  # GoogLeNet's F.relu calls are graph nodes too
        assert supported_modes(model, 64) == MODES
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    # Per-call rules through reused modules and functional calls give genuinely different images.
    for model, layer in ((resnet, "layer1"), (googlenet, "inception3a")):
        assert not torch.equal(guided_backprop(model, x, layer, 3, seed="point"),
                               saliency(model, x, layer, 3, seed="point"))
    for model in (alexnet, resnet, googlenet):
        assert hook_count(model) == 0 and not any(m.training for m in model.modules())


# ----------------------------------------- Captum equivalence ---------------------------------------------

@pytest.fixture(scope="module")
def alexnet():
    return build_module(REGISTRY["alexnet"], "random", seed=0)


@pytest.fixture(scope="module")
def vgg16():
    return build_module(REGISTRY["vgg16"], "random", seed=0)


def captum_attribution(model: nn.Module, layer: str, mode: str, x: torch.Tensor, unit: tuple) -> torch.Tensor:
    from captum.attr import NeuronDeconvolution, NeuronGradient, NeuronGuidedBackprop

    method = {"saliency": NeuronGradient, "deconv": NeuronDeconvolution, "guided": NeuronGuidedBackprop}[mode]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Captum warns that it sets requires_grad and hooks ReLUs
        return method(model, model.get_submodule(layer)).attribute(x.clone(), neuron_selector=unit).detach()


@pytest.mark.parametrize("name, size, layer, unit", [
    ("alexnet", 224, "features.6", (57, 6, 9)),  # conv3 (13 x 13), after two in-place ReLUs
    ("vgg16", 64, "features.14", (40, 7, 5)),  # conv3_2 (16 x 16 at 64 px), after six in-place ReLUs
])
def test_matches_captum_neuron_attributions(request, name, size, layer, unit):
    model = request.getfixturevalue(name)
    reference = copy.deepcopy(model)  # Captum registers its own hooks; keep our shared instance to ourselves
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    ours = {mode: backprop(model, x, layer, unit, mode) for mode in MODES}
    for mode in MODES:
        theirs = captum_attribution(reference, layer, mode, x, unit)
        assert theirs.abs().max() > 0
        assert (ours[mode] - theirs).abs().max().item() <= 1e-5, mode
    # The rules matter for this unit, so the comparison distinguishes the three modes.
    assert (ours["deconv"] - ours["saliency"]).abs().max() > 1e-3
    assert (ours["guided"] - ours["saliency"]).abs().max() > 1e-3
    assert (ours["guided"] - ours["deconv"]).abs().max() > 1e-3
    # Our shared instance is exactly as it was.
    assert hook_count(model) == 0 and not model.training
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in model.state_dict().items())  # weights
    assert all(p.grad is None and not p.requires_grad for p in model.parameters())
    assert all(m.inplace for m in model.modules() if isinstance(m, nn.ReLU))


class ModuleReluConv(nn.Module):
    """GoogLeNet's BasicConv2d with its F.relu as an nn.ReLU module (same parameter names)."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


def test_googlenet_functional_relu_node_matches_captum_on_a_module_relu_twin():
    from functools import partial

    from torchvision.models.googlenet import GoogLeNet, Inception, InceptionAux

    googlenet = build_module(REGISTRY["googlenet"], "random", seed=0)
    twin = GoogLeNet(aux_logits=False, init_weights=False,
                     blocks=[ModuleReluConv, partial(Inception, conv_block=ModuleReluConv), InceptionAux])
    twin.load_state_dict(googlenet.state_dict())
    twin.eval()
    layer, unit = "inception4a.branch2.1.relu", (37, 3, 4)  # an F.relu call; the twin's nn.ReLU of that name
    x = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    ours = {mode: backprop(googlenet, x, layer, unit, mode) for mode in MODES}
    for mode in MODES:
        theirs = captum_attribution(twin, layer, mode, x, unit)
        scale = theirs.abs().max().item()  # GoogLeNet's init (std 0.01) makes small gradients: compare relatively
        assert scale > 0
        assert (ours[mode] - theirs).abs().max().item() <= 1e-5 * scale, mode
    scale = ours["saliency"].abs().max().item()
    assert (ours["deconv"] - ours["saliency"]).abs().max() > 1e-2 * scale  # the rules matter for this unit
    assert (ours["guided"] - ours["saliency"]).abs().max() > 1e-2 * scale
    assert (ours["guided"] - ours["deconv"]).abs().max() > 1e-2 * scale
    assert hook_count(googlenet) == 0 and not googlenet.training


def test_nothing_remains_on_the_model_after_errors(alexnet):
    modules_before = [(n, type(m)) for n, m in alexnet.named_modules()]
    x = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(2))
    bad_calls = [
        dict(layer="features.6", unit=999, mode="guided"),  # channel out of range (after the forward pass)
        dict(layer="features.6", unit=(0, 50, 0), mode="deconv"),  # position out of range
        dict(layer="features.6", unit=(0, 1, 1), mode="guided", seed="map"),  # map seed with a position
        dict(layer="features.99", unit=0, mode="guided"),  # no such layer
        dict(layer="classifier.6", unit=(0, 1, 1), mode="deconv"),  # vector layer with a position
        dict(layer="features.6", unit=0, mode="backwards"),
        dict(layer="features.6", unit=0, mode="guided", seed="peak"),
        dict(layer="features.6", unit=(1, 2), mode="guided"),
        dict(layer="features.6", unit=-1, mode="guided"),
        dict(layer="features.6", unit="3", mode="guided"),
    ]
    for call in bad_calls:
        with pytest.raises(ValueError) as info:
            backprop(alexnet, x, **call)
        assert "\n" not in str(info.value) and str(info.value)
        assert hook_count(alexnet) == 0, call
    with pytest.raises(BackpropError, match="inputs must be"):
        backprop(alexnet, x[0], "features.6", 0)
    assert [(n, type(m)) for n, m in alexnet.named_modules()] == modules_before
    assert all(p.grad is None for p in alexnet.parameters())
    # A vector layer takes a bare unit: gradient of one logit.
    assert guided_backprop(alexnet, x, "classifier.6", 7).shape == x.shape


# ------------------------------------ the embedded model, threads -----------------------------------------

class _ReferenceRectifier(nn.Module):
    """Test-only replacement ReLU6: the rule applied by a tensor hook on a private copy of its input."""

    def __init__(self) -> None:
        super().__init__()
        self.mode = "saliency"

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        branch = a * 1.0  # its gradient comes from this call only
        out = branch.clamp(0.0, 6.0)
        if self.mode == "saliency":
            return out
        mask = ((a > 0) & (a < 6.0)).detach()
        if self.mode == "guided":
            branch.register_hook(lambda g: g.clamp(min=0.0) * mask)
        else:
            branch.register_hook(lambda g: g.clamp(min=0.0))
        return branch + (out - branch).detach()  # the rectifier's value, its gradient straight to the hook


class _Stop(Exception):
    pass


class ReferenceBackprop:
    """Module-replacement deconv/guided on a deep copy (what the library must not do to the shared model)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = copy.deepcopy(model)
        self.rectifier = _ReferenceRectifier()
        for module in list(self.model.modules()):
            for name, child in module.named_children():
                if isinstance(child, nn.ReLU6):
                    setattr(module, name, self.rectifier)

    def __call__(self, x: torch.Tensor, layer: str, unit: tuple, mode: str) -> torch.Tensor:
        self.rectifier.mode = mode
        outputs = []

        def keep_and_stop(_module, _args, output):
            outputs.append(output)
            raise _Stop

        handle = self.model.get_submodule(layer).register_forward_hook(keep_and_stop)
        start = x.clone().requires_grad_(True)
        try:
            with pytest.raises(_Stop):
                self.model(start)
        finally:
            handle.remove()
        c, y, x_ = unit
        return torch.autograd.grad(outputs[0][:, c, y, x_].sum(), start)[0]


def test_embedded_model_all_modes_match_a_module_replacement_reference(lite0):
    view = model_view(decode_image(sample_bytes("chelsea")), lite0.spec, size=160)  # 160 px keeps it quick
    image = to_batch(view, lite0.spec.normalization)
    reference = ReferenceBackprop(lite0.module)
    for layer, unit in [("_blocks.3", (5, 12, 13)), ("_blocks.10", (17, 6, 8))]:  # 20 x 20 and 10 x 10 maps
        images = {}
        for mode in MODES:
            ours = backprop(lite0.module, image, layer, unit, mode)
            expected = reference(image, layer, unit, mode)
            scale = expected.abs().max().item()
            assert scale > 0
            assert (ours - expected).abs().max().item() <= 1e-5 * max(1.0, scale), (layer, mode)
            images[mode] = ours
        assert (images["deconv"] - images["saliency"]).abs().max() > 1e-3 * scale
        assert (images["guided"] - images["deconv"]).abs().max() > 1e-3 * scale
    # The toolbox's map seed works on a block too, and differs from the one-hot seed.
    mapped = guided_backprop(lite0.module, image, "_blocks.3", 5)
    assert mapped.shape == image.shape and torch.isfinite(mapped).all() and mapped.abs().max() > 0
    assert not torch.equal(mapped, guided_backprop(lite0.module, image, "_blocks.3", 5, seed="point"))
    assert hook_count(lite0.module) == 0


def test_eight_threads_mixing_modes_match_sequential_results(lite0):
    generator = torch.Generator().manual_seed(5)
    jobs = [(torch.randn(1, 3, 128, 128, generator=generator), MODES[i % 3], f"_blocks.{2 + i}", i + 1)
            for i in range(8)]
    expected = [backprop(lite0.module, x, layer, channel, mode) for x, mode, layer, channel in jobs]
    results: list[torch.Tensor | None] = [None] * 8
    errors: list[BaseException] = []
    barrier = threading.Barrier(9)  # 8 backward images + 1 thread calling F.relu

    def work(i: int) -> None:
        try:
            x, mode, layer, channel = jobs[i]
            barrier.wait()
            results[i] = backprop(lite0.module, x, layer, channel, mode)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def functional_relu_meanwhile() -> None:
        # F.relu calls in another thread must not trip the deconv/guided threads' watch (it is thread-local).
        try:
            net, x = FunctionalRelu(), torch.randn(1, 3, 8, 8)
            barrier.wait()
            while any(result is None for result in results) and not errors:
                saliency(net, x, "conv2", (0, 1, 1))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    threads.append(threading.Thread(target=functional_relu_meanwhile))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for i, (got, want) in enumerate(zip(results, expected)):
        assert torch.equal(got, want), jobs[i][1:]
    assert hook_count(lite0.module) == 0


def test_unit_parsing():
    assert Unit.parse(3) == Unit(3) and Unit.parse((3, 1, 2)) == Unit(3, 1, 2)
    assert Unit.parse(np.int64(4)) == Unit(4) and Unit.parse([4]) == Unit(4)
    for bad in [(1, 2), True, 2.0, (1, None, 2)]:
        with pytest.raises(BackpropError):
            Unit.parse(bad)
    with pytest.raises(BackpropError, match="both y and x"):
        Unit(1, 2, None)


# ---------------------------------------------- display -----------------------------------------------------

def test_display_filters_on_hand_made_gradients():
    gradient = np.zeros((3, 2, 2), np.float32)
    gradient[:, 0, 0] = [2.0, -2.0, 0.0]  # |.| = sqrt(8)
    gradient[:, 0, 1] = [0.0, 0.0, 1.0]  # |.| = 1
    gradient[:, 1, 0] = [-1.0, -1.0, -1.0]  # |.| = sqrt(3)
    raw = backprop_image(gradient, "raw")
    assert raw.shape == (2, 2, 3) and raw.dtype == np.uint8
    assert raw[0, 0].tolist() == [255, 0, 128] and raw[1, 1].tolist() == [128, 128, 128]
    assert raw[1, 0].tolist() == [64, 64, 64]  # -1 of a +-2 range: 128 - 63.75
    gray = backprop_image(torch.from_numpy(gradient), "gray")  # means: 0, 1/3, -1, 0 -> scaled by 1
    assert gray.shape == (2, 2) and gray.tolist() == [[128, 170], [0, 128]]
    norm = backprop_image(gradient, "norm")
    expected = np.floor(np.array([[np.sqrt(8), 1], [np.sqrt(3), 0]]) / np.sqrt(8) * 255 + 0.5)
    assert norm.tolist() == expected.tolist()
    assert backprop_image(np.zeros((3, 4, 4)), "raw").tolist() == np.full((4, 4, 3), 128).tolist()
    assert backprop_image(np.zeros((3, 4, 4)), "norm").max() == 0
    with pytest.raises(ValueError, match="filter"):
        backprop_image(gradient, "jet")
    with pytest.raises(ValueError, match="one gradient"):
        backprop_image(np.zeros((2, 3, 4, 4)), "raw")
    assert BACKPROP_FILTERS == ("raw", "gray", "norm", "norm_blur")


def test_norm_blur_spreads_a_point_and_keeps_its_mass():
    gradient = np.zeros((3, 31, 31), np.float32)
    gradient[0, 15, 15] = 3.0
    gradient[1, 15, 15] = 4.0  # norm 5 at the centre
    blurred = gaussian_blur(np.linalg.norm(gradient, axis=0), sigma=2.0)
    assert blurred.sum() == pytest.approx(5.0, rel=1e-4)
    assert blurred[15, 15] == pytest.approx(5.0 / (2 * np.pi * 4), rel=1e-2)  # peak of a 2-D Gaussian
    assert blurred[15, 17] == pytest.approx(blurred[15, 15] * np.exp(-0.5), rel=1e-2)
    image = backprop_image(gradient, "norm_blur", blur_sigma=2.0)
    assert image.shape == (31, 31) and image[15, 15] == 255 and image[15, 18] < image[15, 17] < 255
    assert image[0, 0] == 0


def test_overlay_has_the_photo_size_and_highlights_the_strong_region():
    photo = np.full((64, 64, 3), 100, np.uint8)
    gradient = np.zeros((3, 32, 32), np.float32)
    gradient[:, 4:8, 4:8] = 1.0
    blend = backprop_overlay(photo, gradient, blur_sigma=1.0)
    assert blend.shape == (64, 64, 3) and blend.dtype == np.uint8
    assert blend[12, 12].sum() > blend[50, 50].sum()  # bright heat over the strong corner, dark elsewhere


# ------------------------------------------------- CLI ------------------------------------------------------

def test_cli_writes_png_and_raw_gradient(tmp_path, capsys, alexnet):
    from deepvis.cli import main

    image_path = tmp_path / "coffee.jpg"
    image_path.write_bytes(sample_bytes("coffee"))
    out, npy = tmp_path / "g.png", tmp_path / "g.npy"
    code = main(["backprop", str(image_path), "--layer", "features.6", "--unit", "12", "--y", "4", "--x", "7",
                 "--mode", "deconv", "--model", "alexnet", "--weights", "random", "--device", "cpu",
                 "--out", str(out), "--npy", str(npy)])
    assert code == 0
    assert '"seed": "point"' in capsys.readouterr().out
    saved = np.load(npy)
    x = preprocess(decode_image(sample_bytes("coffee")), REGISTRY["alexnet"], "cpu")
    assert np.array_equal(saved, deconvnet(alexnet, x, "features.6", (12, 4, 7))[0].numpy())
    png = np.asarray(Image.open(io.BytesIO(out.read_bytes())))  # the page's default filter, norm_blur
    assert png.shape == (224, 224) and np.array_equal(png, backprop_image(saved, "norm_blur"))
    for shown in ("raw", "gray", "norm"):
        assert main(["backprop", str(image_path), "--layer", "features.6", "--unit", "12", "--mode", "deconv",
                     "--model", "alexnet", "--weights", "random", "--filter", shown, "--out", str(out),
                     "--npy", str(npy)]) == 0
        assert f'"filter": "{shown}"' in capsys.readouterr().out
        assert np.array_equal(np.asarray(Image.open(out)), backprop_image(np.load(npy), shown)), shown
    code = main(["backprop", str(image_path), "--layer", "features.6", "--unit", "12", "--y", "4",
                 "--mode", "guided", "--model", "alexnet", "--weights", "random", "--out", str(out)])
    assert code == 2
    assert capsys.readouterr().err.strip() == "deepvis backprop: Give both y and x for a unit position, or neither."
