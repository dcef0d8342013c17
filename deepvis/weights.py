"""Raw weights of any convolution: the filter behind a layer's channel, as kernels or their norms.

Conventions
-----------
* A layer is a graph node (:mod:`deepvis.graph`).  Its convolution is the nearest one at or above it,
  followed back through single-input nodes (batch norm, rectifiers, padding, …) in the traced graph: for
  ``_blocks.9._swish_1`` on Lite0 that is block 9's depthwise convolution.  Both a convolution module
  (``nn.Conv2d``) and a functional ``conv2d`` on a weight attribute count.  A node reached only through an
  op with several tensor inputs (an addition, a concatenation) has no single convolution: ``None``.
* ``weight`` is ``(C_out, C_in / groups, kh, kw)`` on the CPU, float32; channel ``c`` of the layer is output
  channel ``c`` of the convolution (the ops in between keep channels).  A depthwise filter has one kernel.
* :func:`filter_tiles` draws one channel's kernels ``(C_in / groups, kh, kw)`` as grey tiles, all scaled by one
  bound about zero (mid-grey = 0), so kernels of one filter compare; :func:`kernel_norms` gives every filter's
  per-input-channel L2 norms ``(C_out, C_in / groups)``, how strongly each output listens to each input.
* Only read: the weights are copied from the traced twin, whose tensors are the model's own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import fx, nn

from deepvis.errors import DeepvisError
from deepvis.graph import UntraceableError, traced
from deepvis.models import LoadedModel
from deepvis.render import GridLayout, kernel_tiles

MAX_HOPS = 8  # single-input ops between a layer and its convolution (BN, ReLU6, padding: 2-3 on Lite0)


@dataclass(frozen=True)
class ConvWeights:
    layer: str  # the layer asked for
    conv: str  # the convolution node it comes from
    weight: torch.Tensor  # (C_out, C_in / groups, kh, kw)
    groups: int

    @property
    def depthwise(self) -> bool:
        return self.weight.shape[1] == 1 and self.groups == self.weight.shape[0] and self.groups > 1


def _conv_of(traced_model, node: fx.Node) -> tuple[torch.Tensor, int] | None:
    module = traced_model.submodule(node)
    if isinstance(module, nn.Conv2d):
        return module.weight, module.groups
    if node.op == "call_function" and node.target in (torch.conv2d, nn.functional.conv2d) and len(node.args) >= 2:
        source = node.args[1]
        if isinstance(source, fx.Node) and source.op == "get_attr":
            groups = node.args[6] if len(node.args) > 6 else node.kwargs.get("groups", 1)
            return traced_model.twin.get_parameter(source.target), int(groups)
    return None


def conv_weights(loaded: LoadedModel, layer: str) -> ConvWeights | None:
    """The convolution behind ``layer`` (module docstring), or ``None`` (no single convolution above it)."""
    try:
        traced_model = traced(loaded.module)
    except UntraceableError:
        return None
    node = traced_model.resolve(layer)
    for _ in range(MAX_HOPS):
        found = _conv_of(traced_model, node)
        if found is not None:
            weight, groups = found
            return ConvWeights(layer, traced_model.qualname.get(node, str(node)), weight.detach().float().cpu().clone(),
                               groups)
        inputs = [a for a in node.args if isinstance(a, fx.Node) and a.op != "get_attr"]
        if len(inputs) != 1:
            return None
        node = inputs[0]
    return None


def filter_tiles(weights: ConvWeights, channel: int) -> tuple[np.ndarray, GridLayout]:
    """Channel ``channel``'s kernels as grey tiles scaled about zero by the filter's largest weight."""
    if not 0 <= channel < weights.weight.shape[0]:
        raise DeepvisError(f"{weights.conv} has filters 0 to {weights.weight.shape[0] - 1}, not {channel}.")
    return kernel_tiles(weights.weight[channel])


def kernel_norms(weights: ConvWeights) -> np.ndarray:
    """``(C_out, C_in / groups)``: the L2 norm of every kernel."""
    return weights.weight.flatten(2).norm(dim=2).numpy()
