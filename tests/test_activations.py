"""Activation capture on hand-built nets and on the shared embedded model."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from deepvis.activations import LayerError, analyze, capture, channel_stats, predict
from deepvis.hooks import hook_count
from deepvis.images import decode_image, preprocess, sample_bytes

from tests.helpers import Untraceable


def tiny_net() -> nn.Sequential:
    """1 -> 1 channel: conv 2x2 of ones (bias -1), in-place ReLU, conv 1x1 weight 2 (bias 0.5)."""
    net = nn.Sequential(nn.Conv2d(1, 1, 2), nn.ReLU(inplace=True), nn.Conv2d(1, 1, 1))
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[0].bias.fill_(-1.0)
        net[2].weight.fill_(2.0)
        net[2].bias.fill_(0.5)
    return net.eval().requires_grad_(False)


X = torch.tensor([[[[1.0, -2.0, 0.0], [0.5, 0.0, 1.0], [-1.0, 3.0, 2.0]]]])
# 2x2 window sums minus 1, by hand: [[1-2+.5+0, -2+0+0+1], [.5+0-1+3, 0+1+3+2]] - 1
CONV = torch.tensor([[[[-1.5, -2.0], [1.5, 5.0]]]])
RELU = torch.tensor([[[[0.0, 0.0], [1.5, 5.0]]]])
OUT = torch.tensor([[[[0.5, 0.5], [3.5, 10.5]]]])


def test_capture_matches_hand_computed_values_and_survives_in_place_relu():
    net = tiny_net()
    got = capture(net, X, ["0", "1", "2"])
    assert torch.equal(got["0"], CONV)  # taken before the in-place ReLU overwrote it
    assert torch.equal(got["1"], RELU)
    assert torch.equal(got["2"], OUT)
    assert torch.equal(got["2"], net(X))
    assert hook_count(net) == 0


def test_capture_stops_after_the_deepest_requested_layer():
    class Boom(nn.Module):
        def forward(self, x):
            raise AssertionError("ran past the requested layer")

    net = nn.Sequential(*tiny_net(), Boom())
    assert torch.equal(capture(net, X, "1")["1"], RELU)
    assert hook_count(net) == 0


def test_no_hooks_remain_after_an_exception_or_a_bad_layer():
    class Fails(nn.Module):
        def forward(self, x):
            raise RuntimeError("broken layer")

    net = nn.Sequential(nn.Conv2d(1, 1, 1), Fails(), nn.Conv2d(1, 1, 1))
    with pytest.raises(RuntimeError, match="broken layer"):
        capture(net, X, ["0", "2"])
    assert hook_count(net) == 0
    with pytest.raises(LayerError, match="no layer"):
        capture(net, X, ["0", "nope"])
    assert hook_count(net) == 0


def test_a_reused_module_gives_one_layer_per_call_named_as_torchvision_names_them():
    relu = nn.ReLU()
    net = nn.Sequential(nn.Conv2d(1, 1, 1), relu, nn.Conv2d(1, 1, 1), relu, nn.Conv2d(1, 1, 1))
    with torch.no_grad():
        for conv, (w, b) in zip((net[0], net[2], net[4]), ((2.0, -1.0), (-1.0, 0.5), (1.0, 0.0))):
            conv.weight.fill_(w)
            conv.bias.fill_(b)
    net.eval().requires_grad_(False)
    got = capture(net, X, ["1", "1_1"])  # get_graph_node_names: the second call of module "1" is "1_1"
    first = (2 * X - 1).clamp(min=0)  # by hand: conv 2x - 1, ReLU
    assert torch.equal(got["1"], first)
    assert torch.equal(got["1_1"], (-first + 0.5).clamp(min=0))  # conv -x + 0.5, ReLU
    with pytest.raises(LayerError, match="no layer '3'"):  # module "3" is never called under that name
        capture(net, X, "3")
    assert hook_count(net) == 0


def test_hooks_of_one_thread_do_not_fire_in_another():
    """The untraceable fallback: thread A sits inside a capture (its hooks registered) while B runs the model."""
    inside, release = threading.Event(), threading.Event()
    model = Untraceable()
    a_input = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    b_input = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    expected_b = model(b_input)
    from deepvis.hooks import owned_hooks

    results = {}

    def thread_a():
        with owned_hooks() as hooks:
            hooks.forward(model.conv, lambda *_: (inside.set(), release.wait(10)) and None)
            results["a"] = capture(model, a_input, "head")["head"]

    worker = threading.Thread(target=thread_a)
    worker.start()
    assert inside.wait(10)
    assert hook_count(model) > 0  # A's hooks are on the shared model right now...
    results["b"] = model(b_input)  # ...yet B's forward runs clean and unblocked
    release.set()
    worker.join(10)
    assert torch.equal(results["b"], expected_b)
    assert torch.equal(results["a"], capture(model, a_input, "head")["head"])
    assert torch.equal(results["a"], model(a_input))
    assert hook_count(model) == 0


def test_lite0_post_relu6_node_equals_the_block_computed_by_hand(lite0, photos):
    from PIL import Image

    x = preprocess(Image.fromarray(photos["chelsea"]), lite0.spec)
    got = capture(lite0.module, x, ["_blocks.8", "_blocks.9._swish_1"])
    block = lite0.module._blocks[9]
    with torch.no_grad():  # expand 1x1 -> BN -> ReLU6 -> depthwise 5x5 -> BN -> ReLU6, from block 9's modules
        hidden = block._swish(block._bn0(block._expand_conv(got["_blocks.8"])))
        expected = block._swish(block._bn1(block._depthwise_conv(hidden)))
    assert got["_blocks.9._swish_1"].shape == (1, 672, 14, 14)
    torch.testing.assert_close(got["_blocks.9._swish_1"], expected, rtol=0, atol=1e-5)
    assert (got["_blocks.9._swish_1"] == 0).float().mean() > 0.5  # a sparse, rectified map
    assert hook_count(lite0.module) == 0


def test_resnet_third_relu_call_of_a_bottleneck_equals_the_hand_computed_value():
    from deepvis.models import REGISTRY, build_module

    resnet = build_module(REGISTRY["resnet50"], "random", seed=0)
    x = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    got = capture(resnet, x, ["layer3.1", "layer3.2.relu_2"])  # "layer3.1": that block's output node
    b = resnet.layer3[2]
    with torch.no_grad():
        inner = b.relu(b.bn2(b.conv2(b.relu(b.bn1(b.conv1(got["layer3.1"]))))))
        expected = torch.relu(b.bn3(b.conv3(inner)) + got["layer3.1"])
    torch.testing.assert_close(got["layer3.2.relu_2"], expected, rtol=0, atol=1e-5)
    assert torch.equal(got["layer3.2.relu_2"], capture(resnet, x, "layer3.2")["layer3.2"])


def test_eight_threads_capturing_different_nodes_match_sequential_results(lite0):
    inputs = [torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(s)) for s in range(8)]
    nodes = ["_swish", "_blocks.2._swish", "_blocks.4._swish_1", "_blocks.6.add", "_blocks.9._swish_1",
             "_blocks.11._bn0", "_swish_1", "_fc"]
    expected = [capture(lite0.module, x, [node]) for x, node in zip(inputs, nodes)]
    got: list = [None] * 8
    barrier = threading.Barrier(8)

    def work(i):
        barrier.wait()
        for _ in range(2):
            got[i] = capture(lite0.module, inputs[i], [nodes[i]])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for node, exp, res in zip(nodes, expected, got):
        assert torch.equal(exp[node], res[node]), node
    assert hook_count(lite0.module) == 0
    assert not any(m.training for m in lite0.module.modules())
    assert all(p.grad is None and not p.requires_grad for p in lite0.module.parameters())


def test_embedded_model_recognizes_real_photos(lite0, photos):
    from PIL import Image

    cat = predict(lite0.module, preprocess(Image.fromarray(photos["chelsea"]), lite0.spec), lite0.class_names, 3)[0]
    assert any(p.label in {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"} for p in cat)
    cup = predict(lite0.module, preprocess(Image.fromarray(photos["coffee"]), lite0.spec), lite0.class_names, 1)[0]
    assert cup[0].label == "espresso" and cup[0].prob > 0.8


def test_analyze_gives_predictions_and_the_layer_from_one_pass(lite0):
    result = analyze(lite0, decode_image(sample_bytes("coffee")), "_blocks.5")
    assert result.predictions[0].label == "espresso"
    assert result.activation.shape == lite0.layer("_blocks.5").shape
    assert result.view.shape == (224, 224, 3)
    stats = result.stats
    c = int(stats.max.argmax())
    y, x = stats.argmax[c].tolist()
    assert result.activation[c, y, x] == stats.max[c] == result.channel_map(c).max()
    logits = analyze(lite0, decode_image(sample_bytes("coffee")), "_fc")
    assert logits.activation.shape == (1000,) and int(logits.stats.max.argmax()) == 967  # espresso
    with pytest.raises(ValueError, match="outside"):
        result.channel_map(10_000)


def test_channel_stats_by_hand():
    act = torch.tensor([[[1.0, 5.0], [2.0, 0.0]], [[-1.0, -3.0], [-0.5, -2.0]]])
    stats = channel_stats(act)
    assert stats.mean.tolist() == [2.0, -1.625]
    assert stats.max.tolist() == [5.0, -0.5]
    assert stats.argmax.tolist() == [[0, 1], [1, 0]]


def test_folded_capture_equals_the_plain_one_and_leaves_the_model_untouched(lite0):
    """The optimizers' BatchNorm-folded copy: the same activations and input gradients up to float rounding,
    a requested convolution node still its own output, and the shared model as it was."""
    from deepvis.graph import traced

    before = {k: v.clone() for k, v in lite0.module.state_dict().items()}
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    names = ["_blocks.5._bn2", "_blocks.9._swish_1", "_fc"]
    plain = capture(lite0.module, x, names)
    folded = capture(lite0.module, x, names, folded=True)
    for name in names:
        torch.testing.assert_close(folded[name], plain[name], rtol=1e-4, atol=1e-4)
    _, convs = traced(lite0.module).folded_twin()
    assert len(convs) == 49 and "_blocks.3._project_conv.conv2d" in convs  # every convolution feeds a BN
    conv_plain = capture(lite0.module, x, "_blocks.3._project_conv")
    conv_folded = capture(lite0.module, x, "_blocks.3._project_conv", folded=True)
    assert torch.equal(conv_plain["_blocks.3._project_conv"], conv_folded["_blocks.3._project_conv"])
    grads = []
    for fold in (False, True):
        xa = x.clone().requires_grad_(True)
        out = capture(lite0.module, xa, "_fc", keep_graph=True, folded=fold)["_fc"][:, 130].sum()
        grads.append(torch.autograd.grad(out, xa)[0])
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-3, atol=1e-6)
    after = lite0.module.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert isinstance(lite0.module._bn0, torch.nn.BatchNorm2d) and not lite0.module.training
