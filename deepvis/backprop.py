"""Backward images of one unit: saliency, deconvnet and guided backprop.

(Over 300 lines: the three modes, their rectifier rule, its graph rewriting and the unit/seed validation
belong together.)

Conventions
-----------
* ``inputs`` is a preprocessed batch ``(N, C, H, W)`` (``C = 3`` for the
  registered models; see :mod:`deepvis.images`).  The result is the gradient
  of the seeded unit with respect to that tensor -- the network's input space
  (normalized pixels), same shape, detached, on the device of ``inputs``.
  Images of a batch are independent: image ``n``'s gradient comes from image
  ``n``'s unit only (the model must be in ``eval()`` mode, as loaded models are).
* ``layer`` is a dotted module name whose output is ``(N, C, H, W)`` or
  ``(N, K)``; ``unit`` is a ``channel`` or ``(channel, y, x)`` in that output.
* Modes (:data:`MODES`) differ only in how a gradient ``g`` passes a rectifier
  (``nn.ReLU``, ``nn.ReLU6``, or ``nn.Hardtanh`` with ``min_val == 0``) whose
  forward input was ``a``; every other operation uses its true gradient:

  - ``"saliency"``: the true gradient, ``g * [0 < a < top]`` (Simonyan et al.).
  - ``"deconv"``: ``max(g, 0)``, ignoring the forward mask (Zeiler & Fergus).
  - ``"guided"``: ``max(g, 0) * [0 < a < top]`` (Springenberg et al.).

  ``top`` is 6 for ReLU6 and infinite for ReLU.
* Seeds (:data:`SEEDS`) choose the gradient the backward pass starts from at
  ``layer``: ``"map"`` puts the unit's own activation map (its channel's
  values; the unit's value for a vector layer) there and zero elsewhere, as
  the deep-visualization-toolbox does; ``"point"`` puts a one at
  ``(channel, y, x)``, or for a bare ``channel`` at each image's strongest
  position of that channel (first arg-max of the flattened map).  The default
  is ``"map"`` for a bare channel and ``"point"`` for ``(channel, y, x)``.
  For ReLU6 (``top = 6``) the chosen rule is: saliency and guided backprop pass
  nothing where the input was above 6 (the true gradient there is zero, and
  guided backprop is the true mask times positive gradients); deconvnet ignores
  the forward pass entirely, so it passes positive gradients above 6 as well.
* Rectifiers are graph nodes (:mod:`deepvis.graph`), reached whether they are
  modules (``nn.ReLU``, a shared ``nn.ReLU6``), functions (GoogLeNet's
  ``F.relu``) or methods (``x.relu()``): for deconv/guided the traced graph up to
  ``layer`` is copied with every rectifier node replaced by the rule, once per
  (model, layer, mode), and cached.  The model is shared by every session and is
  never modified: no hooks, no replaced modules, no mode change; no ``.grad`` is
  written (``torch.autograd.grad``).  The pass stops at ``layer``.
* Non-ReLU activations (SiLU, GELU, ...) have no deconv/guided rule: a graph that
  has one before ``layer`` makes ``"deconv"``/``"guided"`` raise
  :class:`UnsupportedModeError`, as does a network torch.fx cannot trace.
  Saliency works for every differentiable network.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from deepvis.activations import capture
from deepvis.errors import DeepvisError
from deepvis.graph import TracedModel, UntraceableError, forward_pass, node_name, rectifier_top, traced
from deepvis.images import model_view, to_batch
from deepvis.models import LoadedModel

MODES = ("saliency", "deconv", "guided")
SEEDS = ("map", "point")

# Activations (module classes and function names) that have no deconv/guided rule at all.
_OTHER_ACTIVATIONS = frozenset({
    "silu", "gelu", "hardswish", "elu", "leaky_relu", "mish", "selu", "celu", "softplus", "prelu", "rrelu", "glu",
    "SiLU", "GELU", "Hardswish", "ELU", "LeakyReLU", "Mish", "SELU", "CELU", "Softplus", "PReLU", "RReLU", "GLU",
})


class BackpropError(DeepvisError):
    """A backward image cannot be made as asked; the message says why."""


class UnsupportedModeError(BackpropError):
    """Deconvnet/guided backprop cannot be applied to this network (only saliency can)."""


@dataclass(frozen=True)
class Unit:
    """One unit of a layer: a channel, optionally at a spatial position ``(y, x)``."""

    channel: int
    y: int | None = None
    x: int | None = None

    def __post_init__(self) -> None:
        if (self.y is None) != (self.x is None):
            raise BackpropError("Give both y and x for a unit position, or neither.")
        for name in ("channel", "y", "x"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise BackpropError(f"The unit's {name} must be a non-negative integer, not {value!r}.")

    @property
    def has_position(self) -> bool:
        return self.y is not None

    @classmethod
    def parse(cls, unit: Unit | int | tuple[int, int, int] | Any) -> Unit:
        """Accept ``Unit``, ``channel`` or ``(channel, y, x)`` (numpy integers too)."""
        if isinstance(unit, Unit):
            return unit
        try:
            if isinstance(unit, (tuple, list)):
                if len(unit) == 1:
                    return cls(_index(unit[0]))
                if len(unit) == 3:
                    return cls(_index(unit[0]), _index(unit[1]), _index(unit[2]))
                raise BackpropError(f"A unit is a channel or (channel, y, x), not {tuple(unit)!r}.")
            return cls(_index(unit))
        except TypeError:
            raise BackpropError(f"A unit is a channel or (channel, y, x), not {unit!r}.") from None


def _index(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError
    return operator.index(value)


@dataclass(frozen=True)
class ModeSupport:
    """Which modes a network supports; ``reason`` says why when it is saliency only."""

    modes: tuple[str, ...]
    reason: str | None = None


class _RectifierRule(torch.autograd.Function):
    """Forward: the rectifier's own output; backward: the deconv or guided rule."""

    @staticmethod
    def forward(ctx: Any, pre: torch.Tensor, top: float | None, guided: bool) -> torch.Tensor:
        ctx.guided = guided
        if guided:
            mask = pre > 0 if top is None else (pre > 0) & (pre < top)
            ctx.save_for_backward(mask)
        return pre.clamp(min=0.0) if top is None else pre.clamp(0.0, top)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        positive = grad.clamp(min=0.0)
        if ctx.guided:
            (mask,) = ctx.saved_tensors
            positive = positive * mask
        return positive, None, None


