"""A saved comparison: targets × settings, seed, size and model, as JSON.

Conventions
-----------
* An :class:`Experiment` is one target under several settings (a comparison) or several
  targets under each setting (a sheet: rows are targets, target-major).
* It round-trips through JSON (format ``deepvis-experiment``, version 1); a file that is
  not one gives a one-line :class:`deepvis.errors.DeepvisError`.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass

from deepvis.errors import DeepvisError
from deepvis.settings import DEFAULT_MODEL, MAX_SIZE, MIN_SIZE, Settings, is_int, read_json_file
from deepvis.targets import Target

EXPERIMENT_FORMAT = "deepvis-experiment"


@dataclass(frozen=True)
class Experiment:
    """A comparison (one target, several settings) or a units x settings sheet; saved as JSON."""

    targets: tuple[Target, ...]
    settings: tuple[Settings, ...]
    seed: int = 0
    size: int | None = None
    model: str = DEFAULT_MODEL

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", tuple(self.targets))
        object.__setattr__(self, "settings", tuple(self.settings))
        if not self.targets or not all(isinstance(t, Target) for t in self.targets):
            raise DeepvisError("an experiment needs at least one target")
        if not self.settings or not all(isinstance(s, Settings) for s in self.settings):
            raise DeepvisError("an experiment needs at least one setting")
        if not is_int(self.seed) or self.seed < 0:
            raise DeepvisError(f"seed must be a non-negative whole number, not {self.seed!r}")
        if self.size is not None and (not is_int(self.size) or not MIN_SIZE <= self.size <= MAX_SIZE):
            raise DeepvisError(f"size must be between {MIN_SIZE} and {MAX_SIZE} pixels, not {self.size!r}")
        if not isinstance(self.model, str) or not self.model:
            raise DeepvisError("model must be a model name")

    def rows(self) -> tuple[list[Target], list[Settings]]:
        """Batch rows: every target with every setting, target-major (a sheet's row-major order)."""
        pairs = list(itertools.product(self.targets, self.settings))
        return [t for t, _ in pairs], [s for _, s in pairs]

    def to_json(self) -> str:
        return json.dumps({"format": EXPERIMENT_FORMAT, "version": 1, "model": self.model, "seed": self.seed,
                           "size": self.size, "targets": [t.to_dict() for t in self.targets],
                           "settings": [s.to_dict() for s in self.settings]}, indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> Experiment:
        data = read_json_file(text, EXPERIMENT_FORMAT, "saved deepvis comparison")
        try:
            targets = [Target.from_dict(t) for t in data["targets"]]
            settings = [Settings.from_dict(s) for s in data["settings"]]
            return cls(tuple(targets), tuple(settings), data.get("seed", 0), data.get("size"),
                       data.get("model", DEFAULT_MODEL))
        except (KeyError, TypeError) as exc:
            raise DeepvisError(f"The comparison file is incomplete ({exc.__class__.__name__}: {exc}).") from None
