"""Activation capture, predictions and per-channel statistics.

Conventions
-----------
* ``inputs`` is a preprocessed batch ``(N, 3, H, W)`` on the model's device
  (see :mod:`deepvis.images`).
* ``capture`` returns ``{layer name: tensor}`` with the batch dimension kept,
  e.g. ``(N, C, H, W)`` for a conv layer.  Layers are graph nodes
  (:mod:`deepvis.graph`); the pass runs a cached graph module that ends at the
  deepest requested node and shares the model's weights.  A tensor is taken the
  moment its node runs (a later in-place ReLU cannot change it).
* Without ``keep_graph`` the pass runs under ``torch.no_grad()``; with it the
  returned tensors stay attached to ``inputs``' graph (used for gradients).
* The model is shared and nothing touches it: no hooks, no mode change, no
  ``.grad``.  Only a network torch.fx cannot trace is captured the old way, by
  module hooks that act only in the calling thread and are gone when ``capture``
  returns or raises (see :mod:`deepvis.hooks`); its layers are module paths.
* A vision transformer's token layer ``(N, T, D)`` comes back as ``(N, D, P, P)`` patch maps, and
  ``"<layer>[cls]"`` as its class token ``(N, D)`` (:mod:`deepvis.tokens`; the graph module applies it,
  or here the module-hook capture).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from deepvis import tokens
from deepvis.errors import DeepvisError
from deepvis.graph import LayerError, UntraceableError, forward_pass, truncated
from deepvis.hooks import StopForward, owned_hooks, run_until_stopped
from deepvis.images import model_view, to_batch
from deepvis.models import LoadedModel

__all__ = ["LayerError", "capture", "predict", "analyze", "channel_stats", "top_predictions"]


def capture(model: nn.Module, inputs: torch.Tensor, layers: Sequence[str] | str,
            keep_graph: bool = False, folded: bool = False) -> dict[str, torch.Tensor]:
    """Outputs of the named layers of ``model`` for ``inputs``; see module docstring (``folded``:
    :func:`deepvis.graph.truncated`'s BatchNorm-folded copy, for the optimizers' many passes)."""
    names = [layers] if isinstance(layers, str) else list(dict.fromkeys(layers))
    if not names:
        raise LayerError("capture needs at least one layer name")
    try:
        module = truncated(model, names, folded)
    except UntraceableError:
        return _capture_with_hooks(model, inputs, names, keep_graph)
    with forward_pass():  # the graph module's own forward: it is private, so no hook of its own to run
        if keep_graph:
            outputs = module.forward(inputs)
        else:
            with torch.no_grad():
                outputs = module.forward(inputs)
    for name, value in outputs.items():
        if not isinstance(value, torch.Tensor):
            raise LayerError(f"Layer {name!r} does not return a single tensor.")
    return outputs  # a new dict on every call


def _capture_with_hooks(model: nn.Module, inputs: torch.Tensor, names: list[str],
                        keep_graph: bool) -> dict[str, torch.Tensor]:
    """Module-level capture for a network torch.fx cannot trace (thread-owned hooks)."""
    modules = {}
    for name in names:
        try:
            modules[name] = model.get_submodule(tokens.split(name)[0])
        except AttributeError:
            raise LayerError(f"The model has no layer {name!r}.") from None

    captured: dict[str, torch.Tensor] = {}

    def keeper(name: str):
        def keep(_module: nn.Module, _args: tuple, output: object) -> None:
            if not isinstance(output, torch.Tensor):
                raise LayerError(f"Layer {name!r} does not return a single tensor.")
            if name in captured:
                raise LayerError(f"Layer {name!r} runs more than once per forward pass; pick its block instead.")
            captured[name] = output.clone()
            if len(captured) == len(names):
                raise StopForward

        return keep

    with owned_hooks() as hooks, (nullcontext() if keep_graph else torch.no_grad()):
        for name, module in modules.items():
            hooks.forward(module, keeper(name))
        run_until_stopped(model, inputs)
    missing = [n for n in names if n not in captured]
    if missing:
        raise LayerError(f"Layer(s) {', '.join(missing)} did not run in the forward pass.")
    prefix, has_class = tokens.declared(model)
    return {name: tokens.class_token(value, prefix, has_class) if tokens.split(name)[1]
            else tokens.as_maps(value, prefix) for name, value in captured.items()}


@dataclass(frozen=True)
class Prediction:
    label: str
    index: int
    prob: float


def predict(model: nn.Module, inputs: torch.Tensor, class_names: Sequence[str], top: int = 5) -> list[list[Prediction]]:
    """Top-``top`` softmax predictions for each image in the batch, best first."""
    with forward_pass(), torch.no_grad():
        logits = model(inputs)
    return [top_predictions(row, class_names, top) for row in logits]


def top_predictions(logits: torch.Tensor, class_names: Sequence[str], top: int = 5) -> list[Prediction]:
    """Softmax of one image's ``(K,)`` logits, the ``top`` best first."""
    if not 1 <= top <= len(class_names):
        raise DeepvisError(f"top must be between 1 and {len(class_names)}, not {top}")
    values, indices = (logits.detach() if logits.requires_grad else logits).float().softmax(dim=0).topk(top)
    return [Prediction(class_names[i], i, p) for p, i in zip(values.tolist(), indices.tolist())]