def _rectify(pre: torch.Tensor, top: float | None, guided: bool) -> torch.Tensor:
    """What a rectifier node becomes in a deconv/guided graph (see module docstring)."""
    return _RectifierRule.apply(pre, top, guided)


def _other_activation(traced_model: TracedModel, nodes) -> str | None:
    for node in nodes:
        module = traced_model.submodule(node)  # a leaf module (torchvision's MLP) may hide its activation
        inside = [type(m).__name__ for m in module.modules()] if module is not None else []
        name = next((n for n in (node_name(traced_model, node), *inside) if n.rstrip("_") in _OTHER_ACTIVATIONS), None)
        if name is not None:
            return (f"This network uses the activation {name}, for which deconvnet and guided backprop are "
                    "not defined (they need ReLU or ReLU6); only saliency is available for this network.")
    return None


def _untraceable_reason(exc: UntraceableError) -> str:
    return (f"This network cannot be traced by torch.fx ({exc}), so deconvnet and guided backprop cannot reach "
            "its rectifiers; only saliency is available for this network.")


def _rule_module(model: nn.Module, layer: str, mode: str) -> torch.fx.GraphModule:
    """The cached graph module up to ``layer`` with every rectifier node following ``mode``'s rule."""
    try:
        traced_model = traced(model)
    except UntraceableError as exc:
        raise UnsupportedModeError(_untraceable_reason(exc)) from None

    def build() -> torch.fx.GraphModule:
        graph, _ = traced_model.truncated_graph([layer])
        for node in list(graph.nodes):
            top = rectifier_top(traced_model, node)
            if top is False:
                continue
            with graph.inserting_after(node):
                rule = graph.call_function(_rectify, (node.args[0], top, mode == "guided"))
            node.replace_all_uses_with(rule)
            graph.erase_node(node)
        module = traced_model.module(graph)
        module.meta["problem"] = _other_activation(traced_model, module.graph.nodes)
        return module

    module = traced_model.cached((mode, layer), build)
    if module.meta["problem"]:
        raise UnsupportedModeError(module.meta["problem"])
    return module


