"""Composed objectives from a small expression: ``"_blocks.9._swish_1:5 - 0.5*_blocks.9._swish_1:7"``.

Conventions
-----------
* Grammar (no ``eval``; a tokenizer and a loop)::

      expression := ["-"] term (("+" | "-") term)*
      term       := [number "*"] atom
      atom       := LAYER ":" (UNIT | CLASS | "[" v1, v2, … "]" | "@" FILE.npy)

  ``UNIT`` is a number, ``CLASS`` a class name at the logits (quoted when it has spaces: ``_fc:"tiger cat"``),
  ``[…]`` or ``@file.npy`` a direction over the layer's channels (:class:`deepvis.targets.Term`).
* The result is one :class:`deepvis.targets.Target`: its first unit is the target's own (with its weight), the
  rest are its ``terms``; an expression of directions alone has weight 0 on unit 0 of the first layer.
* :func:`with_diversity` adds a diversity term (Olah et al. 2017) and makes ``batch`` rows of it;
  :func:`check_terms` and :func:`with_references` prepare a run's terms (the optimizer calls them).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from deepvis.models import LoadedModel
from deepvis.settings import OptimizeError
from deepvis.targets import Target, Term, resolve_unit

_TOKEN = re.compile(r"""\s*(?:
    (?P<number>\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)(?=\s*\*)
  | (?P<atom>\w[\w.]*:(?:"[^"]*"|'[^']*'|\[[^\]]*\]|@[^\s+*]+|[\w.]+))
  | (?P<op>[-+*])
)""", re.VERBOSE)


def _tokens(text: str) -> list[tuple[str, str, int]]:
    out, at = [], 0
    while at < len(text):
        if text[at:].strip() == "":
            break
        found = _TOKEN.match(text, at)
        if found is None or found.end() == at:
            raise OptimizeError(f"cannot read the objective at {text[at:].strip()[:30]!r}: expected LAYER:UNIT, "
                                "a number followed by *, + or -")
        kind = found.lastgroup
        out.append((kind, found.group(kind), found.start(kind)))
        at = found.end()
    return out


def _direction(spec: str) -> tuple[float, ...]:
    if spec.startswith("@"):
        try:
            vector = np.load(Path(spec[1:]).expanduser(), allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise OptimizeError(f"cannot read the direction {spec[1:]}: {exc}") from None
    else:
        try:
            vector = np.array([float(v) for v in spec[1:-1].split(",") if v.strip()])
        except ValueError:
            raise OptimizeError(f"a direction is numbers separated by commas, not {spec}") from None
    if vector.ndim != 1 or vector.size == 0:
        raise OptimizeError(f"a direction is one vector of numbers, not an array of shape {vector.shape}")
    return tuple(float(v) for v in vector)


def _atom(loaded: LoadedModel, weight: float, text: str) -> Term:
    layer, spec = text.split(":", 1)
    name = loaded.layer(layer).name  # a layer that does not exist: one line, from the model
    if spec.startswith(("[", "@")):
        return Term(weight, name, "direction", direction=_direction(spec))
    return Term(weight, name, "unit", unit=resolve_unit(loaded, name, spec.strip("\"'")))


def parse(loaded: LoadedModel, text: str) -> Target:
    """The :class:`Target` an expression stands for (module docstring); a one-line ``OptimizeError`` otherwise."""
    tokens = _tokens(str(text))
    if not tokens:
        raise OptimizeError("the objective is empty: give LAYER:UNIT, e.g. _blocks.9._swish_1:5")
    terms: list[Term] = []
    i, sign = 0, 1.0
    if tokens[0][:2] == ("op", "-"):
        sign, i = -1.0, 1
    while True:
        weight = 1.0
        if i < len(tokens) and tokens[i][0] == "number":
            weight = float(tokens[i][1])
            i += 2  # the number and its "*" (the tokenizer only reads a number that a "*" follows)
        if i >= len(tokens) or tokens[i][0] != "atom":
            where = tokens[i][1] if i < len(tokens) else "the end"
            raise OptimizeError(f"expected LAYER:UNIT at {where!r} in the objective {text!r}")
        terms.append(_atom(loaded, sign * weight, tokens[i][1]))
        i += 1
        if i == len(tokens):
            break
        if tokens[i][:2] not in (("op", "+"), ("op", "-")):
            raise OptimizeError(f"expected + or - at {tokens[i][1]!r} in the objective {text!r}")
        sign = 1.0 if tokens[i][1] == "+" else -1.0
        i += 1
    own = next((t for t in terms if t.kind == "unit"), None)
    if own is None:
        return Target(terms[0].layer, 0, weight=0.0, terms=tuple(terms))
    rest = list(terms)
    rest.remove(own)
    return Target(own.layer, own.unit, weight=own.weight, terms=tuple(rest))


def with_diversity(target: Target, weight: float, batch: int, layer: str | None = None) -> list[Target]:
    """``batch`` rows of ``target`` with a diversity term of ``weight`` at ``layer`` (default: its own layer):
    each row is pushed away from the others' Gram matrices there (Olah et al. 2017, "Diversity")."""
    if batch < 2:
        raise OptimizeError(f"diversity needs a batch of at least 2 images, not {batch}")
    if weight <= 0:
        raise OptimizeError(f"the diversity weight must be positive, not {weight:g}")
    diverse = replace(target, terms=(*target.terms, Term(weight, layer or target.layer, "diversity")))
    return [diverse] * batch


def feature_distance(loaded: LoadedModel, pixels: np.ndarray, layer: str) -> float:
    """How different a batch's images are to the network: the mean pairwise Euclidean distance of their
    activations at ``layer``, each flattened and scaled to length 1 (0: the same; at most 2).  ``pixels``
    ``(B, H, W, C)`` in the optimizer's pixel space (:mod:`deepvis.optimize`)."""
    import torch

    from deepvis.activations import capture
    from deepvis.images import channel_stats

    if len(pixels) < 2:
        raise OptimizeError("a distance needs at least 2 images")
    mean, std = channel_stats(loaded.spec.normalization, loaded.device)
    x = torch.as_tensor(np.asarray(pixels, np.float32), device=loaded.device).permute(0, 3, 1, 2)
    with torch.no_grad():
        acts = capture(loaded.module, ((x + mean).clamp(0, 255) - mean) / std, layer)[layer]
    features = torch.nn.functional.normalize(acts.flatten(1).double(), dim=1)
    count = len(features)
    return float(torch.cdist(features, features).sum() / (count * (count - 1)))


def check_terms(model: LoadedModel, targets: Sequence[Target], shapes: Mapping[str, tuple[int, ...]]) -> None:
    """Each composed objective's terms exist at this size: a unit of its layer, a direction as long as its layer
    has channels, diversity with another row to differ from; a one-line :class:`OptimizeError` otherwise."""
    diverse: dict[str, int] = {}
    for target in targets:
        for term in target.terms:
            channels = shapes[term.layer][0]
            if term.kind == "unit":
                resolve_unit(model, term.layer, term.unit)
            elif term.kind == "direction" and len(term.direction) != channels:
                raise OptimizeError(f"the direction has {len(term.direction)} values; {term.layer} has {channels} "
                                    "channels")
            elif term.kind == "diversity":
                diverse[term.layer] = diverse.get(term.layer, 0) + 1
    for layer, count in diverse.items():
        if count < 2:
            raise OptimizeError(f"diversity at {layer} needs at least 2 images in the batch (--batch N)")


def with_references(model: LoadedModel, target: Target, size: int) -> Target:
    """``target`` with each match term's Φ0: the photo's activations at its layer, the photo resized to the run's
    ``size`` (computed once per run, not per step)."""
    if not any(term.kind == "match" for term in target.terms):
        return target
    import torch
    from PIL import Image

    from deepvis.activations import capture
    from deepvis.images import to_batch

    terms = []
    for term in target.terms:
        if term.kind == "match":
            photo = np.frombuffer(term.photo, np.uint8).reshape(term.photo_shape)
            picture = Image.fromarray(photo.squeeze(-1) if photo.shape[-1] == 1 else photo)
            view = np.asarray(picture.resize((size, size), Image.Resampling.BICUBIC))
            view = view[..., None] if view.ndim == 2 else view
            with torch.no_grad():
                reference = capture(model.module, to_batch(view, model.spec.normalization, model.device),
                                    term.layer)[term.layer][0]
            term = replace(term, reference=reference)
        terms.append(term)
    return replace(target, terms=tuple(terms))
