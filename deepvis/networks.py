"""Any network by name: the registry's, a models file's, your own code's or timm's; and :func:`wrap` for a
module already in hand.

Conventions
-----------
* **The naming rule** (:func:`load`, the CLI's ``--model``, the app): a registry name
  (:data:`deepvis.models.REGISTRY`); an entry of a models file (:mod:`deepvis.models_file`);
  ``path/to/file.py:NAME`` or ``package.module:NAME``, where ``NAME`` is a callable that
  returns an ``nn.Module`` (a class, a function) or an ``nn.Module`` itself; ``timm:NAME``.
* What describes a network (:class:`deepvis.models_file.Description`): for your own code
  the defaults are input ``3x224x224`` (the channels of ``mean``, else of the first
  convolution), mean 0 and std 1 (the network sees ``pixel / 255``), no resize, and the
  module's ``classes`` attribute (a list of names) else no class names (a feature
  extractor).  For timm, input, mean, std and resize come from the model's pretrained_cfg
  and a 1000-way classifier gets ImageNet's names.
* Weights: ``default`` is the module as the callable returns it (timm: pretrained, from
  the local Hugging Face cache only); ``random`` a seeded init (:mod:`deepvis.user_code`);
  a file is a state dict (:mod:`deepvis.checkpoints`).
* A loaded network is built fresh, put in ``eval()`` with ``requires_grad_(False)``, and
  belongs to deepvis.  :func:`wrap` never changes the module it is given.
* One forward pass on a zero batch checks the description before anything is shown.
* Every mistake is a :class:`~deepvis.models.ModelError` in one line.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deepvis.checkpoints import apply_state_dict, read_classes, read_state_dict
from deepvis.errors import one_line
from deepvis.graph import forward_pass
from deepvis.models import (CHANNELS, DEFAULT_MODEL, MIN_INPUT, REGISTRY, WEIGHT_CHOICES, LoadedModel, ModelError,
                            Normalization, default_device, imagenet_classes, load_model, wrap_model)
from deepvis.models_file import Description, user_networks
from deepvis.user_code import own_module, timm_module


def describe(name: str) -> Description | None:
    """What ``name`` stands for under the naming rule; ``None`` for a registry model."""
    if name in REGISTRY:
        return None
    found = user_networks()
    if name in found:
        return found[name]
    if ":" in name:
        return Description(model=name)
    listed = ", ".join([*found, *REGISTRY])
    raise ModelError(f"Unknown model {name!r}; choose one of: {listed}, or name your own as file.py:NAME, "
                     "package.module:NAME or timm:NAME")


def load(name: str | Description = DEFAULT_MODEL, weights: str = "default", device: torch.device | str | None = None,
         seed: int = 0, *, input: str | None = None, mean: Sequence[float] | None = None,
         std: Sequence[float] | None = None, resize: int | None = None, classes: str | None = None,
         title: str | None = None, state_dict: Mapping[str, torch.Tensor] | None = None) -> LoadedModel:
    """Build, freeze and place the network ``name`` names (the naming rule); the keywords override its
    description.  ``state_dict`` (already read, e.g. uploaded) replaces its weights; ``weights`` then labels it."""
    description = name if isinstance(name, Description) else describe(name)
    given = {"input": input, "mean": mean, "std": std, "resize": resize, "classes": classes, "title": title}
    if description is None:
        extra = [k for k, v in given.items() if v is not None]
        if extra:
            raise ModelError(f"{name} is a built-in model with its own {extra[0]}; --{extra[0]} describes your own "
                             "network (--model file.py:NAME)")
        if weights not in WEIGHT_CHOICES or state_dict is not None:
            raise ModelError(f"{name} takes weights default or random; a weights file needs your own network "
                             "(--model file.py:NAME)")
        return load_model(name, weights, device, seed)
    # Files named here are relative to the working directory, whatever the models file's folder.
    given["classes"] = classes and os.path.abspath(classes)
    if state_dict is None:
        given["weights"] = weights if weights in WEIGHT_CHOICES else os.path.abspath(weights)
    description = description.replace(**given)
    return _build(description, weights, torch.device(device) if device is not None else default_device(), seed,
                  state_dict)


def wrap(module: nn.Module, *, input: str | int, mean: Sequence[float] | float, std: Sequence[float] | float,
         classes: str | Path | Sequence[str] | None = None, resize: int | None = None, name: str = "custom",
         title: str | None = None, device: torch.device | str | None = None) -> LoadedModel:
    """A :class:`LoadedModel` of your own ``module`` as it is (in eval mode; never changed): ``input`` is
    ``"1x28x28"`` or a side (channels from ``mean``); ``classes`` a list of names or a text file."""
    if not isinstance(module, nn.Module):
        raise ModelError(f"a model is a torch.nn.Module, not {type(module).__name__}")
    if module.training:
        raise ModelError(f"{name} is in training mode; call .eval() on it first (BatchNorm and dropout would "
                         "otherwise change every result)")
    description = Description(model=name, mean=mean, std=std, resize=resize)
    side = input if isinstance(input, int) and not isinstance(input, bool) else None
    channels, size = parse_input(f"{len(description.mean)}x{side}x{side}") if side else parse_input(str(input))
    normalization = _normalization(description, channels)
    if isinstance(classes, (str, Path)):
        names = read_classes(Path(classes))
    else:
        names = tuple(map(str, classes)) if classes is not None else _classes_attribute(module)
    place = next(iter(module.parameters()), torch.zeros(0)).device if device is None else torch.device(device)
    _check(module, channels, size, place, names, name, resize)
    return wrap_model(module, name, input_size=size, normalization=normalization, class_names=names,
                      device=place, title=title, resize_size=resize)


def parse_input(text: str) -> tuple[int, int]:
    """``"CxHxW"`` as (channels, side); a :class:`ModelError` unless C is 1 or 3, H = W and H >= MIN_INPUT."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if not match:
        raise ModelError(f"input is CxHxW, e.g. 1x28x28 or 3x224x224, not {text!r}")
    channels, height, width = map(int, match.groups())
    if channels not in CHANNELS:
        raise ModelError(f"input has 1 (gray) or 3 (RGB) channels, not {channels}")
    if height != width or height < MIN_INPUT:
        raise ModelError(f"input must be square with a side of at least {MIN_INPUT}, not {height}x{width}")
    return channels, height


