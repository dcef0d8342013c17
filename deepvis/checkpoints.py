"""Files a user hands in with their network: a state dict of weights, and class names.

Conventions
-----------
* Weights are a state dict, never a pickled model: ``.safetensors`` (safetensors) or
  ``.pt``/``.pth`` read with ``torch.load(..., weights_only=True)`` on the CPU.  A
  checkpoint's ``state_dict``/``model``/``model_state_dict`` entry is unwrapped, and a
  ``module.`` prefix (``DataParallel``) dropped.
* A state dict that does not fit (missing, unexpected or reshaped keys) is refused whole,
  naming the first few keys; nothing is loaded partially.
* Class names: a UTF-8 text file, one name per line, blank lines skipped.
* Every mistake is a :class:`~deepvis.models.ModelError` in one line.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from deepvis.errors import one_line
from deepvis.models import ModelError

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth")
SAVE_HINT = 'save a state dict instead: torch.save(model.state_dict(), "ckpt.pt")'


def read_state_dict(source: Path | bytes, filename: str) -> dict[str, torch.Tensor]:
    """The state dict in a weights file (or its bytes, named ``filename``); see the module docstring."""
    suffix = Path(filename).suffix.lower()
    if suffix not in WEIGHT_SUFFIXES:
        raise ModelError(f"a weights file ends in {', '.join(WEIGHT_SUFFIXES)} (a state dict), not {filename!r}")
    if isinstance(source, Path) and not source.is_file():
        raise ModelError(f"no weights file {source}")
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load as from_bytes, load_file

            state = from_bytes(source) if isinstance(source, bytes) else load_file(str(source))
        else:
            state = torch.load(io.BytesIO(source) if isinstance(source, bytes) else source, map_location="cpu",
                               weights_only=True)
    except pickle.UnpicklingError:
        raise ModelError(f"{filename} holds a pickled object, not only weights; {SAVE_HINT}") from None
    except Exception as exc:  # a file of another kind: each reader fails its own way
        raise ModelError(f"{filename} is not a {suffix} weights file ({type(exc).__name__}: {one_line(exc)})") \
            from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ModelError(f"{filename} holds a {type(state).__name__} that is not a state dict; {SAVE_HINT}")
    if all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return dict(state)


def apply_state_dict(module: nn.Module, state: Mapping[str, torch.Tensor], filename: str) -> None:
    """Load ``state`` into ``module``; a one-line :class:`ModelError` naming the first keys that do not fit."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    problems = [f"{what} {', '.join(keys[:3])}{' …' if len(keys) > 3 else ''} ({len(keys)})"
                for what, keys in (("missing", missing), ("unexpected", unexpected), ("shapes differ:", shapes))
                if keys]
    if problems:
        raise ModelError(f"{filename} does not fit this network (weights of another architecture?): "
                         + "; ".join(problems))
    module.load_state_dict(state)


def read_classes(path: Path) -> tuple[str, ...]:
    """One class name per line of a text file (blank lines skipped)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelError(f"no classes file {path}") from None
    except UnicodeDecodeError:
        raise ModelError(f"{path} is not a text file of class names (one per line)") from None
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not names:
        raise ModelError(f"{path} names no classes (one name per line)")
    return names