def mode_support(model: nn.Module, input_size: int = 224, in_channels: int = 3) -> ModeSupport:
    """Which of :data:`MODES` work for ``model``, read from its traced graph (no forward pass).

    ``input_size`` and ``in_channels`` are kept for callers of the earlier dry-pass version.
    """
    try:
        traced_model = traced(model)
    except UntraceableError as exc:
        return ModeSupport(("saliency",), _untraceable_reason(exc))
    problem = _other_activation(traced_model, traced_model.graph.nodes)
    return ModeSupport(("saliency",), problem) if problem else ModeSupport(MODES)


def supported_modes(model: nn.Module, input_size: int = 224, in_channels: int = 3) -> tuple[str, ...]:
    """Shorthand for ``mode_support(...).modes``."""
    return mode_support(model, input_size, in_channels).modes


def _model_device(model: nn.Module) -> torch.device | None:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return None


def _seed(output: torch.Tensor, layer: str, unit: Unit, seed: str) -> torch.Tensor:
    """The output gradient at ``layer`` for ``unit`` (see module docstring)."""
    if output.dim() not in (2, 4):
        raise BackpropError(f"Layer {layer!r} gives shape {tuple(output.shape[1:])}; a unit needs "
                            "a (C, H, W) or (K,) output.")
    channels = output.shape[1]
    if unit.channel >= channels:
        raise BackpropError(f"Channel {unit.channel} does not exist: layer {layer!r} has {channels} "
                            f"channels (0 to {channels - 1}).")
    if output.dim() == 2 and unit.has_position:
        raise BackpropError(f"Layer {layer!r} is a vector of {channels} units; give the unit as one number.")
    if unit.has_position:
        height, width = output.shape[2:]
        if unit.y >= height or unit.x >= width:
            raise BackpropError(f"Position (y={unit.y}, x={unit.x}) is outside layer {layer!r}, whose maps "
                                f"are {height} x {width} (y 0 to {height - 1}, x 0 to {width - 1}).")
    if seed == "map" and unit.has_position:
        raise BackpropError("The 'map' seed uses the whole activation map of a channel; give the unit "
                            "as a channel, or use the 'point' seed for a position.")

    values = output.detach()
    gradient = torch.zeros_like(values)
    if seed == "map":
        gradient[:, unit.channel] = values[:, unit.channel]
    elif output.dim() == 2:
        gradient[:, unit.channel] = 1.0
    elif unit.has_position:
        gradient[:, unit.channel, unit.y, unit.x] = 1.0
    else:
        flat = gradient[:, unit.channel].flatten(1)  # a view into gradient
        flat.scatter_(1, values[:, unit.channel].flatten(1).argmax(dim=1, keepdim=True), 1.0)
    return gradient


