"""What the calibration draws θ from: one space per Table 1 row (:mod:`deepvis.calibrate`).

Conventions
-----------
* **Four rows keep Table 1's characters**; only magnitudes are searched.  Settings a row does
  not use are fixed at zero.  Learning rates, decays and desired progress are drawn
  log-uniformly, σ and percentiles uniformly, blur frequency and iterations from short lists.
* **The robust space** (``robust=True``) draws, on top, the view's jitter, scale and rotation
  (:data:`ROBUST`) from lists; its draws of everything else are those of the plain space
  (the extra lists are drawn after the iterations), so trial ``t`` of both has the same magnitudes.
* Trial ``t`` of row ``r`` draws from ``random.Random(f"{seed}:{r}:{t}")``: reproducible.
* Pure Python: no torch.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from deepvis.settings import Settings

DEFAULT_STEPS = (100, 200, 300, 400)
EVERY = (2, 3, 4, 6, 8)
# Jitter in px (DeepDream's notebook), scale ± and rotation ±° (Lucid's standard transforms: 0.1, 10°; and twice).
ROBUST = (("jitter", (0, 4, 8, 16)), ("scale", (0.0, 0.1, 0.2)), ("rotate", (0.0, 10.0, 20.0)))


@dataclass(frozen=True)
class Space:
    """What a row's search draws: fixed settings, log-uniform and uniform ranges, and lists."""

    character: str
    fixed: tuple[tuple[str, object], ...]
    log_uniform: tuple[tuple[str, float, float], ...]
    uniform: tuple[tuple[str, float, float], ...]
    lists: tuple[tuple[str, tuple], ...]
    extra: tuple[tuple[str, tuple], ...] = ()  # lists drawn after the iterations (the robust space's)

    def sample(self, rng: random.Random, steps: Sequence[int]) -> Settings:
        values: dict[str, object] = dict(self.fixed)
        for name, low, high in self.log_uniform:
            values[name] = float(f"{math.exp(rng.uniform(math.log(low), math.log(high))):.3g}")
        for name, low, high in self.uniform:
            values[name] = round(rng.uniform(low, high), 2)
        for name, options in self.lists:
            values[name] = rng.choice(options)
        values["steps"] = int(rng.choice(tuple(steps)))
        for name, options in self.extra:
            values[name] = rng.choice(options)
        return Settings(**values)

    def to_dict(self) -> dict:
        """The space as JSON data (part of a log's header: a log drawn from other ranges is refused)."""
        return {"fixed": dict(self.fixed), "log_uniform": [list(r) for r in self.log_uniform],
                "uniform": [list(r) for r in self.uniform], "lists": {n: list(o) for n, o in self.lists},
                **({"extra": {n: list(o) for n, o in self.extra}} if self.extra else {})}


SPACES: dict[int, Space] = {
    1: Space("norm clip + small blur + progress lr",
             (("lr_policy", "progress"), ("decay", 0.0), ("contrib_pct", 0.0)),
             (("desired_prog", 2.0, 512.0), ("max_lr", 100.0, 1e6)),
             (("blur_radius", 0.3, 1.0), ("norm_pct", 5.0, 60.0)), (("blur_every", EVERY),)),
    2: Space("strong decay + norm clip, no blur",
             (("lr_policy", "constant"), ("blur_radius", 0.0), ("blur_every", 0), ("contrib_pct", 0.0)),
             (("decay", 0.01, 0.5), ("lr", 10.0, 3000.0)), (("norm_pct", 5.0, 50.0),), ()),
    3: Space("small decay + blur",
             (("lr_policy", "constant"), ("norm_pct", 0.0), ("contrib_pct", 0.0)),
             (("decay", 1e-5, 1e-2), ("lr", 10.0, 1000.0)), (("blur_radius", 0.5, 2.0),),
             (("blur_every", (1, 2, 3, 4, 6, 8)),)),
    4: Space("contribution clip + small blur + progress lr",
             (("lr_policy", "progress"), ("decay", 0.0), ("norm_pct", 0.0)),
             (("desired_prog", 2.0, 512.0), ("max_lr", 100.0, 1e8)),
             (("blur_radius", 0.3, 1.0), ("contrib_pct", 50.0, 95.0)), (("blur_every", EVERY),)),
}


def spaces(robust: bool = False) -> dict[int, Space]:
    """Each row's space: :data:`SPACES`, or with :data:`ROBUST`'s lists drawn last (module docstring)."""
    if not robust:
        return dict(SPACES)
    return {row: Space(f"{space.character} + jitter/scale/rotation", space.fixed, space.log_uniform, space.uniform,
                       space.lists, ROBUST) for row, space in SPACES.items()}


def trial_settings(row: int, index: int, seed: int = 0, steps: Sequence[int] = DEFAULT_STEPS,
                   robust: bool = False) -> Settings:
    """The θ of trial ``index`` of ``row`` (reproducible; module docstring)."""
    return spaces(robust)[row].sample(random.Random(f"{seed}:{row}:{index}"), steps)