def _derived_name(reference: str) -> str:
    where, _, attribute = reference.rpartition(":")
    stem = "timm" if where == "timm" else Path(where).stem if where.endswith(".py") else where.rsplit(".", 1)[-1]
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{stem}.{attribute}")


def _normalization(description: Description, channels: int, cfg: Mapping[str, Any] | None = None) -> Normalization:
    cfg = cfg or {}

    def given(values: tuple[float, ...] | None, what: str, own: Any, neutral: float) -> tuple[float, ...]:
        if values is None:
            values = tuple(own) if own else (neutral,) * channels
            if len(values) != channels:  # timm's RGB statistics for a gray input
                values = (sum(values) / len(values),) * channels
        if len(values) != channels:
            raise ModelError(f"{what} has {len(values)} values but the input has {channels} channel"
                             f"{'s' if channels > 1 else ''}; give one per channel")
        return values

    return Normalization(given(description.mean, "mean", cfg.get("mean"), 0.0),
                         given(description.std, "std", cfg.get("std"), 1.0))


def _classes_attribute(module: nn.Module) -> tuple[str, ...]:
    names = getattr(module, "classes", None)
    if isinstance(names, (list, tuple)) and names and all(isinstance(n, str) for n in names):
        return tuple(names)
    return ()


def _check(module: nn.Module, channels: int, size: int, device: torch.device, names: tuple[str, ...], what: str,
           resize: int | None) -> None:
    """One forward pass on a zero batch; a one-line :class:`ModelError` when the description does not fit."""
    if resize is not None and resize < size:
        raise ModelError(f"resize ({resize}) is the shorter side before cropping {size} px: at least {size}")
    try:
        with torch.no_grad(), forward_pass():
            out = module(torch.zeros(1, channels, size, size, device=device))
    except Exception as exc:  # the user's forward: any failure means the input does not fit
        hints = []
        conv = next((m for m in module.modules() if isinstance(m, nn.Conv2d)), None)
        if conv is not None and conv.in_channels != channels:
            plural = "s" if conv.in_channels > 1 else ""
            hints.append(f"its first convolution takes {conv.in_channels} channel{plural}")
        linear = next((m for m in module.modules() if isinstance(m, nn.Linear)), None)
        if linear is not None:
            hints.append(f"its first Linear layer takes {linear.in_features} features")
        raise ModelError(f"{what} fails on a {channels}x{size}x{size} input ({type(exc).__name__}: {one_line(exc)})"
                         f"{'; ' + ', '.join(hints) if hints else ''}; set its input as CxHxW") from None
    if not isinstance(out, torch.Tensor):
        raise ModelError(f"{what} returns a {type(out).__name__}; deepvis needs a network that returns one tensor")
    if names and (out.dim() != 2 or out.shape[1] != len(names)):
        raise ModelError(f"{what} has {len(names)} class names but its output is {tuple(out.shape[1:])}: give one "
                         "name per logit, or none for a feature extractor")


def _build(description: Description, label: str, device: torch.device, seed: int,
           state_dict: Mapping[str, torch.Tensor] | None) -> LoadedModel:
    reference, cfg = description.model, {}
    random = description.weights == "random" and state_dict is None
    if reference.startswith("timm:"):
        channels = parse_input(description.input)[0] if description.input else len(description.mean or ()) or None
        module, cfg = timm_module(reference[5:], description.weights == "default", channels, seed)
    else:
        module = own_module(reference, description.base, seed, random)
    if state_dict is not None:
        apply_state_dict(module, state_dict, "the uploaded weights")
    elif description.weights not in WEIGHT_CHOICES:
        apply_state_dict(module, read_state_dict(description.path(description.weights), description.weights),
                         description.weights)
    module.eval().requires_grad_(False)
    module.to(device)
    shape = tuple(cfg.get("input_size", ()))
    if description.input:
        channels, size = parse_input(description.input)
    elif len(shape) == 3:
        channels, size = parse_input(f"{len(description.mean or ()) or shape[0]}x{shape[1]}x{shape[2]}")
    else:
        conv = next((m for m in module.modules() if isinstance(m, nn.Conv2d)), None)
        first = conv.in_channels if conv is not None and conv.in_channels in CHANNELS else 3
        channels, size = len(description.mean or ()) or first, 224
    normalization = _normalization(description, channels, cfg)
    if description.classes:
        names = read_classes(description.path(description.classes))
    elif cfg.get("num_classes") == 1000 and getattr(module, "num_classes", None) == 1000:
        names = imagenet_classes()
    else:
        names = _classes_attribute(module)
    resize = description.resize
    if resize is None and cfg.get("crop_pct") and cfg.get("crop_mode", "center") == "center":
        resize = math.floor(size / cfg["crop_pct"])
    title = description.title or description.name or reference
    _check(module, channels, size, device, names, title, resize)
    return wrap_model(module, description.name or _derived_name(reference), input_size=size,
                      normalization=normalization, class_names=names, weights=label, seed=seed, device=device,
                      title=title, resize_size=resize)