def backprop(model: nn.Module, inputs: torch.Tensor, layer: str, unit: Unit | int | tuple[int, int, int],
             mode: str = "guided", seed: str | None = None) -> torch.Tensor:
    """Gradient of ``unit`` at ``layer`` w.r.t. ``inputs`` under ``mode``; see the module docstring.

    ``unit=channel`` seeds with the channel's activation map by default
    (``seed="point"``: a one at its strongest position in each image);
    ``unit=(channel, y, x)`` seeds with a one at that position.  Raises
    :class:`BackpropError` for a bad mode, seed or unit,
    :class:`UnsupportedModeError` when ``mode`` cannot be applied to this
    network, and :class:`deepvis.activations.LayerError` for a bad layer.
    """
    if mode not in MODES:
        raise BackpropError(f"Unknown mode {mode!r}; choose one of: {', '.join(MODES)}.")
    parsed = Unit.parse(unit)
    if seed is None:
        seed = "point" if parsed.has_position else "map"
    if seed not in SEEDS:
        raise BackpropError(f"Unknown seed {seed!r}; choose one of: {', '.join(SEEDS)}.")
    if not isinstance(inputs, torch.Tensor) or inputs.dim() != 4 or not inputs.is_floating_point():
        shape = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
        raise BackpropError(f"inputs must be a float batch (N, C, H, W), got {shape}.")

    if torch.is_inference_mode_enabled():
        raise BackpropError("Backward images need gradients; call them outside torch.inference_mode().")

    device = _model_device(model) or inputs.device
    with torch.enable_grad():
        start = inputs.detach().to(device).requires_grad_(True)
        if mode == "saliency":
            output = capture(model, start, layer, keep_graph=True)[layer]
        else:
            rule_module = _rule_module(model, layer, mode)
            with forward_pass():
                output = rule_module(start)[layer]
        gradient_at_layer = _seed(output, layer, parsed, seed)
        if not output.requires_grad:
            raise BackpropError(f"Layer {layer!r} does not depend differentiably on the input.")
        (gradient,) = torch.autograd.grad(output, start, grad_outputs=gradient_at_layer, allow_unused=True)
    if gradient is None:
        gradient = torch.zeros_like(start)
    return gradient.detach().to(inputs.device)


def backward(loaded: LoadedModel, image: Image.Image | np.ndarray, layer: str, unit: Unit | int | tuple[int, int, int],
             mode: str = "guided", seed: str | None = None) -> torch.Tensor:
    """:func:`backprop` for a photo as ``loaded`` sees it (its centre crop, :func:`deepvis.images.model_view`):
    the ``(3, S, S)`` gradient w.r.t. the network's input; ``layer`` may be a module path."""
    view = np.asarray(image) if isinstance(image, np.ndarray) else model_view(image, loaded.spec)
    inputs = to_batch(view, loaded.spec.normalization, loaded.device)
    return backprop(loaded.module, inputs, loaded.layer(layer).name, unit, mode, seed)[0]


def saliency(model: nn.Module, inputs: torch.Tensor, layer: str, unit: Unit | int | tuple[int, int, int],
             seed: str | None = None) -> torch.Tensor:
    """Plain gradient of ``unit`` w.r.t. ``inputs`` (``(N, C, H, W)`` in, same shape out).

    ``unit=channel`` seeds with the channel's activation map by default
    (``seed="point"``: a one at its strongest position in each image);
    ``unit=(channel, y, x)`` seeds with a one at that position.
    """
    return backprop(model, inputs, layer, unit, "saliency", seed)


def deconvnet(model: nn.Module, inputs: torch.Tensor, layer: str, unit: Unit | int | tuple[int, int, int],
              seed: str | None = None) -> torch.Tensor:
    """Deconvnet image of ``unit``: at each ReLU/ReLU6 only positive gradients pass, the forward mask is ignored.

    Seeds and errors as in :func:`backprop`.
    """
    return backprop(model, inputs, layer, unit, "deconv", seed)


def guided_backprop(model: nn.Module, inputs: torch.Tensor, layer: str, unit: Unit | int | tuple[int, int, int],
                    seed: str | None = None) -> torch.Tensor:
    """Guided backprop image of ``unit``: at each ReLU/ReLU6 the forward mask and positive gradients only.

    Seeds and errors as in :func:`backprop`.
    """
    return backprop(model, inputs, layer, unit, "guided", seed)
