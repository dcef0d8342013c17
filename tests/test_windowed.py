"""Local recomputation: window geometry by hand; equal to the whole forward pass of every copy on a hand-built net
with each kind of op (and ops it must not treat as local); on Lite0 it does a fraction of the work."""

from __future__ import annotations

import pytest
import torch
from torch import fx, nn
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from deepvis.graph import truncated
from deepvis.windowed import LocalRun, Windowed, _reach


def test_window_reach_by_hand():
    # 3×3, stride 1, on a padded axis of 10 (8 pixels + 1 each side): a window over padded 1..2 reaches outputs 0..2
    assert _reach([1], 2, 10, 3, 1, 1) == ([0], 3)
    # stride 2 on 9 (ZeroPad (0, 1) of 8): outputs o read 2o..2o+2; a window over 4..5 reaches outputs 1 and 2
    assert _reach([4], 2, 9, 3, 2, 1) == ([1], 2)
    # 1×1 stride 2: a window over 3..4 reaches output 2 only
    assert _reach([3], 2, 8, 1, 2, 1) == ([2], 1)
    # dilation 2, 3×3 (reads o, o+2, o+4) on 12: a window over 5 reaches outputs 1, 3, 5 -> 1..5
    assert _reach([5], 1, 12, 3, 1, 2) == ([1], 5)
    # near the end a window over 7..8 reaches outputs 5..7 (of 0..7)
    assert _reach([7], 2, 10, 3, 1, 1) == ([5], 3)
    # copies share one size: the first reaches outputs 0..1 and its window is widened to 0..2
    assert _reach([0, 7], 2, 10, 3, 1, 1) == ([0, 5], 3)
    # ... and one widened past the end is moved back inside: outputs 7..7 and 2..4 -> 5..7 and 2..4
    assert _reach([9, 4], 1, 10, 3, 1, 1) == ([5, 2], 3)


class _Every(nn.Module):
    """One of each op deepvis.windowed knows, and two it must not treat as local."""

    def __init__(self) -> None:
        super().__init__()
        self.pad = nn.ZeroPad2d((0, 1, 0, 1))
        self.stem = nn.Conv2d(3, 8, 3, stride=2)
        self.norm = nn.BatchNorm2d(8).eval()
        self.act = nn.ReLU6(inplace=True)
        self.depthwise = nn.Parameter(torch.randn(8, 1, 3, 3) * 0.3)
        self.dilated = nn.Conv2d(8, 8, 3, padding=2, dilation=2)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.down = nn.Conv2d(8, 12, 1, stride=2)
        self.expand = nn.Conv2d(8, 12, 3, padding=1)
        self.head = nn.Linear(36, 5)
        self.register_buffer("ramp", torch.linspace(-1.0, 1.0, 12))  # differs along the width: not per channel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm(self.stem(self.pad(x))))                      # 24 -> 25 -> 12
        x = x + F.conv2d(F.pad(x, (1, 1, 1, 1)), self.depthwise, None, 1, 0, 1, 8)  # residual, windows differ
        pooled = F.adaptive_avg_pool2d(x, 1).view(x.size(0), -1)             # global mean of a windowed map
        gated = x * torch.sigmoid(x.mean((2, 3), keepdim=True))              # a per-copy scale: not local
        ramped = (x + self.ramp).mean((2, 3))                               # a constant that is not local
        x = F.relu(self.dilated(x)) * 0.5 - 0.1
        x = self.pool(x)                                                     # 12 -> 6
        skip = self.down(x)                                                  # 6 -> 3, 1×1 stride 2
        x = self.expand(F.max_pool2d(x, 2)) + skip                          # not local: functional max pool
        return self.head(torch.cat([pooled, gated.mean((2, 3)), ramped, x.mean((-1, -2))], dim=1))


def _copies(base: torch.Tensor, windows: list[tuple[int, int]], size: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    tops, lefts = [t for t, _ in windows], [x for _, x in windows]
    changed = torch.randn(len(windows), base.shape[1], size, size, generator=generator)
    return changed, tops, lefts, Windowed(base, changed, tops, lefts).dense()


@pytest.mark.parametrize("size", [1, 4, 9, 24])
def test_equals_the_whole_forward_pass_of_every_copy(size):
    torch.manual_seed(0)
    model = _Every().eval()
    model.norm.running_mean.normal_()
    graph = fx.symbolic_trace(model)
    base = torch.randn(1, 3, 24, 24)
    corners = [(0, 0), (0, 24 - size), (24 - size, 0), (24 - size, 24 - size), ((24 - size) // 2, 3 % (25 - size))]
    changed, tops, lefts, whole = _copies(base, corners, size, 1)
    with torch.no_grad():
        run = LocalRun(graph, base)
        torch.testing.assert_close(run.output, model(base))
        got = run(changed, tops, lefts)
        torch.testing.assert_close(got, model(whole), rtol=1e-5, atol=1e-5)
        # a batch after it gives its own answer (nothing of the first is kept)
        changed2, tops2, lefts2, whole2 = _copies(base, corners[::-1], size, 2)
        torch.testing.assert_close(run(changed2, tops2, lefts2), model(whole2), rtol=1e-5, atol=1e-5)


def test_a_layer_output_keeps_its_name_and_value(lite0):
    layer = "_blocks.4._swish_1"
    graph = truncated(lite0.module, [layer, lite0.logits_layer], folded=True)
    base = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    changed, tops, lefts, whole = _copies(base, [(0, 0), (100, 180), (192, 50)], 32, 4)
    with torch.no_grad():
        got = LocalRun(graph, base)(changed, tops, lefts)
        want = graph(whole)
    assert set(got) == {layer, lite0.logits_layer}
    for name in got:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-4)


def test_lite0_recomputes_a_fraction_of_the_network(lite0):
    graph = truncated(lite0.module, [lite0.logits_layer], folded=True)
    base = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(5))
    changed, tops, lefts, whole = _copies(base, [(96, 96)], 32, 6)
    with torch.no_grad():
        run = LocalRun(graph, base)
        with FlopCounterMode(display=False) as local:
            run(changed, tops, lefts)
        with FlopCounterMode(display=False) as full:
            graph(whole)
    ratio = local.get_total_flops() / full.get_total_flops()
    # measured 0.65 for this central patch: the 112- to 28-px layers recompute only what it reaches; the
    # convolutions at 14 and 7 px (most of the multiply-adds) see the whole map change; recomputing it all is 1.0
    assert 0.5 < ratio < 0.75
