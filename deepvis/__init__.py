"""deepvis: see inside a convolutional network, after Yosinski et al. (2015).

The public API.  Every high-level function takes a :class:`LoadedModel` first (any
network :func:`load_model` names: a built-in one, ``file.py:NAME``, ``timm:NAME`` or a
models file's entry; or a module in hand, from :func:`wrap`) and a photo as a PIL image
(:func:`open_photo`); long work is a generator of :class:`Progress` that :func:`drain`
runs to its result; every error a user can cause is a :class:`DeepvisError` with a
one-line message.  Names load on first use, so
``import deepvis`` is quick and the configuration modules need no torch.

>>> import deepvis as dv
>>> model = dv.load_model()
>>> seen = dv.analyze(model, dv.open_photo("chelsea"), "_blocks.9._swish_1")

See ``docs/api.md`` for a tour.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> (module, attribute)
_API = {
    # models
    "load_model": ("deepvis.networks", "load"),
    "wrap": ("deepvis.networks", "wrap"),
    "wrap_model": ("deepvis.models", "wrap_model"),
    "register_models": ("deepvis.models_file", "register"),
    "LoadedModel": ("deepvis.models", "LoadedModel"),
    "Normalization": ("deepvis.models", "Normalization"),
    "MODELS": ("deepvis.models", "REGISTRY"),
    # photos
    "open_photo": ("deepvis.images", "open_photo"),
    "model_view": ("deepvis.images", "model_view"),
    # one photo through the network
    "analyze": ("deepvis.activations", "analyze"),
    "backward": ("deepvis.backprop", "backward"),
    "occlude": ("deepvis.occlusion", "occlude"),
    "grad_cam": ("deepvis.gradcam", "gradcam"),
    "conv_weights": ("deepvis.weights", "conv_weights"),
    "receptive_field": ("deepvis.receptive", "field"),
    # what a unit wants to see
    "Target": ("deepvis.targets", "Target"),
    "resolve_unit": ("deepvis.targets", "resolve_unit"),
    "Term": ("deepvis.targets", "Term"),
    "parse_objective": ("deepvis.objectives", "parse"),
    "with_diversity": ("deepvis.objectives", "with_diversity"),
    "invert": ("deepvis.inversion", "invert"),
    "Settings": ("deepvis.settings", "Settings"),
    "preset": ("deepvis.presets", "resolve"),
    "visualize": ("deepvis.optimize", "run"),
    "visualize_steps": ("deepvis.optimize", "optimize"),
    "assess": ("deepvis.quality", "assess"),
    "show": ("deepvis.display", "show"),
    # a network as it trains
    "Run": ("deepvis.run", "Run"),
    "open_run": ("deepvis.run", "open_run"),
    # collections: top images and maps
    "build_index": ("deepvis.index", "build"),
    "top_images": ("deepvis.index", "top"),
    # the atlas: every unit over a collection of any size (in one process or on Ray)
    "build_atlas": ("deepvis.atlas", "build"),
    "atlas_top": ("deepvis.atlas", "top"),
    "atlas_unit_stats": ("deepvis.atlas", "unit_stats"),
    # protocols
    "Progress": ("deepvis.progress", "Progress"),
    "drain": ("deepvis.progress", "drain"),
    "DeepvisError": ("deepvis.errors", "DeepvisError"),
}

__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'deepvis' has no attribute {name!r}")
    module, attribute = _API[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
