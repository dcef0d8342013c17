"""Activation capture, predictions and per-channel statistics.

Conventions
-----------
* ``inputs`` is a preprocessed batch ``(N, 3, H, W)`` on the model's device
  (see :mod:`deepvis.images`).
* ``capture`` returns ``{layer name: tensor}`` with the batch dimension kept,
  e.g. ``(N, C, H, W)`` for a conv layer.  Tensors are clones, taken the moment
  the layer returns (a later in-place ReLU cannot change them).  The forward
  pass stops once the deepest requested layer has run.
* Without ``keep_graph`` the pass runs under ``torch.no_grad()``; with it the
  returned tensors stay attached to ``inputs``' graph (used for gradients).
* The model is shared: hooks act only in the calling thread and are gone when
  ``capture`` returns or raises (see :mod:`deepvis.hooks`).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from deepvis.hooks import StopForward, owned_hooks, run_until_stopped


class LayerError(ValueError):
    """A requested layer does not exist or has no single tensor output."""


def capture(model: nn.Module, inputs: torch.Tensor, layers: Sequence[str] | str,
            keep_graph: bool = False) -> dict[str, torch.Tensor]:
    """Outputs of the named layers of ``model`` for ``inputs``; see module docstring."""
    names = [layers] if isinstance(layers, str) else list(dict.fromkeys(layers))
    if not names:
        raise LayerError("capture needs at least one layer name")
    modules = {}
    for name in names:
        try:
            modules[name] = model.get_submodule(name)
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
    return captured


@dataclass(frozen=True)
class Prediction:
    label: str
    index: int
    prob: float


def predict(model: nn.Module, inputs: torch.Tensor, class_names: Sequence[str], top: int = 5) -> list[list[Prediction]]:
    """Top-``top`` softmax predictions for each image in the batch, best first."""
    if not 1 <= top <= len(class_names):
        raise ValueError(f"top must be between 1 and {len(class_names)}, not {top}")
    with torch.no_grad():
        probs = model(inputs).float().softmax(dim=1)
    values, indices = probs.topk(top, dim=1)
    return [
        [Prediction(class_names[i], i, p) for p, i in zip(row_v.tolist(), row_i.tolist())]
        for row_v, row_i in zip(values, indices)
    ]


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
    act = activation.detach().float()
    if act.dim() == 1:
        act = act[:, None, None]
    if act.dim() != 3:
        raise ValueError(f"channel_stats needs (C, H, W) or (K,), got shape {tuple(activation.shape)}")
    flat = act.flatten(1)
    maxima, where = flat.max(dim=1)
    width = act.shape[2]
    argmax = torch.stack([where // width, where % width], dim=1)
    return ChannelStats(flat.mean(dim=1).cpu(), maxima.cpu(), argmax.cpu())
