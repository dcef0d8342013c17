"""Vision-transformer token layers, seen as maps: the one place tokens become channels.

Conventions
-----------
* A **token layer** outputs ``(N, T, D)``: ``T = prefix + P·P`` tokens of ``D`` features, the
  ``prefix`` tokens first (a class token, a distillation token, registers), then the ``P × P`` patch
  tokens in row-major order (timm, torchvision).  Every view sees it as **D channels of P × P maps**,
  ``(N, D, P, P)`` with ``maps[n, d, i, j] = tokens[n, prefix + i·P + j, d]`` (:func:`as_maps`), so the
  activation grid, unit view, optimization, saliency and occlusion work on it as on a convolution.
* The **class token** (token 0, where the model has one) is a layer of its own, named
  ``"<layer>[cls]"`` (:func:`class_layer`): its ``(N, D)`` vector (:func:`class_token`), offered right
  after its layer.
* ``prefix`` is the model's declared ``num_prefix_tokens`` (timm) where it has one (a ``T`` that is a
  square is also accepted, as patch tokens alone); otherwise it is read from ``T``: ``T − P²`` with
  ``P = ⌊√T⌋``, accepted when below ``P`` and at most 8 (a few class/register tokens).  Whether token 0 is a
  class token: the model's ``has_class_token``, else whether it has a ``cls_token``/``class_token``
  tensor, else whether exactly one prefix token was read from ``T``.
* Both functions run inside the forward pass: :func:`deepvis.graph.truncated` ends each requested
  output with one of them (any tensor that is no token layer passes :func:`as_maps` unchanged), and
  the module-hook capture of an untraceable network (:mod:`deepvis.activations`) applies them too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from deepvis.errors import DeepvisError

CLASS_SUFFIX = "[cls]"
MAX_INFERRED_PREFIX = 8


class TokenError(DeepvisError):
    """A class token was asked of a layer that has none."""


def declared(model: nn.Module) -> tuple[int | None, bool | None]:
    """``(prefix tokens, has a class token)`` as ``model`` declares them; ``None`` where it does not."""
    prefix = getattr(model, "num_prefix_tokens", None)
    if isinstance(prefix, bool) or not isinstance(prefix, int) or prefix < 0:
        prefix = None
    has_class = getattr(model, "has_class_token", None)
    if not isinstance(has_class, bool):
        tensors = [getattr(model, name, None) for name in ("cls_token", "class_token")]
        has_class = True if any(isinstance(t, torch.Tensor) for t in tensors) else None
    return prefix, has_class


def layout(shape: Sequence[int], prefix: int | None = None) -> tuple[int, int] | None:
    """``(prefix tokens, P)`` of a token layer's ``(T, D)`` output shape (no batch), or ``None``."""
    if len(shape) != 2:
        return None
    count = int(shape[0])
    candidates = (prefix, 0) if prefix is not None else (count - math.isqrt(count) ** 2,)
    for skip in candidates:
        side = math.isqrt(max(count - skip, 0))
        inferred_ok = prefix is not None or (skip < side and skip <= MAX_INFERRED_PREFIX)
        if side >= 2 and side * side == count - skip and inferred_ok:
            return skip, side
    return None


def has_class_token(skip: int, declared_class: bool | None) -> bool:
    """Whether token 0 of a layer with ``skip`` prefix tokens is a class token (module docstring)."""
    if skip < 1:
        return False
    return declared_class if declared_class is not None else skip == 1


def as_maps(x: object, prefix: int | None = None) -> object:
    """``(N, T, D)`` tokens as ``(N, D, P, P)`` patch maps (module docstring); anything else unchanged."""
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        return x
    found = layout(x.shape[1:], prefix)
    if found is None:
        return x
    skip, side = found
    return x[:, skip:].transpose(1, 2).reshape(x.shape[0], x.shape[2], side, side)


def class_token(x: object, prefix: int | None = None, declared_class: bool | None = None) -> torch.Tensor:
    """The class token ``(N, D)`` of ``(N, T, D)`` tokens; :class:`TokenError` if the layer has none."""
    found = layout(x.shape[1:], prefix) if isinstance(x, torch.Tensor) and x.dim() == 3 else None
    if found is None or not has_class_token(found[0], declared_class):
        shape = tuple(x.shape[1:]) if isinstance(x, torch.Tensor) else type(x).__name__
        raise TokenError(f"This layer (output {shape}) has no class token; pick the layer without {CLASS_SUFFIX}.")
    return x[:, 0]


def class_layer(name: str) -> str:
    """The name of ``name``'s class-token layer."""
    return name + CLASS_SUFFIX


def split(name: str) -> tuple[str, bool]:
    """``(the layer, whether the name asks for its class token)``."""
    if isinstance(name, str) and name.endswith(CLASS_SUFFIX):
        return name[:-len(CLASS_SUFFIX)], True
    return name, False


__all__ = ["CLASS_SUFFIX", "TokenError", "as_maps", "class_layer", "class_token", "declared", "has_class_token",
           "layout", "split"]
