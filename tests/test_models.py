"""The model registry: every architecture builds, every listed layer resolves, weights load."""

from __future__ import annotations

import pytest
import torch
import torchvision

from deepvis import models
from deepvis.activations import capture
from deepvis.hooks import hook_count
from deepvis.models import REGISTRY, ModelError, WeightsUnavailableError, load_model


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_architecture_builds_with_random_weights_and_lists_resolvable_layers(name):
    loaded = load_model(name, "random", "cpu", seed=3)
    assert not loaded.module.training
    assert not any(p.requires_grad for p in loaded.module.parameters())
    assert len(loaded.layers) >= 8
    assert loaded.layers[-1].shape == (1000,)  # logits last
    for info in loaded.layers:
        assert loaded.module.get_submodule(info.name) is not None
    x = torch.zeros(1, 3, 224, 224)
    middle = loaded.layers[len(loaded.layers) // 2]
    assert tuple(capture(loaded.module, x, middle.name)[middle.name].shape[1:]) == middle.shape
    assert hook_count(loaded.module) == 0
    assert loaded.first_conv.in_channels == 3


def test_random_weights_follow_the_seed_and_leave_the_global_rng_alone():
    before = torch.random.get_rng_state()
    a = load_model("alexnet", "random", "cpu", seed=1).module.features[0].weight
    b = load_model("alexnet", "random", "cpu", seed=1).module.features[0].weight
    c = load_model("alexnet", "random", "cpu", seed=2).module.features[0].weight
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(before, torch.random.get_rng_state())


def test_embedded_weights_load_completely():
    loaded = load_model()
    assert loaded.spec.name == "efficientnet_lite0" and loaded.weights == "default"
    assert [i.name for i in loaded.layers][:3] == ["_conv_stem", "_bn0", "_blocks.0"]
    assert {f"_blocks.{i}" for i in range(16)} <= {i.name for i in loaded.layers}
    # the block-level ReLU6 runs twice per forward pass, so it has no single output and is not listed
    assert "_swish" not in {i.name for i in loaded.layers}
    assert len(loaded.module.state_dict()) == 296 - 0  # every tensor of the shipped state dict


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
    with pytest.raises(ModelError, match="no layer"):
        load_model().layer("_blocks.99")
