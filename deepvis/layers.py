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
* A vision transformer's **token layer** (``(N, T, D)``, :mod:`deepvis.tokens`) is offered as the
  ``(D, P, P)`` maps of its patch tokens (``tokens``: how many prefix tokens they leave out), followed,
  where the model has a class token, by ``"<layer>[cls]"``: that token's ``(D,)`` vector.  Every view
  sees only those shapes: :func:`deepvis.activations.capture` returns them.  Four-dimensional tensors
  computed from tokens are offered only when they are ``P × P`` maps (attention heads are not).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from deepvis import tokens as tk
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
    shape: tuple[int, ...]  # (C, H, W) for maps, (K,) for vectors; a token layer's (D, P, P) or its class token's (D,)
    kind: str  # module class or function name, e.g. "ReLU6", "conv2d", "add"
    op: str = ""  # readable operation, e.g. "depthwise conv 3×3", "ReLU6", "residual sum"
    group: str = ""  # block or stage, e.g. "_blocks.9", "layer3.2", "stem", "head"
    rectified: bool = False  # output of a ReLU/ReLU6 (or a pool/concat of such): >= 0, sparse
    after: str = ""  # for a rectifier: the op it rectifies, e.g. "depthwise conv 3×3 → batch norm"
    tokens: int | None = None  # a token layer (or its class token): the prefix tokens its maps leave out

    @property
    def is_class_token(self) -> bool:
        """The ``"<layer>[cls]"`` vector of a token layer (:mod:`deepvis.tokens`)."""
        return self.tokens is not None and tk.split(self.name)[1]

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
        if self.is_class_token:
            what += ", class token"
        tail = " (patch tokens)" if self.tokens is not None and not self.is_class_token else ""
        return f"{what} · {' × '.join(map(str, self.shape))}{tail}"


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
                  ((nn.AvgPool2d, nn.AdaptiveAvgPool2d), "average pool"), ((nn.LocalResponseNorm,), "LRN"),
                  ((nn.LayerNorm,), "layer norm")]
        return next((label for types, label in labels if isinstance(module, types)), type(module).__name__)
    name = node_name(traced_model, node)
    if name == "conv2d" and len(node.args) > 1 and isinstance(node.args[1], fx.Node) \
            and node.args[1].op == "get_attr":
        weight = traced_model.twin.get_parameter(node.args[1].target)
        groups = node.args[6] if len(node.args) > 6 else node.kwargs.get("groups", 1)
        return _conv_label(weight.shape[0], weight.shape[1], int(groups) if isinstance(groups, int) else 1,
                           tuple(weight.shape[2:]))
    tensor_inputs = [a for a in node.args if isinstance(a, fx.Node) and a.op != "get_attr"]
    labels = {"conv2d": "conv", "linear": "fully connected", "cat": "concatenation", "max_pool2d": "max pool",
              "adaptive_avg_pool2d": "average pool", "avg_pool2d": "average pool", "mean": "mean",
              "batch_norm": "batch norm", "mul": "product", "sigmoid": "sigmoid", "layer_norm": "layer norm"}
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


