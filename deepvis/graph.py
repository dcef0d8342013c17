"""Layers as the network computes them: nodes of the traced forward graph.

(Over 300 lines: tracing, the private twin, truncation, BatchNorm folding and the trace lock are one mechanism.)

Conventions
-----------
* **A layer is a node** of the model's forward graph, traced once in eval mode by torchvision's feature-extraction
  tracer (``NodePathTracer``) and named as ``torchvision.models.feature_extraction.get_graph_node_names`` names
  it: ``_blocks.9._swish_1`` (EfficientNet-Lite's shared ReLU6, second call in block 9), ``layer3.2.relu_2``
  (third ReLU call of a ResNet bottleneck), ``inception4a.branch2.1.relu`` (GoogLeNet's functional ``F.relu``).  A
  module path (``_blocks.9``, ``layer3``) names the last node inside that module, as torchvision's
  ``return_nodes`` do, so block outputs keep their old names.
* **The shared model is never traced, hooked or switched to train mode.**  Tracing runs on a private *twin*: a
  copy of the module tree whose parameters and buffers are the model's own tensors (no weight is copied), kept in
  eval mode.  Every graph module built here hangs off that twin, so running one is an ordinary stateless forward
  pass: any number of threads can run them at once.  (torchvision's ``create_feature_extractor`` traces twice, once
  in train mode, which concurrent sessions must never see, at ~0.3 s a request on Lite0; so the one eval trace is
  kept and each request only moves the graph's output, with FX's own dead-code elimination.)
* **Truncated modules.**  ``truncated(model, names)`` is a ``GraphModule`` computing ``{name: tensor}`` for
  exactly those nodes and nothing after the deepest one.  It is built once per (model, names) and cached (LRU,
  :data:`CACHE_SIZE` per model); a request seen before is found with one dictionary read.  A requested node that
  is not the deepest is cloned as soon as it is computed, so a later in-place op (``nn.ReLU(inplace=True)``)
  cannot change it.
* Which nodes are offered to a person, and how they are described, is :mod:`deepvis.layers`.
* **Tracing excludes every forward pass.**  torch.fx traces by patching ``nn.Module.__call__`` for the whole
  process, so a forward pass in another thread during a trace would be recorded by (and break) that trace.  Every
  forward pass deepvis runs holds :func:`forward_pass` (a shared lock; passes run together) and every trace holds
  it exclusively; a trace waits for the passes in flight and is the only thing running while it lasts (about
  0.1-0.3 s, once per model).
* A model the tracer cannot follow (data-dependent control flow, say) raises :class:`UntraceableError`; callers
  fall back to module-level layers.
* The graph takes one input, the image batch: a forward's further arguments with defaults (timm's
  ``attn_mask=None``) are bound to those defaults.  Each requested output of a truncated module ends in
  :func:`deepvis.tokens.as_maps` (a vision transformer's ``(N, T, D)`` tokens become ``(N, D, P, P)`` maps; any
  other tensor passes unchanged), or for a ``"<layer>[cls]"`` name in :func:`deepvis.tokens.class_token`.
"""

from __future__ import annotations

import copy
import inspect
import math
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager

import torch
import torchvision
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_conv_bn_weights
from torchvision.models.feature_extraction import NodePathTracer
from deepvis import redirect, tokens
from deepvis.errors import DeepvisError

CACHE_SIZE = 32

