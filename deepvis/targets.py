"""What an optimization run maximizes: a unit of a layer, and the one rule that names units.

Conventions
-----------
* A :class:`Target` names a layer (a graph node, :mod:`deepvis.graph`) and a unit:
  a channel of a map, or an element of a vector.  ``objective`` is ``neuron`` (one
  position, default the centre of the map) or ``channel`` (the spatial mean).
* Class names are units of the logits only; :func:`resolve_unit` is the one place that
  decides, for the CLI and the pages alike.
* Pure Python: a model is only asked for its layers and class names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from deepvis.settings import OptimizeError, is_int

if TYPE_CHECKING:
    from deepvis.models import LoadedModel

OBJECTIVES = ("neuron", "channel")


@dataclass(frozen=True)
class Target:
    """The unit to maximize: ``unit`` is a channel (conv layer) or an element/class (vector layer)."""

    layer: str
    unit: int
    objective: str = "neuron"
    position: tuple[int, int] | None = None  # (y, x) for "neuron" on a conv layer; None = centre

    def __post_init__(self) -> None:
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
    def label(self) -> str:
        if self.objective == "channel":
            return f"{self.layer} ch {self.unit} (mean)"
        where = f" @ {self.position}" if self.position is not None else ""
        return f"{self.layer} unit {self.unit}{where}"

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "unit": self.unit, "objective": self.objective,
                "position": list(self.position) if self.position is not None else None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Target:
        if not isinstance(data, Mapping):
            raise OptimizeError("target must be a JSON object")
        unknown = set(data) - {"layer", "unit", "objective", "position"}
        if unknown:
            raise OptimizeError(f"unknown target field(s): {', '.join(sorted(unknown))}")
        if "layer" not in data or "unit" not in data:
            raise OptimizeError("target needs a layer and a unit")
        position = data.get("position")
        return cls(data["layer"], data["unit"], data.get("objective", "neuron"),
                   tuple(position) if isinstance(position, (list, tuple)) else position)


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
