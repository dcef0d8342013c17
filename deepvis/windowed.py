"""Local recomputation: many copies of one input, each changed only inside a small window, through a traced graph.

(Over 300 lines: each local op's window rule, and the run that carries windows through the graph, must agree
with one another.)

An occlusion map runs the network on ~170 copies of a photo that differ from it in one patch each.  Through a
convolution a change reaches only the outputs whose receptive field meets it, so most of each early feature map
equals the unchanged photo's.  :class:`LocalRun` runs the unchanged photo once, then carries each copy as the
photo's values plus *its window*: the rectangle of a feature map that may differ.  Each local op recomputes only
the windows (a convolution on a crop of the padded map, the crop made of the photo's values with the copy's window
pasted in); the window grows with each receptive field, and once it covers the whole map the copies go on as an
ordinary batch.  The result equals the full forward pass of every copy up to float rounding (tested against it).

Conventions
-----------
* ``graph`` is a :class:`torch.fx.GraphModule` with one placeholder (the input batch) and an output that is a
  tensor or ``{name: tensor}`` (:func:`deepvis.graph.truncated`); it may read the batch size through
  ``x.size(…)`` or ``x.shape`` (EfficientNet-Lite's ``view(x.size(0), -1)``).
* ``base`` is the unchanged input ``(1, C, H, W)``; ``changed`` holds each copy's window ``(N, C, h, w)`` and
  ``tops``/``lefts`` where each window starts in ``base`` (windows of one size, inside the map).
* **Local ops** (each a pure function of a pixel's neighbourhood): ``conv2d`` (module or functional; zero
  padding given as numbers), ``max_pool2d`` without ``ceil_mode``, constant ``pad``/``ZeroPad2d``, pointwise
  modules and functions (rectifiers, ``Identity``, eval ``Dropout``/``BatchNorm2d``, ``+ − × ÷`` by a number or
  a per-channel constant), the sum of two windowed values; a global average (``AdaptiveAvgPool2d(1)``,
  ``mean`` over the two spatial axes) is the photo's plus the windows' change, divided by the map's size.
  Any other op, or one with an input that already differs everywhere, sees the copies as a full batch (each
  window pasted into the photo's map), so every graph gives the right answer; it is only faster as far as its
  ops are local.  Values are computed as the forward pass computes them, with no autograd (run it under
  ``torch.no_grad()``).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import fx, nn
from torch.nn import functional as F
from deepvis.errors import DeepvisError
from deepvis.redirect import Rectifier

_POINTWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.SiLU, nn.Hardswish, nn.Sigmoid, nn.Tanh, nn.GELU,
                      nn.LeakyReLU, nn.ELU, nn.Identity, nn.Dropout, nn.Dropout2d, nn.BatchNorm2d)
_POINTWISE_FUNCTIONS = {F.relu, F.relu6, F.hardtanh, F.silu, F.hardswish, F.gelu, F.leaky_relu, torch.relu,
                        torch.sigmoid, torch.tanh, torch.clone}
_ARITHMETIC = {operator.add, operator.sub, operator.mul, operator.truediv, torch.add, torch.mul, torch.sub}
_CONVS = {F.conv2d, torch.conv2d}


@dataclass
class Windowed:
    """A feature map of N copies: the photo's ``base`` ``(1, C, H, W)`` except each copy's window."""

    base: torch.Tensor
    values: torch.Tensor  # (N, C, h, w)
    tops: list[int]
    lefts: list[int]

    def dense(self) -> torch.Tensor:
        """Every copy's whole map ``(N, C, H, W)``."""
        out = self.base.expand(len(self.tops), *self.base.shape[1:]).clone()
        h, w = self.values.shape[-2:]
        for i, (top, left) in enumerate(zip(self.tops, self.lefts)):
            out[i, :, top:top + h, left:left + w] = self.values[i]
        return out

    def full(self) -> bool:
        return self.values.shape[-2:] == self.base.shape[-2:]


def _crops(base: torch.Tensor, tops: list[int], lefts: list[int], h: int, w: int) -> torch.Tensor:
    """``base[0, :, top:top + h, left:left + w]`` for each window, ``(N, C, h, w)`` (a loop of slices is
    faster here than one advanced-indexing gather or ``unfold``)."""
    return torch.stack([base[0, :, top:top + h, left:left + w] for top, left in zip(tops, lefts)])


def _paste(into: torch.Tensor, tops: list[int], lefts: list[int], source: Windowed) -> None:
    """Write each copy's window of ``source`` into its crop ``into[i]`` of the same map, which starts at
    ``tops[i], lefts[i]``, cut to the crop."""
    h, w = into.shape[-2:]
    sh, sw = source.values.shape[-2:]
    for i in range(len(tops)):
        top, left = source.tops[i] - tops[i], source.lefts[i] - lefts[i]
        y0, x0, y1, x1 = max(top, 0), max(left, 0), min(top + sh, h), min(left + sw, w)
        if y0 < y1 and x0 < x1:
            into[i, :, y0:y1, x0:x1] = source.values[i, :, y0 - top:y1 - top, x0 - left:x1 - left]


