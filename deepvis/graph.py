"""Layers as the network computes them: nodes of the traced forward graph.

Conventions
-----------
* **A layer is a node** of the model's forward graph, traced once in eval mode by
  torchvision's feature-extraction tracer (``NodePathTracer``) and named as
  ``torchvision.models.feature_extraction.get_graph_node_names`` names it:
  ``_blocks.9._swish_1`` (EfficientNet-Lite's shared ReLU6, second call in block 9),
  ``layer3.2.relu_2`` (third ReLU call of a ResNet bottleneck),
  ``inception4a.branch2.1.relu`` (GoogLeNet's functional ``F.relu``).  A module path
  (``_blocks.9``, ``layer3``) names the last node inside that module, as
  torchvision's ``return_nodes`` do, so block outputs keep their old names.
* **The shared model is never traced, hooked or switched to train mode.**  Tracing
  runs on a private *twin*: a copy of the module tree whose parameters and buffers
  are the model's own tensors (no weight is copied), kept in eval mode.  Every
  graph module built here hangs off that twin, so running one is an ordinary
  stateless forward pass: any number of threads can run them at once.
  (torchvision's ``create_feature_extractor`` would trace the model twice and put it
  in train mode for one trace, which concurrent sessions must never see; it also
  costs ~0.3 s per request on Lite0.  So the one eval trace is kept and each
  request only moves the graph's output, with FX's own dead-code elimination.)
* **Truncated modules.**  ``truncated(model, names)`` is a ``GraphModule`` computing
  ``{name: tensor}`` for exactly those nodes and nothing after the deepest one.  It
  is built once per (model, names) and cached (LRU, :data:`CACHE_SIZE` per model).
  A requested node that is not the deepest is cloned as soon as it is computed, so
  a later in-place op (``nn.ReLU(inplace=True)``) cannot change it.
* **Offered layers** (:func:`list_layers`): every node that returns one tensor of
  shape ``(N, C, H, W)`` or ``(N, K)``, from the first weighted op (convolution,
  linear) on.  Weights, constants, shape arithmetic, padding, flatten/reshape,
  dropout and identities are not offered.  Each :class:`LayerInfo` carries its
  block/stage (``group``), a readable ``op`` and whether its output is rectified.
* A model the tracer cannot follow (data-dependent control flow, say) raises
  :class:`UntraceableError`; callers fall back to module-level layers.
"""

from __future__ import annotations

import copy
import inspect
import math
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torchvision
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp
from torchvision.models.feature_extraction import NodePathTracer

CACHE_SIZE = 32

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


class UntraceableError(RuntimeError):
    """torch.fx cannot trace this model; the message says where it stopped."""


class LayerError(ValueError):
    """A requested layer does not exist or has no single tensor output."""


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


def _tracer() -> NodePathTracer:
    # The keyword arguments get_graph_node_names uses, so node names match it exactly.
    return NodePathTracer(autowrap_modules=(math, torchvision.ops),
                          leaf_modules=[m for _, m in inspect.getmembers(torchvision.ops, inspect.isclass)
                                        if issubclass(m, nn.Module)])


def _signature(model: nn.Module) -> tuple[int, int]:
    """Cheap identity of a model's tensors: ``.to(device)`` keeps parameter objects but replaces buffers."""
    return id(next(model.parameters(), None)), id(next(model.buffers(), None))


class TracedModel:
    """One eval-mode trace of a model, on its twin, with a cache of truncated modules."""

    def __init__(self, model: nn.Module) -> None:
        memo = {id(t): t for t in (*model.parameters(), *model.buffers())}
        self.twin = copy.deepcopy(model, memo).eval()  # shares every tensor; see module docstring
        self.signature = _signature(model)
        tracer = _tracer()
        try:
            self.graph = tracer.trace(self.twin)
        except Exception as exc:  # torch.fx raises TraceError, TypeError, NotImplementedError, ...
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UntraceableError(f"{type(exc).__name__}: {first[:160]}") from None
        self.qualname: dict[fx.Node, str] = dict(tracer.node_to_qualname)
        self.by_name: dict[str, fx.Node] = {name: node for node, name in self.qualname.items()}
        self.order = {node: i for i, node in enumerate(self.graph.nodes)}
        self._lock = threading.Lock()
        self._modules: OrderedDict[tuple, fx.GraphModule] = OrderedDict()

    def resolve(self, name: str) -> fx.Node:
        """The node called ``name``, or the last node inside the module path ``name``."""
        if name in self.by_name:
            return self.by_name[name]
        prefix = name + "."
        inside = [node for node, qual in self.qualname.items() if qual.startswith(prefix)]
        if not name or not inside:
            raise LayerError(f"The model has no layer {name!r}.")
        return max(inside, key=self.order.__getitem__)

    def cached(self, key: tuple, build) -> fx.GraphModule:
        with self._lock:
            if key in self._modules:
                self._modules.move_to_end(key)
                return self._modules[key]
        module = build()
        with self._lock:
            self._modules[key] = module
            while len(self._modules) > CACHE_SIZE:
                self._modules.popitem(last=False)
        return module

    def truncated_graph(self, names: Sequence[str]) -> tuple[fx.Graph, dict[str, fx.Node]]:
        """A copy of the graph whose output is ``{name: node}``, nothing computed after the deepest."""
        targets = {name: self.resolve(name) for name in names}
        deepest = max(targets.values(), key=self.order.__getitem__)
        graph = fx.Graph()
        mapping: dict[fx.Node, fx.Node] = {}
        graph.graph_copy(self.graph, mapping)
        outputs = {}
        for name, node in targets.items():
            copied = mapping[node]
            if node is not deepest:  # clone at once: a later in-place op must not change it
                with graph.inserting_after(copied):
                    copied = graph.call_function(torch.clone, (copied,))
            outputs[name] = copied
        graph.output(outputs)
        return graph, outputs

    def module(self, graph: fx.Graph) -> fx.GraphModule:
        module = fx.GraphModule(self.twin, graph)
        module.graph.eliminate_dead_code(is_impure_node=lambda n: n.op in ("placeholder", "output"))
        module.recompile()
        return module.eval()

    def truncated(self, names: Sequence[str]) -> fx.GraphModule:
        key = ("capture", tuple(names))
        return self.cached(key, lambda: self.module(self.truncated_graph(names)[0]))

    def submodule(self, node: fx.Node) -> nn.Module | None:
        return self.twin.get_submodule(node.target) if node.op == "call_module" else None