class _SharedExclusiveLock:
    """Many holders of the shared side at once (``with lock:``, no generator per use), or one of the exclusive side.

    A waiting exclusive holder goes first (new shared holders wait), so a stream of forward passes cannot
    starve a trace; a thread that already holds the shared side may take it again (nested passes).
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()  # taken directly (a C lock) on the shared side; the condition's lock
        self._condition = threading.Condition(self._mutex)
        self._shared = 0
        self._exclusive = False
        self._waiting = 0  # exclusive holders waiting
        self._mine = threading.local()

    def __enter__(self) -> None:
        depth = getattr(self._mine, "depth", 0)
        with self._mutex:
            while self._exclusive or (self._waiting and depth == 0):
                self._condition.wait()
            self._shared += 1
        self._mine.depth = depth + 1

    def __exit__(self, *exc: object) -> None:
        self._mine.depth -= 1
        with self._mutex:
            self._shared -= 1
            if self._waiting:  # only an exclusive holder waits for shared ones to leave
                self._condition.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._condition:
            self._waiting += 1
            while self._exclusive or self._shared:
                self._condition.wait()
            self._waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._condition:
                self._exclusive = False
                self._condition.notify_all()


_TRACING = _SharedExclusiveLock()


def forward_pass() -> AbstractContextManager[None]:
    """Hold this while running any model forward, so that no trace patches ``nn.Module`` meanwhile."""
    return _TRACING


class UntraceableError(RuntimeError):
    """torch.fx cannot trace this model; the message says where it stopped."""


class LayerError(DeepvisError):
    """A requested layer does not exist or has no single tensor output."""


def _tracer() -> NodePathTracer:
    # The keyword arguments get_graph_node_names uses, so node names match it exactly.
    return NodePathTracer(autowrap_modules=(math, torchvision.ops),
                          leaf_modules=[m for _, m in inspect.getmembers(torchvision.ops, inspect.isclass)
                                        if issubclass(m, nn.Module)])


def _signature(model: nn.Module) -> tuple[tuple[dict, str, object], ...]:
    """Where the first parameter and buffer live (``.to(device)`` keeps parameter objects but replaces buffers):
    each ``(dict, key, object)`` link from the model down to them, for :func:`traced` to check in constant time."""
    links = []
    for kind, first in (("_parameters", next(model.named_parameters(), None)),
                        ("_buffers", next(model.named_buffers(), None))):
        if first is not None:
            *path, key = first[0].split(".")
            module = model
            for part in path:
                links.append((module._modules, part, module._modules[part]))
                module = module._modules[part]
            links.append((getattr(module, kind), key, first[1]))
    return tuple(links)


class TracedModel:
    """One eval-mode trace of a model, on its twin, with a cache of truncated modules."""

    def __init__(self, model: nn.Module) -> None:
        memo = {id(t): t for t in (*model.parameters(), *model.buffers())}
        self.twin = copy.deepcopy(model, memo).eval()  # shares every tensor; see module docstring
        self.signature = _signature(model)
        tracer = _tracer()
        try:
            with _TRACING.exclusive():
                self.graph = tracer.trace(self.twin)
        except Exception as exc:  # torch.fx raises TraceError, TypeError, NotImplementedError, ...
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UntraceableError(f"{type(exc).__name__}: {first[:160]}") from None
        _bind_defaults(self.graph)
        self.prefix, self.has_class = tokens.declared(model)
        live = set(self.graph.nodes)
        self.qualname: dict[fx.Node, str] = {n: q for n, q in tracer.node_to_qualname.items() if n in live}
        self.by_name: dict[str, fx.Node] = {name: node for node, name in self.qualname.items()}
        self.order = {node: i for i, node in enumerate(self.graph.nodes)}
        self._lock = threading.Lock()
        self._modules: OrderedDict[tuple, fx.GraphModule] = OrderedDict()
        self._seen: dict[tuple, tuple[tuple, fx.GraphModule]] = {}  # (names, folded) -> (key, module) in _modules
        self._folded: tuple[nn.Module, frozenset[str]] | None = None
        self._bias_edits: list[tuple[fx.Node, str]] = []

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

    def truncated_graph(self, names: Sequence[str], bias_edits: Sequence[tuple[fx.Node, str]] = ()
                        ) -> tuple[fx.Graph, dict[str, fx.Node]]:
        """A copy of the graph whose output is ``{name: node}``, nothing computed after the deepest
        (``bias_edits``: functional convolutions given the folded twin's bias, :meth:`folded_twin`)."""
        targets = {name: self.resolve(tokens.split(name)[0]) for name in names}
        deepest = max(targets.values(), key=self.order.__getitem__)
        graph = fx.Graph()
        mapping: dict[fx.Node, fx.Node] = {}
        graph.graph_copy(self.graph, mapping)
        for conv, bias_target in bias_edits:
            copied = mapping[conv]
            with graph.inserting_before(copied):
                bias = graph.get_attr(bias_target)
            copied.args = (copied.args[0], copied.args[1], bias, *copied.args[3:])
        outputs = {}
        for name, node in targets.items():
            copied = mapping[node]
            if node is not deepest:  # clone at once: a later in-place op must not change it
                with graph.inserting_after(copied):
                    copied = graph.call_function(torch.clone, (copied,))
            with graph.inserting_after(copied):  # tokens as maps, or the class token (module docstring)
                copied = graph.call_function(tokens.class_token, (copied, self.prefix, self.has_class)) \
                    if tokens.split(name)[1] else graph.call_function(tokens.as_maps, (copied, self.prefix))
            outputs[name] = copied
        graph.output(outputs)
        return graph, outputs

    def module(self, graph: fx.Graph, root: nn.Module | None = None) -> fx.GraphModule:
        module = fx.GraphModule(self.twin if root is None else root, graph)
        module.graph.eliminate_dead_code(is_impure_node=lambda n: n.op in ("placeholder", "output"))
        module.recompile()
        return module.eval()

    def truncated(self, names: Sequence[str], folded: bool = False) -> fx.GraphModule:
        request = (tuple(names), folded)
        key, module = self._seen.get(request, (None, None))  # a request seen before: one dict read
        with self._lock:
            if module is not None and self._modules.get(key) is module:
                self._modules.move_to_end(key)
                return module
        key, build = ("capture", request[0]), lambda: self.module(self.truncated_graph(names)[0])
        if folded:
            twin, convs = self.folded_twin()
            if not any(self.qualname.get(self.resolve(tokens.split(name)[0])) in convs for name in names):
                key, build = ("folded", request[0]), lambda: self.module(self._redirectable(names), twin)
        module = self.cached(key, build)
        with self._lock:  # requests whose module is no longer cached are forgotten (a bound, as for the cache)
            self._seen = {**{r: v for r, v in self._seen.items() if v[0] in self._modules}, request: (key, module)}
        return module

    def _redirectable(self, names: Sequence[str]) -> fx.Graph:
        """The folded truncated graph, functional rectifiers pointed at :func:`deepvis.redirect.rectify`."""
        graph, _ = self.truncated_graph(names, self._bias_edits)
        redirect.wrap_functional(graph, lambda node: False if node.op == "call_module" else rectifier_top(self, node))
        return graph

    def folded_twin(self) -> tuple[nn.Module, frozenset[str]]:
        """A private copy of the twin with each eval BatchNorm folded into the convolution that only feeds it:
        the convolution's weight becomes ``W · γ/σ`` and its bias ``(b − μ) · γ/σ + β``, the BatchNorm an
        ``Identity`` (so every node keeps its name and the BatchNorm's output its value, up to float
        rounding).  Also the names of the folded convolution nodes, whose own output the copy no longer
        computes.  Built once; the copy has its own (folded) weights."""
        with self._lock:
            if self._folded is not None:
                return self._folded
        calls: dict[str, int] = {}
        for node in self.graph.nodes:
            if node.op in ("call_module", "get_attr"):
                calls[node.target] = calls.get(node.target, 0) + 1
        redirect.wrap_rectifiers(twin := copy.deepcopy(self.twin))  # plain unless an optimizer asks
        convs, bias_edits = set(), []
        for node in self.graph.nodes:
            norm = self.submodule(node)
            conv = node.args[0] if node.args else None
            if not isinstance(norm, nn.BatchNorm2d) or not norm.track_running_stats or calls[node.target] != 1 \
                    or not isinstance(conv, fx.Node) or len(conv.users) != 1 or conv.kwargs:
                continue
            if conv.op == "call_module" and isinstance(self.submodule(conv), nn.Conv2d) and calls[conv.target] == 1:
                twin.set_submodule(conv.target, fuse_conv_bn_eval(self.submodule(conv), norm).requires_grad_(False))
            elif conv.op == "call_function" and conv.target in (torch.conv2d, nn.functional.conv2d) \
                    and len(conv.args) >= 3 and isinstance(conv.args[1], fx.Node) \
                    and conv.args[1].op == "get_attr" and calls[conv.args[1].target] == 1 \
                    and (conv.args[2] is None or (isinstance(conv.args[2], fx.Node) and conv.args[2].op == "get_attr")):
                owner, _ = conv.args[1].target.rsplit(".", 1) if "." in conv.args[1].target else ("", "")
                weight = self.twin.get_parameter(conv.args[1].target)
                bias = self.twin.get_parameter(conv.args[2].target) if conv.args[2] is not None else None
                folded_weight, folded_bias = fuse_conv_bn_weights(weight, bias, norm.running_mean, norm.running_var,
                                                                  norm.eps, norm.weight, norm.bias)
                module = twin.get_submodule(owner)
                setattr(module, conv.args[1].target.rsplit(".", 1)[-1], folded_weight.requires_grad_(False))
                bias_target = f"{owner}.deepvis_folded_bias" if owner else "deepvis_folded_bias"
                module.register_parameter(bias_target.rsplit(".", 1)[-1], folded_bias.requires_grad_(False))
                bias_edits.append((conv, bias_target))
            else:
                continue
            twin.set_submodule(node.target, nn.Identity())
            convs.add(self.qualname[conv])
        with self._lock:
            self._folded = (twin.eval(), frozenset(convs))
            self._bias_edits = bias_edits
            return self._folded

    def submodule(self, node: fx.Node) -> nn.Module | None:
        return self.twin.get_submodule(node.target) if node.op == "call_module" else None


def _bind_defaults(graph: fx.Graph) -> None:
    """Replace each placeholder after the first by its default, where it has a plain one (module docstring)."""
    for placeholder in [n for n in graph.nodes if n.op == "placeholder"][1:]:
        default = placeholder.args[0] if placeholder.args else ...
        if not (default is None or isinstance(default, (bool, int, float, str))):
            continue  # no default, or one the generated code cannot spell
        for user in list(placeholder.users):
            user.args = fx.node.map_arg(user.args, lambda n: default if n is placeholder else n)
            user.kwargs = fx.node.map_arg(user.kwargs, lambda n: default if n is placeholder else n)
        graph.erase_node(placeholder)


_TRACES: weakref.WeakKeyDictionary[nn.Module, TracedModel | UntraceableError] = weakref.WeakKeyDictionary()
_TRACES_LOCK = threading.Lock()


def traced(model: nn.Module) -> TracedModel:
    """The cached trace of ``model`` (made on first use); raises :class:`UntraceableError`.

    A model whose first parameter or buffer was replaced since (``.to(device)`` replaces buffers) is traced
    anew; swapping other submodules after the first use is not noticed (nothing in deepvis does it).
    """
    found = _TRACES.get(model)  # one dict read (atomic); a miss or a stale trace takes the lock below
    if isinstance(found, UntraceableError):
        raise found
    if found is not None and all(table.get(key) is value for table, key, value in found.signature):
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


def truncated(model: nn.Module, names: Sequence[str], folded: bool = False) -> fx.GraphModule:
    """The cached graph module computing ``{name: tensor}`` for ``names`` (see module docstring); ``folded``:
    on the copy with BatchNorms folded into their convolutions (:meth:`TracedModel.folded_twin`; the same
    values up to float rounding, about 10 % faster on a CPU), unless a requested node is a folded convolution."""
    return traced(model).truncated(list(dict.fromkeys(names)), folded)


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
    name = str(getattr(node.target, "__name__", node.target) if node.op == "call_function" else node.target)
    if name.rstrip("_") in ("relu", "relu6"):
        return 6.0 if name.rstrip("_") == "relu6" else None
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
    base, is_class = tokens.split(name)
    node = traced_model.resolve(base)
    top = rectifier_top(traced_model, node)
    source = node.args[0] if node.args else None
    if top is False or not isinstance(source, fx.Node) or source not in traced_model.qualname:
        return None
    source_name = traced_model.qualname[source]
    return (tokens.class_layer(source_name) if is_class else source_name), top


__all__ = ["LayerError", "TracedModel", "UntraceableError", "forward_pass", "node_name", "rectifier_input", "rectifier_top", "traced",
           "truncated"]
