"""The layers a person is offered: which graph nodes, grouped and described.

Conventions
-----------
* A layer is a node of the traced graph (:mod:`deepvis.graph`).  Offered are the
  nodes that return one tensor of shape ``(N, C, H, W)`` or ``(N, K)``, from the
  first weighted op (convolution, linear) on.  Weights, constants, shape
  arithmetic, padding, flatten/reshape, dropout and identities are not offered.
* Each :class:`LayerInfo` carries its block/stage (``group``: ``stem``, a block
  such as ``_blocks.9`` or ``layer3.2``, ``head``), a readable ``op``
  (``depthwise conv 5×5``, ``ReLU6``, ``residual sum``), whether its output is
  rectified (a ReLU/ReLU6, or a pool/concatenation of rectified maps: >= 0 and
  sparse) and, for a rectifier, what it rectifies (``after``).
* Shapes come from one dry pass of zeros at the model's input size (FX's
  ``ShapeProp``), without the batch dimension.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from deepvis.graph import TracedModel, forward_pass, node_name, rectifier_top, traced

# Nodes that move or reshape data rather than compute a feature map: never offered.
_PLUMBING_MODULES = (nn.Identity, nn.Dropout, nn.Dropout2d, nn.Flatten, nn.ZeroPad2d, nn.ConstantPad2d,
                     nn.ReflectionPad2d, nn.ReplicationPad2d, nn.Unflatten)
_PLUMBING_NAMES = frozenset({
    "flatten", "view", "reshape", "contiguous", "permute", "transpose", "squeeze", "unsqueeze", "pad",
    "dropout", "size", "getitem", "getattr", "to", "type", "float", "clone", "detach", "expand", "chunk",
    "split", "narrow", "dim", "identity",
})
# Ops whose output is non-negative when every tensor input is (a rectified map stays rectified).
_KEEPS_RECTIFIED = frozenset({"max pool", "average pool", "concatenation", "mean", "flatten"})



@dataclass(frozen=True)
class LayerInfo:
    """One offered layer: its node name, output shape without the batch, and how to describe it."""

    name: str
    shape: tuple[int, ...]  # (C, H, W) for maps, (K,) for vectors
    kind: str  # module class or function name, e.g. "ReLU6", "conv2d", "add"
    op: str = ""  # readable operation, e.g. "depthwise conv 3×3", "ReLU6", "residual sum"
    group: str = ""  # block or stage, e.g. "_blocks.9", "layer3.2", "stem", "head"
    rectified: bool = False  # output of a ReLU/ReLU6 (or a pool/concat of such): >= 0, sparse
    after: str = ""  # for a rectifier: the op it rectifies, e.g. "depthwise conv 3×3 → batch norm"

    @property
    def channels(self) -> int:
        return self.shape[0]

    @property
    def is_spatial(self) -> bool:
        return len(self.shape) == 3

    @property
    def short_name(self) -> str:
        """The node name inside its group (``_swish_1`` of ``_blocks.9``)."""
        prefix = self.group + "."
        return self.name[len(prefix):] if self.name.startswith(prefix) else self.name

    @property
    def description(self) -> str:
        """``ReLU6 after depthwise conv 3×3 → batch norm · 672 × 14 × 14``."""
        what = f"{self.op} after {self.after}" if self.after else (self.op or self.kind)
        if self.rectified and not self.after:
            what += " (rectified)"
        return f"{what} · {' × '.join(map(str, self.shape))}"


def _conv_label(out_channels: int, in_per_group: int, groups: int, kernel: Sequence[int]) -> str:
    size = "×".join(map(str, kernel))
    if groups > 1 and in_per_group == 1:
        return f"depthwise conv {size}"
    return "1×1 conv" if size == "1×1" else f"conv {size}"


def _op_label(traced_model: TracedModel, node: fx.Node) -> str:
    module = traced_model.submodule(node)
    top = rectifier_top(traced_model, node)
    if top is not False:
        return "ReLU" if top is None else ("ReLU6" if top == 6 else f"ReLU capped at {top:g}")
    if isinstance(module, nn.Conv2d):
        return _conv_label(module.out_channels, module.in_channels // module.groups, module.groups,
                           module.kernel_size)
    if module is not None:
        labels = [((nn.Linear,), "fully connected"), ((nn.modules.batchnorm._BatchNorm,), "batch norm"),
                  ((nn.MaxPool2d, nn.AdaptiveMaxPool2d), "max pool"),
                  ((nn.AvgPool2d, nn.AdaptiveAvgPool2d), "average pool"), ((nn.LocalResponseNorm,), "LRN")]
        return next((label for types, label in labels if isinstance(module, types)), type(module).__name__)
    name = node_name(traced_model, node)
    if name == "conv2d" and len(node.args) > 1 and isinstance(node.args[1], fx.Node) \
            and node.args[1].op == "get_attr":
        weight = traced_model.twin.get_parameter(node.args[1].target)
        groups = node.args[6] if len(node.args) > 6 else node.kwargs.get("groups", 1)
        return _conv_label(weight.shape[0], weight.shape[1], int(groups) if isinstance(groups, int) else 1,
                           tuple(weight.shape[2:]))
    tensor_inputs = [a for a in node.args if isinstance(a, fx.Node)]
    labels = {"conv2d": "conv", "linear": "fully connected", "cat": "concatenation", "max_pool2d": "max pool",
              "adaptive_avg_pool2d": "average pool", "avg_pool2d": "average pool", "mean": "mean",
              "batch_norm": "batch norm", "mul": "product", "sigmoid": "sigmoid"}
    if name in ("add", "iadd"):
        return "residual sum" if len(tensor_inputs) == 2 else "sum"
    return labels.get(name, name)


def _group(traced_model: TracedModel, qualname: str, node: fx.Node) -> str | None:
    """The block/stage a node belongs to, or ``None`` at the root (the caller names it stem or head)."""
    parts = str(node.target).split(".") if node.op == "call_module" else qualname.split(".")[:-1]
    if not parts:
        return None
    root = traced_model.twin
    top = root.get_submodule(parts[0])
    containers = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
    if isinstance(top, containers):
        if len(parts) > 1 and len(list(top.get_submodule(parts[1]).children())) > 0:
            return f"{parts[0]}.{parts[1]}"
        return parts[0]
    return parts[0] if len(list(top.children())) > 0 else None


def _weighted(node: fx.Node, traced_model: TracedModel) -> bool:
    module = traced_model.submodule(node)
    if module is not None:
        return any(True for _ in module.parameters())
    return any(isinstance(a, fx.Node) and a.op == "get_attr" for a in node.args)


def _plumbing(traced_model: TracedModel, node: fx.Node) -> bool:
    module = traced_model.submodule(node)
    if module is not None:
        return isinstance(module, _PLUMBING_MODULES)
    return node_name(traced_model, node) in _PLUMBING_NAMES


def _shape(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    if meta is None or not hasattr(meta, "shape"):
        return None
    shape = tuple(meta.shape)
    return shape[1:] if len(shape) in (2, 4) else None


def list_layers(model: nn.Module, input_size: int, device: torch.device | str = "cpu") -> tuple[LayerInfo, ...]:
    """The offered layers of ``model`` in forward order (see module docstring); one dry pass of zeros."""
    traced_model = traced(model)
    full = fx.GraphModule(traced_model.twin, copy.deepcopy(traced_model.graph))
    with forward_pass(), torch.no_grad():  # ShapeProp calls the modules: no trace may run meanwhile
        ShapeProp(full).propagate(torch.zeros(1, 3, input_size, input_size, device=device))
    copies = dict(zip(traced_model.graph.nodes, full.graph.nodes))
    rectified: dict[fx.Node, bool] = {}
    labels: dict[fx.Node, str] = {}
    infos: list[tuple[LayerInfo, str | None]] = []
    started = False
    for node in traced_model.graph.nodes:
        if node.op in ("placeholder", "get_attr", "output"):
            continue
        label = labels[node] = _op_label(traced_model, node)
        inputs = [a for a in node.all_input_nodes if a.op not in ("get_attr", "placeholder")]
        rectified[node] = rectifier_top(traced_model, node) is not False or (
            bool(inputs) and all(rectified.get(a, False) for a in inputs)
            and (label in _KEEPS_RECTIFIED or _plumbing(traced_model, node)))
        started = started or _weighted(node, traced_model)
        shape = _shape(copies[node])
        if not started or shape is None or _plumbing(traced_model, node):
            continue
        qualname = traced_model.qualname[node]
        after = ""
        if rectifier_top(traced_model, node) is not False and inputs:
            chain = [inputs[0]]
            if labels.get(inputs[0]) == "batch norm" and inputs[0].all_input_nodes:
                chain.insert(0, inputs[0].all_input_nodes[0])
            after = " → ".join(labels.get(n, node_name(traced_model, n)) for n in chain)
        info = LayerInfo(qualname, shape, node_name(traced_model, node), label, "", rectified[node], after)
        infos.append((info, _group(traced_model, qualname, node)))
    return _name_root_groups(infos)


def _name_root_groups(infos: list[tuple[LayerInfo, str | None]]) -> tuple[LayerInfo, ...]:
    """Name the root-level nodes' groups: ``stem`` before the first block, ``head`` after the last,
    and each root node between blocks a group of its own.  A top-level module that yields a single
    node (a padded conv, say) counts as root level."""
    sizes: dict[str | None, int] = {}
    for _, group in infos:
        sizes[group] = sizes.get(group, 0) + 1
    raw = [None if group is not None and "." not in group and sizes[group] == 1 else group for _, group in infos]
    blocks = [i for i, group in enumerate(raw) if group is not None]
    first, last = (blocks[0], blocks[-1]) if blocks else (len(raw), -1)
    named = [group if group is not None else ("stem" if i < first else "head" if i > last else info.name)
             for i, ((info, _), group) in enumerate(zip(infos, raw))]
    return tuple(LayerInfo(info.name, info.shape, info.kind, info.op, group, info.rectified, info.after)
                 for (info, _), group in zip(infos, named))


def groups(layers: Iterable[LayerInfo]) -> dict[str, list[LayerInfo]]:
    """Layers by block/stage, both in forward order."""
    found: dict[str, list[LayerInfo]] = {}
    for info in layers:
        found.setdefault(info.group, []).append(info)
    return found


def teaching_layer(layers: Sequence[LayerInfo], input_size: int) -> LayerInfo:
    """A mid-network rectified map like the paper's conv5: the deepest rectified layer at least 1/20 of the input.

    Falls back to the middle layer for a network without rectifiers.
    """
    candidates = [i for i in layers if i.rectified and i.is_spatial and i.shape[1] * 20 >= input_size]
    return candidates[-1] if candidates else layers[len(layers) // 2]