_TRACES: weakref.WeakKeyDictionary[nn.Module, TracedModel | UntraceableError] = weakref.WeakKeyDictionary()
_TRACES_LOCK = threading.Lock()


def traced(model: nn.Module) -> TracedModel:
    """The cached trace of ``model`` (made on first use); raises :class:`UntraceableError`.

    A model whose first parameter or buffer was replaced since (``.to(device)``
    replaces buffers) is traced anew; swapping other submodules after the first use
    is not noticed (nothing in deepvis does it).
    """
    with _TRACES_LOCK:
        found = _TRACES.get(model)
    if isinstance(found, UntraceableError):
        raise found
    if found is not None and found.signature == _signature(model):
        return found
    try:
        result: TracedModel | UntraceableError = TracedModel(model)
    except UntraceableError as exc:
        result = exc
    with _TRACES_LOCK:
        _TRACES[model] = result
    if isinstance(result, UntraceableError):
        raise result
    return result


def truncated(model: nn.Module, names: Sequence[str]) -> fx.GraphModule:
    """The cached graph module computing ``{name: tensor}`` for ``names`` (see module docstring)."""
    return traced(model).truncated(list(dict.fromkeys(names)))


# ------------------------------------------------- describing nodes ------------------------------------------

def node_name(traced_model: TracedModel, node: fx.Node) -> str:
    """The function, method or module class a node calls (``conv2d``, ``add``, ``ReLU6``)."""
    if node.op == "call_module":
        return type(traced_model.submodule(node)).__name__
    if node.op == "call_method":
        return str(node.target)
    if node.op == "call_function":
        return getattr(node.target, "__name__", str(node.target)).strip("_") or str(node.target)
    return node.op


def rectifier_top(traced_model: TracedModel, node: fx.Node) -> float | None | bool:
    """``None`` for a ReLU, the cap for ReLU6/Hardtanh(0, cap), ``False`` if ``node`` is no rectifier."""
    module = traced_model.submodule(node)
    if module is not None:
        if isinstance(module, nn.ReLU):
            return None
        if isinstance(module, nn.Hardtanh) and module.min_val == 0 and module.max_val > 0:
            return float(module.max_val)
        return False
    if node.op not in ("call_function", "call_method"):
        return False
    name = getattr(node.target, "__name__", node.target) if node.op == "call_function" else node.target
    name = str(name)
    if name in ("relu", "relu_"):
        return None
    if name in ("relu6", "relu6_"):
        return 6.0
    if name in ("hardtanh", "hardtanh_"):
        low = node.args[1] if len(node.args) > 1 else node.kwargs.get("min_val", -1.0)
        high = node.args[2] if len(node.args) > 2 else node.kwargs.get("max_val", 1.0)
        if isinstance(low, (int, float)) and isinstance(high, (int, float)) and low == 0 and high > 0:
            return float(high)
    return False


def rectifier_input(model: nn.Module, name: str) -> tuple[str, float | None] | None:
    """For a rectifier node, ``(its input node's name, its cap)`` (cap ``None`` for ReLU); else ``None``.

    The optimizer ascends a rectified unit through its input, as the authors' toolbox does: Caffe's
    ``backward_from_layer("conv5")`` starts below the in-place ``relu5``, so a unit that is 0 on the starting
    noise still has a gradient.  A network torch.fx cannot trace gives ``None``.
    """
    try:
        traced_model = traced(model)
    except UntraceableError:
        return None
    node = traced_model.resolve(name)
    top = rectifier_top(traced_model, node)
    source = node.args[0] if node.args else None
    if top is False or not isinstance(source, fx.Node) or source not in traced_model.qualname:
        return None
    return traced_model.qualname[source], top


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
    with torch.no_grad():
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


__all__ = ["LayerError", "LayerInfo", "TracedModel", "UntraceableError", "groups", "list_layers", "rectifier_input",
           "rectifier_top",
           "teaching_layer", "traced", "truncated"]