def _full_shape(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _offered_shape(full: tuple[int, ...] | None, found: tuple[int, int] | None,
                   side: int | None) -> tuple[int, ...] | None:
    """The shape a node is offered with (module docstring): ``side`` is the patch grid of the tokens it is
    computed from, if any."""
    if full is None:
        return None
    if found is not None:
        return full[2], found[1], found[1]
    if len(full) == 2 or (len(full) == 4 and (side is None or full[2:] == (side, side))):
        return full[1:]
    return None


def _with_class_token(info: LayerInfo, has_class: bool | None) -> list[LayerInfo]:
    """``info``, and after a token layer whose token 0 is a class token, that token's vector layer."""
    if info.tokens is None or not tk.has_class_token(info.tokens, has_class):
        return [info]
    return [info, dataclasses.replace(info, name=tk.class_layer(info.name), shape=info.shape[:1])]


def list_layers(model: nn.Module, input_size: int, device: torch.device | str = "cpu",
                channels: int = 3) -> tuple[LayerInfo, ...]:
    """The offered layers of ``model`` in forward order (see module docstring); one dry pass of zeros
    ``(1, channels, input_size, input_size)``."""
    traced_model = traced(model)
    full = fx.GraphModule(traced_model.twin, copy.deepcopy(traced_model.graph))
    with forward_pass(), torch.no_grad():  # ShapeProp calls the modules: no trace may run meanwhile
        ShapeProp(full).propagate(torch.zeros(1, channels, input_size, input_size, device=device))
    copies = dict(zip(traced_model.graph.nodes, full.graph.nodes))
    prefix, has_class = tk.declared(model)
    rectified: dict[fx.Node, bool] = {}
    labels: dict[fx.Node, str] = {}
    sides: dict[fx.Node, int | None] = {}  # the patch grid of the tokens a node is computed from
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
        node_shape = _full_shape(copies[node])
        found = tk.layout(node_shape[1:], prefix) if node_shape is not None and len(node_shape) == 3 else None
        sides[node] = found[1] if found else next((sides[a] for a in inputs if sides.get(a)), None)
        shape = _offered_shape(node_shape, found, sides[node])
        if not started or shape is None or _plumbing(traced_model, node):
            continue
        qualname = traced_model.qualname[node]
        after = ""
        if rectifier_top(traced_model, node) is not False and inputs:
            chain = [inputs[0]]
            if labels.get(inputs[0]) == "batch norm" and inputs[0].all_input_nodes:
                chain.insert(0, inputs[0].all_input_nodes[0])
            after = " → ".join(labels.get(n, node_name(traced_model, n)) for n in chain)
        info = LayerInfo(qualname, shape, node_name(traced_model, node), label, "", rectified[node], after,
                         found[0] if found else None)
        group = _group(traced_model, qualname, node)
        infos.extend((each, group) for each in _with_class_token(info, has_class))
    return _name_root_groups(infos)


def module_layer(model: nn.Module, name: str, shape: tuple[int, ...], kind: str) -> tuple[LayerInfo, ...]:
    """The layers a module-level layer (the untraceable fallback, :func:`deepvis.models.module_layers`) with
    output ``shape`` (no batch) is offered as: a map or vector as it is, a token layer as maps (and its
    class token); none for any other shape."""
    group = name.split(".")[0]
    if len(shape) in (1, 3):
        return (LayerInfo(name, shape, kind, kind, group),)
    prefix, has_class = tk.declared(model)
    found = tk.layout(shape, prefix)
    if found is None:
        return ()
    info = LayerInfo(name, (shape[1], found[1], found[1]), kind, kind, group, tokens=found[0])
    return tuple(_with_class_token(info, has_class))


def _name_root_groups(infos: list[tuple[LayerInfo, str | None]]) -> tuple[LayerInfo, ...]:
    """Name the root-level nodes' groups: ``stem`` before the first block, ``head`` after the last,
    and each root node between blocks a group of its own.  A top-level module that yields a single
    node (a padded conv, say) counts as root level (a class-token layer goes with its node)."""
    sizes: dict[str | None, int] = {}
    for info, group in infos:
        sizes[group] = sizes.get(group, 0) + (not info.is_class_token)
    raw = [None if group is not None and "." not in group and sizes[group] == 1 else group for _, group in infos]
    blocks = [i for i, group in enumerate(raw) if group is not None]
    first, last = (blocks[0], blocks[-1]) if blocks else (len(raw), -1)
    named = [group if group is not None else ("stem" if i < first else "head" if i > last else info.name)
             for i, ((info, _), group) in enumerate(zip(infos, raw))]
    return tuple(dataclasses.replace(info, group=group) for (info, _), group in zip(infos, named))


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
    if candidates:
        return candidates[-1]
    middle = len(layers) // 2
    return layers[middle - 1] if layers[middle].is_class_token else layers[middle]  # its token layer's maps
