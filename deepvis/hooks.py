"""Temporary, thread-owned hooks on a model that other threads share.

Used only for networks torch.fx cannot trace (:mod:`deepvis.graph` covers every
registered model without touching it); kept so such a network still gets
module-level activations and saliency.

Conventions
-----------
* The model object is shared by every browser session (one cached instance per
  model, weights and device).  A hook registered on it is seen by *every*
  thread that runs a forward pass while it is registered.  Every hook made here
  therefore fires only in the thread that registered it; in any other thread it
  returns ``None`` and changes nothing.
* Hooks exist only inside the ``with owned_hooks(...)`` block; they are removed
  in a ``finally`` clause, so an exception (including the early stop below)
  never leaves one behind.
* ``StopForward`` is raised by a hook to end a forward pass once everything
  needed has been computed; ``run_until_stopped`` swallows it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from deepvis.graph import forward_pass

ForwardHook = Callable[[nn.Module, tuple[Any, ...], Any], Any]
PreHook = Callable[[nn.Module, tuple[Any, ...]], Any]


class StopForward(Exception):
    """Raised inside a hook to stop the forward pass after the needed layers."""


class HookSet:
    """Registers hooks that act only in the owning thread; see module docstring."""

    def __init__(self) -> None:
        self._owner = threading.get_ident()
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _mine(self) -> bool:
        return threading.get_ident() == self._owner

    def forward(self, module: nn.Module, hook: ForwardHook) -> None:
        def owned(mod: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
            return hook(mod, args, output) if self._mine() else None

        self._handles.append(module.register_forward_hook(owned))

    def forward_pre(self, module: nn.Module, hook: PreHook) -> None:
        def owned(mod: nn.Module, args: tuple[Any, ...]) -> Any:
            return hook(mod, args) if self._mine() else None

        self._handles.append(module.register_forward_pre_hook(owned))

    def remove_all(self) -> None:
        while self._handles:
            self._handles.pop().remove()


@contextmanager
def owned_hooks() -> Iterator[HookSet]:
    """Yield a :class:`HookSet`; every hook in it is removed on exit."""
    hooks = HookSet()
    try:
        yield hooks
    finally:
        hooks.remove_all()


def run_until_stopped(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor | None:
    """Run ``model(inputs)``; return its output, or ``None`` if a hook stopped it."""
    try:
        with forward_pass():
            return model(inputs)
    except StopForward:
        return None


def hook_count(model: nn.Module) -> int:
    """Number of forward/backward hooks on any submodule (0 for a clean model)."""
    total = 0
    for module in model.modules():
        total += len(module._forward_hooks) + len(module._forward_pre_hooks)
        total += len(module._backward_hooks) + len(getattr(module, "_backward_pre_hooks", {}))
    return total
