"""What an optimization run maximizes: a unit of a layer, and the one rule that names units.

Conventions
-----------
* A :class:`Target` names a layer (a graph node, :mod:`deepvis.graph`) and a unit:
  a channel of a map, or an element of a vector.  ``objective`` is ``neuron`` (one
  position, default the centre of the map) or ``channel`` (the spatial mean).
* **Composed objectives** (Olah et al. 2017, as Lucent and Xplique compose them): a target's own unit, times
  ``weight`` (``-1``: the negative of a unit; ``0``: none), plus ``terms``: weighted :class:`Term` s, each a unit
  of a layer, a **direction** (a vector over a layer's channels, normalized to length 1: its dot product with
  the channel vector at the centre position, or with the channels' spatial means), **diversity** over the
  rows of a batch, or **match**: a photo's representation at a layer (inversion, Mahendran & Vedaldi 2015:
  ``-||Φ(x) − Φ0||² / ||Φ0||²``, Φ0 computed from the photo at the run's size by the optimizer).  Expressions are parsed in :mod:`deepvis.objectives`.
* Class names are units of the logits only; :func:`resolve_unit` is the one place that
  decides, for the CLI and the pages alike.
* Pure Python: a model is only asked for its layers and class names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import base64
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from deepvis.settings import OptimizeError, is_int

if TYPE_CHECKING:
    from deepvis.models import LoadedModel

OBJECTIVES = ("neuron", "channel")


TERM_KINDS = ("unit", "direction", "diversity", "match")


@dataclass(frozen=True)
class Term:
    """One weighted addend of a composed objective (module docstring): ``kind`` ``unit`` (``unit`` of ``layer``,
    ``objective`` as :class:`Target`'s), ``direction`` (``direction`` over ``layer``'s channels) or ``diversity``
    (``layer``'s Gram matrices against the other rows': ``-weight`` × their mean cosine similarity)."""

    weight: float
    layer: str
    kind: str = "unit"
    unit: int | None = None
    direction: tuple[float, ...] | None = None
    objective: str = "neuron"
    photo: bytes | None = None  # "match": the photo's uint8 pixels, (H, W, C) = photo_shape
    photo_shape: tuple[int, int, int] | None = None
    reference: Any = field(default=None, compare=False, hash=False, repr=False)  # "match": set by the optimizer

    def __post_init__(self) -> None:
        if self.kind == "match" and (self.photo is None or self.photo_shape is None
                                     or len(self.photo) != math.prod(self.photo_shape)):
            raise OptimizeError("matching a representation needs the photo's pixels and their (H, W, C) shape")
        if self.kind not in TERM_KINDS:
            raise OptimizeError(f"a term is one of {', '.join(TERM_KINDS)}, not {self.kind!r}")
        if not isinstance(self.weight, (int, float)) or self.weight != self.weight:
            raise OptimizeError(f"a term's weight must be a number, not {self.weight!r}")
        object.__setattr__(self, "weight", float(self.weight))
        if self.kind == "unit" and (not is_int(self.unit) or self.unit < 0):
            raise OptimizeError(f"unit must be a non-negative whole number, not {self.unit!r}")
        if self.kind == "direction":
            vector = tuple(float(v) for v in (self.direction or ()))
            if not vector or not any(vector):
                raise OptimizeError("a direction needs a non-zero vector over the layer's channels")
            object.__setattr__(self, "direction", vector)
        if self.objective not in OBJECTIVES:
            raise OptimizeError(f"objective must be one of {', '.join(OBJECTIVES)}, not {self.objective!r}")

    @property
    def label(self) -> str:
        what = {"unit": f"{self.layer}:{self.unit}", "direction": f"{self.layer}:direction({len(self.direction or ())})",
                "diversity": f"diversity({self.layer})", "match": f"match(the photo at {self.layer})"}[self.kind]
        return what if self.weight == 1 else f"{self.weight:g}*{what}"

    def to_dict(self) -> dict[str, Any]:
        out = {"weight": self.weight, "layer": self.layer, "kind": self.kind, "unit": self.unit,
               "direction": list(self.direction) if self.direction is not None else None,
               "objective": self.objective}
        if self.photo is not None:  # the pixels, so that a saved run names exactly what it matched
            out.update(photo=base64.b64encode(self.photo).decode(), photo_shape=list(self.photo_shape))
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Term:
        data = dict(data)
        if data.get("photo") is not None:
            try:
                data["photo"], data["photo_shape"] = base64.b64decode(data["photo"]), tuple(data["photo_shape"])
            except (ValueError, TypeError, KeyError) as exc:
                raise OptimizeError(f"a match term's photo is malformed ({exc})") from None
        try:
            return cls(**data)
        except TypeError as exc:
            raise OptimizeError(f"a term is malformed ({exc})") from None


@dataclass(frozen=True)
class Target:
    """The unit to maximize: ``unit`` is a channel (conv layer) or an element/class (vector layer)."""

    layer: str
    unit: int
    objective: str = "neuron"
    position: tuple[int, int] | None = None  # (y, x) for "neuron" on a conv layer; None = centre
    weight: float = 1.0  # the unit's own weight in a composed objective (-1: its negative; 0: the terms alone)
    terms: tuple[Term, ...] = ()  # the composed objective's other addends

    def __post_init__(self) -> None:
        if not isinstance(self.weight, (int, float)) or self.weight != self.weight:
            raise OptimizeError(f"weight must be a number, not {self.weight!r}")
        object.__setattr__(self, "weight", float(self.weight))
        object.__setattr__(self, "terms", tuple(self.terms))
        if not all(isinstance(t, Term) for t in self.terms):
            raise OptimizeError("terms must be Term objects")
        if self.weight == 0 and not self.terms:
            raise OptimizeError("an objective with weight 0 needs other terms")
        if not isinstance(self.layer, str) or not self.layer:
            raise OptimizeError("layer must be a non-empty layer name")
        if not is_int(self.unit) or self.unit < 0:
            raise OptimizeError(f"unit must be a non-negative whole number, not {self.unit!r}")
        object.__setattr__(self, "unit", int(self.unit))
        if self.objective not in OBJECTIVES:
            raise OptimizeError(f"objective must be one of {', '.join(OBJECTIVES)}, not {self.objective!r}")
        if self.position is not None:
            pos = tuple(self.position)
            if len(pos) != 2 or not all(is_int(v) and v >= 0 for v in pos):
                raise OptimizeError(f"position must be two non-negative whole numbers (y, x), not {self.position!r}")
            object.__setattr__(self, "position", (int(pos[0]), int(pos[1])))

    def centre_or_position(self, height: int, width: int) -> tuple[int, int]:
        """The ``(y, x)`` of a neuron objective on a ``height x width`` map: ``position``, else the centre."""
        return self.position if self.position is not None else (height // 2, width // 2)

    @property
    def composed(self) -> bool:
        return self.weight != 1 or bool(self.terms)

    @property
    def label(self) -> str:
        if self.objective == "channel":
            own = f"{self.layer} ch {self.unit} (mean)"
        else:
            where = f" @ {self.position}" if self.position is not None else ""
            own = f"{self.layer} unit {self.unit}{where}"
        if not self.composed:
            return own
        parts = ([] if self.weight == 0 else [own if self.weight == 1 else f"{self.weight:g}*{own}"])
        parts += [t.label for t in self.terms]
        return " + ".join(parts).replace("+ -", "- ")

    def to_dict(self) -> dict[str, Any]:
        out = {"layer": self.layer, "unit": self.unit, "objective": self.objective,
               "position": list(self.position) if self.position is not None else None}
        if self.composed:
            out.update(weight=self.weight, terms=[t.to_dict() for t in self.terms])
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Target:
        if not isinstance(data, Mapping):
            raise OptimizeError("target must be a JSON object")
        unknown = set(data) - {"layer", "unit", "objective", "position", "weight", "terms"}
        if unknown:
            raise OptimizeError(f"unknown target field(s): {', '.join(sorted(unknown))}")
        if "layer" not in data or "unit" not in data:
            raise OptimizeError("target needs a layer and a unit")
        position = data.get("position")
        terms = tuple(Term.from_dict(t) for t in data.get("terms", ()))
        return cls(data["layer"], data["unit"], data.get("objective", "neuron"),
                   tuple(position) if isinstance(position, (list, tuple)) else position,
                   data.get("weight", 1.0), terms)


def class_names(loaded: LoadedModel, layer: str) -> Sequence[str] | None:
    """The class names of ``layer``'s units: only for the logits (the last layer, one unit per class)."""
    info = loaded.layer(layer)
    is_logits = info.name == loaded.logits_layer and len(loaded.class_names) == info.channels
    return loaded.class_names if is_logits else None


def resolve_unit(loaded: LoadedModel, layer: str, query: str | int) -> int:
    """A unit of ``layer`` from a number, or from a class name at the logits; ``OptimizeError`` otherwise.

    The one rule for the CLI and the pages: a number must exist in the layer (0 to channels - 1); a class
    name is accepted only at the logits, exactly (case-insensitive).
    """
    info = loaded.layer(layer)
    noun = "channels" if info.is_spatial else "units"
    text = str(query).strip()
    if is_int(query) or text.isdigit():
        unit = int(text)
        if not 0 <= unit < info.channels:
            raise OptimizeError(f"{info.name} has {info.channels} {noun} (0 to {info.channels - 1}); "
                                f"unit {unit} does not exist.")
        return unit
    names = class_names(loaded, layer)
    if names is None:
        raise OptimizeError(f"{query!r} is not a unit number; class names apply only at the logits "
                            f"({loaded.logits_layer}), and {info.name} has {info.channels} {noun}.")
    wanted = text.lower()
    for index, name in enumerate(names):
        if name.lower() == wanted:
            return index
    raise OptimizeError(f"No class called {query!r}.")
