"""The traced graph (deepvis.graph): node names, truncation, rectifiers, and a shared model left untouched.

A hand-built network with known weights: conv 1x1 (weights 1, 2 for channels 0, 1 of the sum of the input's
channels) -> ReLU6 -> a block of (conv 1x1, in-place ReLU) -> global mean -> linear; every expectation below
is computed by hand from those weights.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepvis.graph import LayerError, rectifier_input, traced, truncated


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x))


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 2, 1, bias=False)
        self.act = nn.ReLU6()
        self.block = Block()
        self.head = nn.Linear(2, 3, bias=False)
        with torch.no_grad():
            self.stem.weight.copy_(torch.tensor([[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]]).view(2, 3, 1, 1))
            self.block.conv.weight.copy_(torch.tensor([[1.0, -1.0], [-1.0, 0.5]]).view(2, 2, 1, 1))
            self.head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        self.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(self.act(self.stem(x)))
        return self.head(y.mean(dim=(2, 3)))


@pytest.fixture()
def net() -> Net:
    return Net()


def test_truncated_graph_returns_hand_computed_nodes_and_stops_at_the_deepest(net):
    x = torch.full((1, 3, 2, 2), 0.5)  # channel sums 1.5 -> stem 1.5, 3.0 -> ReLU6 keeps both
    x[0, :, 0, 0] = 2.0  # sums 6 -> stem 6, 12 -> ReLU6 caps 12 at 6
    out = truncated(net, ["stem", "act", "block.relu"])(x)
    assert out["stem"][0, :, 0, 0].tolist() == [6.0, 12.0] and out["stem"][0, :, 1, 1].tolist() == [1.5, 3.0]
    assert out["act"][0, :, 0, 0].tolist() == [6.0, 6.0]
    # block conv at (1, 1): [1.5 - 3, -1.5 + 1.5] = [-1.5, 0] -> ReLU -> [0, 0]; at (0, 0): [0, -3] -> [0, 0]
    assert out["block.relu"][0, :, 1, 1].tolist() == [0.0, 0.0]
    # The in-place ReLU after a requested node did not change that node's value.
    assert out["stem"][0, 0, 1, 1] == 1.5
    graph = truncated(net, ["act"])
    assert not any(n.op == "call_module" and n.target in ("block.conv", "head") for n in graph.graph.nodes)


def test_a_module_path_names_the_last_node_inside_that_module(net):
    model = traced(net)
    assert model.qualname[model.resolve("block")] == "block.relu"
    with pytest.raises(LayerError):
        model.resolve("nowhere")


def test_rectifier_input_is_the_pre_activation_with_its_cap(net):
    assert rectifier_input(net, "act") == ("stem", 6.0)
    assert rectifier_input(net, "block.relu") == ("block.conv", None)
    assert rectifier_input(net, "stem") is None


def test_tracing_and_running_leave_the_shared_model_as_it_was(net):
    before = {k: v.clone() for k, v in net.state_dict().items()}
    truncated(net, ["block.relu", "head"])(torch.randn(2, 3, 4, 4))
    assert not net.training and all(not m.training for m in net.modules())
    assert all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks for m in net.modules())
    assert all(p.grad is None and not p.requires_grad for p in net.parameters())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert type(net.block.relu) is nn.ReLU  # no module replaced