def _sliding(value: Windowed, padded_base: torch.Tensor, padding: tuple[int, int], kernel: tuple[int, int],
             stride: tuple[int, int], dilation: tuple[int, int]) -> tuple[torch.Tensor, list[int], list[int]]:
    """The crops of the padded map that a convolution-like op needs for each copy's changed outputs, with the
    copy's window pasted in, ``(N, C, h', w')``, and where the op's output windows start."""
    h, w = value.values.shape[-2:]
    tops, lefts = [t + padding[0] for t in value.tops], [x + padding[1] for x in value.lefts]
    H, W = padded_base.shape[-2:]
    out_tops, out_h = _reach(tops, h, H, kernel[0], stride[0], dilation[0])
    out_lefts, out_w = _reach(lefts, w, W, kernel[1], stride[1], dilation[1])
    crop_h = (out_h - 1) * stride[0] + dilation[0] * (kernel[0] - 1) + 1
    crop_w = (out_w - 1) * stride[1] + dilation[1] * (kernel[1] - 1) + 1
    crop_tops, crop_lefts = [t * stride[0] for t in out_tops], [x * stride[1] for x in out_lefts]
    if (crop_h, crop_w) == (h, w) and crop_tops == tops and crop_lefts == lefts:
        return value.values, out_tops, out_lefts  # e.g. a 1×1 convolution: the window is the crop
    crops = _crops(padded_base, crop_tops, crop_lefts, crop_h, crop_w)
    _paste(crops, crop_tops, crop_lefts, Windowed(padded_base, value.values, tops, lefts))
    return crops, out_tops, out_lefts