@dataclass(frozen=True)
class ChannelStats:
    """Per-channel statistics of one image's activation ``(C, H, W)``."""

    mean: torch.Tensor  # (C,)
    max: torch.Tensor  # (C,)
    argmax: torch.Tensor  # (C, 2) as (y, x)

    def as_records(self) -> list[dict[str, object]]:
        return [
            {"channel": c, "mean": float(m), "max": float(x), "argmax": [int(a[0]), int(a[1])]}
            for c, (m, x, a) in enumerate(zip(self.mean.tolist(), self.max.tolist(), self.argmax.tolist()))
        ]


def channel_stats(activation: torch.Tensor) -> ChannelStats:
    """Mean, max and where the max is, per channel of ``(C, H, W)`` (or ``(K,)``, as ``(K, 1, 1)``)."""
    act = (activation.detach() if activation.requires_grad else activation).float()
    if act.dim() == 1:
        act = act[:, None, None]
    if act.dim() != 3:
        raise DeepvisError(f"channel_stats needs (C, H, W) or (K,), got shape {tuple(activation.shape)}")
    flat = act.flatten(1)
    maxima, where = flat.max(dim=1)
    width = act.shape[2]
    if where.device.type == "cpu":  # the same integers, without three more tensor ops
        argmax = torch.from_numpy(np.stack(np.divmod(where.numpy(), width), axis=1))
    else:
        argmax = torch.stack([where // width, where % width], dim=1).cpu()
    return ChannelStats(flat.mean(dim=1).cpu(), maxima.cpu(), argmax)


@dataclass(frozen=True)
class ImageAnalysis:
    """One photo through one model: what the network saw, its top classes, one layer's output."""

    view: np.ndarray  # (S, S, 3) uint8, the centre crop the network saw
    predictions: list[Prediction]
    layer: str
    activation: torch.Tensor  # (C, H, W) or (K,), float32 on the CPU
    stats: ChannelStats

    @property
    def is_spatial(self) -> bool:
        return self.activation.dim() == 3

    def channel_map(self, channel: int) -> np.ndarray:
        """Channel ``channel``'s ``(H, W)`` map as float32 (``(1, 1)`` for a vector layer)."""
        if not 0 <= channel < self.activation.shape[0]:
            raise DeepvisError(f"Unit {channel} is outside this layer's 0-{self.activation.shape[0] - 1}.")
        return self.activation[channel].reshape(self.activation.shape[1:] or (1, 1)).numpy()


def analyze(loaded: LoadedModel, image: Image.Image, layer: str, top: int = 5, folded: bool = False) -> ImageAnalysis:
    """Predictions and ``layer``'s activation for one photo, from a single forward pass (``folded``: on the
    BatchNorm-folded copy, :func:`capture`; the live view's frames take it)."""
    loaded.layer(layer)  # a clear error for an unknown layer
    view = model_view(image, loaded.spec)
    inputs = to_batch(view, loaded.spec.normalization, loaded.device)
    outputs = capture(loaded.module, inputs, [layer, loaded.logits_layer], folded=folded)
    logits, names = outputs[loaded.logits_layer][0], loaded.class_names
    # A feature extractor (no class names, or names that do not match its last layer) predicts nothing.
    named = bool(names) and logits.dim() == 1 and logits.numel() == len(names)
    predictions = top_predictions(logits, names, min(top, len(names))) if named else []
    activation = outputs[layer][0].float().cpu()
    if activation.dim() == 3 and activation.shape[1:] == (1, 1):
        activation = activation.flatten()
    return ImageAnalysis(view, predictions, layer, activation, channel_stats(activation))
