"""Redirected rectifier gradients: a way past a unit that is off on the starting noise.

A rectifier (ReLU, ReLU6) that is off everywhere a unit's gradient passes gives that unit no gradient at all,
so gradient ascent from noise never starts: the image only decays and blurs.  Lucid's "redirected ReLU gradient"
(Olah, Mordvintsev & Schubert 2017, *Feature Visualization*, Distill; ``lucid.misc.redirected_relu_grad``) lets
the gradient through such a rectifier where it pushes the input back towards the rectifier's active range.

Conventions
-----------
* Used only by the optimizers, and only for a batch row whose ordinary gradient w.r.t. its image (or its
  parametrization's parameters) is exactly zero (:mod:`deepvis.optimize`, :mod:`deepvis.param_ascent`): every
  row the ordinary gradient moves is moved exactly as before.
* ``g`` is d objective / d output (the objective is maximized).  For each batch element at each rectifier: if
  the ordinary gradient ``g · [0 < x < cap]`` is zero everywhere, the redirected one is used instead: ``g``,
  except where ``x ≤ 0`` and ``g < 0`` or ``x ≥ cap`` and ``g > 0`` (pushing further out of range): 0.
* The rectifiers are the ``nn.ReLU``/``nn.ReLU6`` modules of the optimizers' private BatchNorm-folded copy
  (:meth:`deepvis.graph.TracedModel.folded_twin`), wrapped by :class:`Rectifier`; outside :func:`redirected`
  a wrapper calls its own module, so forward values and gradients are the module's, bit for bit.  Functional
  rectifiers (``F.relu``, ``torch.relu``, ``F.relu6``, ``F.hardtanh(x, 0, cap)``, ``x.relu()``, in-place or
  not) are nodes of the copy's graph: :func:`wrap_functional` points each at :func:`rectify`, which calls the
  original op with its own arguments outside :func:`redirected` (bit for bit, in place where it was) and the
  redirected rectifier inside it (out of place).  The shared model is never touched.
* The switch is per thread and read in the forward pass, which builds the graph the backward pass follows.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch
from torch import nn

_STATE = threading.local()


@contextlib.contextmanager
def redirected() -> Iterator[None]:
    """Forward passes run in this block (in this thread) give redirected rectifier gradients."""
    before = getattr(_STATE, "on", False)
    _STATE.on = True
    try:
        yield
    finally:
        _STATE.on = before


class _Redirected(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, cap: float | None) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.cap = cap
        return x.clamp(0.0, cap) if cap is not None else x.clamp_min(0.0)

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        cap = ctx.cap
        on = (x > 0) if cap is None else (x > 0) & (x < cap)
        ordinary = torch.where(on, g, torch.zeros_like(g))
        blocked = (x <= 0) & (g < 0)
        if cap is not None:
            blocked = blocked | ((x >= cap) & (g > 0))
        redirected_g = torch.where(blocked, torch.zeros_like(g), g)
        dims = tuple(range(1, g.dim()))
        silent = ordinary.abs().amax(dim=dims, keepdim=True) == 0 if dims else ordinary == 0
        return torch.where(silent, redirected_g, ordinary), None


class Rectifier(nn.Module):
    """A rectifier module that gives the redirected gradient inside :func:`redirected` and is ``inner``
    itself outside it."""

    def __init__(self, inner: nn.Module, cap: float | None) -> None:
        super().__init__()
        self.inner, self.cap = inner, cap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if getattr(_STATE, "on", False) and torch.is_grad_enabled():
            return _Redirected.apply(x, self.cap)
        return self.inner(x)


def wrap_rectifiers(module: nn.Module) -> int:
    """Wrap every ``nn.ReLU``/``nn.ReLU6`` submodule of ``module`` (a private copy) in :class:`Rectifier`;
    how many."""
    found = [(name, sub) for name, sub in module.named_modules() if type(sub) in (nn.ReLU, nn.ReLU6)]
    for name, sub in found:
        module.set_submodule(name, Rectifier(sub, 6.0 if isinstance(sub, nn.ReLU6) else None))
    return len(found)


_FUNCTIONS = {f"torch.nn.functional.{n}": getattr(nn.functional, n)
              for n in ("relu", "relu_", "relu6", "hardtanh", "hardtanh_")}
_FUNCTIONS.update({f"torch.{n}": getattr(torch, n) for n in ("relu", "relu_")})


def rectify(x: torch.Tensor, cap: float | None, op: str, *args, **kwargs) -> torch.Tensor:
    """A functional rectifier of a graph (:func:`wrap_functional`): ``op(x, *args, **kwargs)`` (``op`` the name
    of one of :data:`_FUNCTIONS`, or of a tensor method), or inside :func:`redirected` the redirected rectifier."""
    if getattr(_STATE, "on", False) and torch.is_grad_enabled():
        return _Redirected.apply(x, cap)
    return _FUNCTIONS[op](x, *args, **kwargs) if op in _FUNCTIONS else getattr(x, op)(*args, **kwargs)


def wrap_functional(graph, caps) -> int:
    """Point every functional rectifier node of ``graph`` (a private copy; ``caps(node)`` gives its cap, None for
    ReLU, or False for a node that is no functional rectifier) at :func:`rectify`; how many."""
    names = {id(fn): name for name, fn in _FUNCTIONS.items()}
    found = 0
    for node in graph.nodes:
        cap = caps(node) if node.op in ("call_function", "call_method") else False
        op = node.target if node.op == "call_method" else names.get(id(node.target))
        if cap is False or not node.args or op is None:
            continue
        node.args = (node.args[0], cap, op, *node.args[1:])
        node.op, node.target = "call_function", rectify
        found += 1
    return found