def _reach(starts: list[int], size: int, length: int, kernel: int, stride: int, dilation: int
           ) -> tuple[list[int], int]:
    """Where windows of ``size`` starting at ``starts`` of a padded axis ``length`` long land in a sliding op's
    output: the output windows' starts and their common size (each holds every output its window reaches, and
    is moved back inside the output where the common size would make it stick out)."""
    out_length = (length - dilation * (kernel - 1) - 1) // stride + 1
    low = [max(math.ceil((a - dilation * (kernel - 1)) / stride), 0) for a in starts]
    high = [min((a + size - 1) // stride, out_length - 1) for a in starts]
    out_size = max(hi - lo + 1 for lo, hi in zip(low, high))
    return [min(lo, out_length - out_size) for lo in low], out_size


def _union(a: Windowed, b: Windowed) -> tuple[torch.Tensor, torch.Tensor, list[int], list[int]]:
    """Both values over windows that hold both of theirs (one size for every copy)."""
    if a.tops == b.tops and a.lefts == b.lefts and a.values.shape[-2:] == b.values.shape[-2:]:
        return a.values, b.values, a.tops, a.lefts
    (ha, wa), (hb, wb) = a.values.shape[-2:], b.values.shape[-2:]
    H, W = a.base.shape[-2:]
    h = min(max(max(ta + ha, tb + hb) - min(ta, tb) for ta, tb in zip(a.tops, b.tops)), H)
    w = min(max(max(la + wa, lb + wb) - min(la, lb) for la, lb in zip(a.lefts, b.lefts)), W)
    tops = [min(ta, tb, H - h) for ta, tb in zip(a.tops, b.tops)]
    lefts = [min(la, lb, W - w) for la, lb in zip(a.lefts, b.lefts)]
    out = []
    for value in (a, b):
        crops = _crops(value.base, tops, lefts, h, w)
        _paste(crops, tops, lefts, value)
        out.append(crops)
    return out[0], out[1], tops, lefts


def _pair(value: int | tuple[int, ...] | list[int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _per_channel(value: object) -> bool:
    """A number, or a constant tensor that is the same at every position of a map (one value, or ``(…, 1, 1)``)."""
    if not isinstance(value, torch.Tensor):
        return isinstance(value, (int, float))
    return value.numel() == 1 or (value.dim() >= 2 and tuple(value.shape[-2:]) == (1, 1))


def _call(graph: fx.GraphModule, node: fx.Node, args: tuple, kwargs: dict) -> object:
    if node.op == "call_module":
        return graph.get_submodule(node.target)(*args, **kwargs)
    if node.op == "call_function":
        return node.target(*args, **kwargs)
    if node.op == "call_method":
        return getattr(args[0], node.target)(*args[1:], **kwargs)
    if node.op == "get_attr":
        return operator.attrgetter(node.target)(graph)
    raise DeepvisError(f"cannot run a {node.op} node")


def _dense(value: object) -> object:
    return value.dense() if isinstance(value, Windowed) else value


class LocalRun:
    """One graph and one unchanged input: :meth:`__call__` evaluates batches of copies changed in windows.

    Building it runs the unchanged input once and keeps every node's value (and each padded map a sliding op
    needs), so each batch recomputes only its windows; :attr:`output` is the graph's output for that input.
    Threads may share one."""

    def __init__(self, graph: fx.GraphModule, base: torch.Tensor) -> None:
        self.graph = graph
        self.base: dict[fx.Node, object] = {}
        for node in graph.graph.nodes:
            if node.op == "placeholder":
                self.base[node] = base
            elif node.op != "output":
                args = fx.node.map_arg(node.args, self.base.__getitem__)
                kwargs = fx.node.map_arg(node.kwargs, self.base.__getitem__)
                value = _call(graph, node, args, kwargs)
                # a later in-place op must not change a value kept here
                self.base[node] = value.clone() if isinstance(value, torch.Tensor) and node.op != "get_attr" \
                    else value
            else:
                self.output = fx.node.map_arg(node.args[0], self.base.__getitem__)
        self._padded: dict[tuple[fx.Node, tuple[int, ...], float], torch.Tensor] = {}

    def __call__(self, changed: torch.Tensor, tops: list[int], lefts: list[int]) -> object:
        """The graph's output for each copy (module docstring), as a full forward pass of the copies would
        give it: a tensor ``(N, …)`` or ``{name: tensor}``."""
        env: dict[fx.Node, object] = {}
        for node in self.graph.graph.nodes:
            if node.op == "placeholder":
                env[node] = Windowed(self.base[node], changed, list(tops), list(lefts))
            elif node.op == "output":
                return fx.node.map_arg(node.args[0], lambda n: _dense(env[n]))
            elif not any(n in env for n in node.all_input_nodes):
                continue  # the same for every copy: self.base[node]
            else:
                lookup = lambda n: env[n] if n in env else self.base[n]  # noqa: E731
                args = fx.node.map_arg(node.args, lookup)
                kwargs = fx.node.map_arg(node.kwargs, lookup)
                # an op is local only if every input that differs between copies is still windowed
                local = all(isinstance(env[n], Windowed) for n in node.all_input_nodes if n in env)
                value = self._local(node, args, kwargs, len(tops)) if local else NotImplemented
                if value is NotImplemented:
                    args, kwargs = fx.node.map_aggregate((args, kwargs), _dense)
                    value = _call(self.graph, node, args, kwargs)
                env[node] = value.values if isinstance(value, Windowed) and value.full() else value
        raise DeepvisError("the graph has no output")

    def _local(self, node: fx.Node, args: tuple, kwargs: dict, count: int) -> object:
        """The node's value computed window by window, or ``NotImplemented``."""
        windowed = [a for a in args if isinstance(a, Windowed)]
        if not windowed or windowed[0].base.dim() != 4:
            return NotImplemented
        first, base = windowed[0], self.base[node]
        shape = torch.Size((count, *first.base.shape[1:]))
        if node.op == "call_method" and node.target == "size" and not kwargs and len(args) <= 2:
            return shape if len(args) == 1 else shape[args[1]]
        if node.op == "call_function" and node.target is getattr and args[1:] == ("shape",):
            return shape
        module = self.graph.get_submodule(node.target) if node.op == "call_module" else None
        if len(windowed) == 2 and len(args) == 2 and not kwargs \
                and node.op == "call_function" and node.target in (operator.add, torch.add):
            a, b, tops, lefts = _union(*windowed)
            return Windowed(base, a + b, tops, lefts)
        if len(windowed) != 1 or args[0] is not first:
            return NotImplemented
        pointwise = _pointwise(node, module, args, kwargs)
        if pointwise is not None:
            return Windowed(base, pointwise(first.values), first.tops, first.lefts)
        pad = _padding(node, module, args, kwargs)
        if pad is not None:
            (left, right, top, bottom), _ = pad
            return Windowed(base, first.values, [t + top for t in first.tops], [x + left for x in first.lefts])
        sliding = _sliding_op(node, module, args, kwargs)
        if sliding is not None:
            op, kernel, stride, padding, dilation, fill = sliding
            key = (node, padding, fill)
            if key not in self._padded:  # the same for every batch; a race only computes it twice
                self._padded[key] = F.pad(first.base, (padding[1], padding[1], padding[0], padding[0]), value=fill)
            crops, tops, lefts = _sliding(first, self._padded[key], padding, kernel, stride, dilation)
            return Windowed(base, op(crops), tops, lefts)
        keep = _global_mean(node, module, args, kwargs)
        if keep is not None:
            h, w = first.values.shape[-2:]
            change = first.values.sum(dim=(2, 3)) - _crops(first.base, first.tops, first.lefts, h, w).sum(dim=(2, 3))
            change = change / first.base[0, 0].numel()
            return base + (change[:, :, None, None] if keep else change)
        return NotImplemented


def _pointwise(node: fx.Node, module: nn.Module | None, args: tuple, kwargs: dict
               ) -> Callable[[torch.Tensor], torch.Tensor] | None:
    module = module.inner if isinstance(module, Rectifier) else module  # the optimizers' wrapper: its own module
    if module is not None:
        if not isinstance(module, _POINTWISE_MODULES) or len(args) != 1 or kwargs \
                or (isinstance(module, (nn.BatchNorm2d, nn.Dropout, nn.Dropout2d)) and module.training) \
                or (isinstance(module, nn.BatchNorm2d) and module.running_mean is None):  # batch statistics
            return None
        return (lambda t: module(t.clone())) if getattr(module, "inplace", False) else module
    if node.op != "call_function":
        return None
    if node.target in _POINTWISE_FUNCTIONS and len(args) == 1 and not kwargs.get("inplace", False):
        return lambda t: node.target(t, **kwargs)
    if node.target in _ARITHMETIC and not kwargs and len(args) == 2 and _per_channel(args[1]):
        return lambda t: node.target(t, args[1])
    return None


def _padding(node: fx.Node, module: nn.Module | None, args: tuple, kwargs: dict
             ) -> tuple[tuple[int, int, int, int], float] | None:
    """A constant pad of the two spatial axes: ``((left, right, top, bottom), fill)``."""
    if isinstance(module, (nn.ZeroPad2d, nn.ConstantPad2d)) and len(args) == 1 and not kwargs:
        pad, fill = tuple(module.padding), float(getattr(module, "value", 0.0))
    elif node.op == "call_function" and node.target is F.pad and len(args) == 2 and len(args[1]) == 4 \
            and kwargs.get("mode", "constant") == "constant" and set(kwargs) <= {"mode", "value"}:
        pad, fill = tuple(args[1]), float(kwargs.get("value") or 0.0)
    else:
        return None
    return (pad, fill) if min(pad) >= 0 else None


def _sliding_op(node: fx.Node, module: nn.Module | None, args: tuple, kwargs: dict):
    """A convolution or max-pool: ``(op without padding, kernel, stride, padding, dilation, padding's value)``."""
    if isinstance(module, nn.Conv2d) and module.padding_mode == "zeros" and not isinstance(module.padding, str) \
            and len(args) == 1 and not kwargs:
        return (lambda t: F.conv2d(t, module.weight, module.bias, module.stride, 0, module.dilation, module.groups),
                module.kernel_size, module.stride, module.padding, module.dilation, 0.0)
    if node.op == "call_function" and node.target in _CONVS and not kwargs and 2 <= len(args) <= 7 \
            and not any(isinstance(a, (Windowed, str)) for a in args[1:]):
        weight, bias, stride, padding, dilation, groups = list(args[1:]) + [None, 1, 0, 1, 1][len(args) - 2:]
        return (lambda t: F.conv2d(t, weight, bias, stride, 0, dilation, groups),
                tuple(weight.shape[-2:]), _pair(stride), _pair(padding), _pair(dilation), 0.0)
    if isinstance(module, nn.MaxPool2d) and not module.ceil_mode and not module.return_indices \
            and len(args) == 1 and not kwargs:
        stride = module.stride if module.stride is not None else module.kernel_size
        return (lambda t: F.max_pool2d(t, module.kernel_size, stride, 0, module.dilation),
                _pair(module.kernel_size), _pair(stride), _pair(module.padding), _pair(module.dilation), -math.inf)
    return None


def _global_mean(node: fx.Node, module: nn.Module | None, args: tuple, kwargs: dict) -> bool | None:
    """Whether the node averages each whole map (True: keeping two axes of size 1), or None."""
    if isinstance(module, nn.AdaptiveAvgPool2d) and _pair(module.output_size) == (1, 1) and not kwargs:
        return True
    if node.op == "call_function" and node.target is F.adaptive_avg_pool2d and args[1:] in ((1,), ((1, 1),)):
        return True
    if (node.op == "call_method" and node.target == "mean") or (node.op == "call_function"
                                                                 and node.target is torch.mean):
        dims = kwargs.get("dim", args[1] if len(args) > 1 else None)
        dims = dims if isinstance(dims, (tuple, list)) else [dims]
        if None not in dims and sorted(d % 4 for d in dims) == [2, 3] and len(args) <= 2 \
                and set(kwargs) <= {"dim", "keepdim"}:
            return bool(kwargs.get("keepdim", False))
    return None
