"""θ: the regularization and step-size hyperparameters of an optimization run, as one table.

Conventions
-----------
* **θ is one table.**  Each field of :class:`Settings` carries its own label, help
  text, kind, range, widget step and CLI flag (:class:`Theta`, in the field's
  metadata); validation, the pages' θ editor, the CLI flags and the help text are
  all generated from it (:data:`THETA`).  Adding a setting is one field here plus
  its use in the engine (:mod:`deepvis.optimize`).
* A field added after θ's files first shipped (:data:`LATER`) is left out of
  :meth:`Settings.to_dict` at its "off" value, so older files, caches and atlases
  keep their keys.
* Values are in the optimizer's pixel space (0-255 units, mean subtracted; see
  :mod:`deepvis.optimize`).  Percentiles are in [0, 100].
* Named θ (Table 1's rows, calibrated rows, the later parametrizations' defaults)
  live in :mod:`deepvis.presets`; what a run maximizes in :mod:`deepvis.targets`;
  a saved comparison in :mod:`deepvis.experiment`.
* Pure Python: no torch, no model.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from deepvis.errors import DeepvisError

DEFAULT_MODEL = "efficientnet_lite0"  # the embedded network (built by deepvis.models)
LR_POLICIES = ("constant", "progress")
MIN_SIZE, MAX_SIZE = 8, 1024
MAX_STEPS = 100_000

LR_RULE = ("lr multiplies the gradient w.r.t. the network's own input (g = s · ∂obj/∂pixel, s = the model's std "
           "in 0-255 units) and the step is taken in 0-255 pixel space: x += lr · g. The progress policy picks "
           "lr = min(max lr, desired progress / (∂obj/∂pixel · g)), so each step is predicted to raise the "
           "objective by the desired progress.")


class OptimizeError(DeepvisError):
    """A run cannot be set up (bad target, size, unit, ...); the message says why."""


def is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


def fmt(value: float) -> str:
    """``1e-4`` rather than ``0.0001``, ``100`` rather than ``100.0``."""
    text = f"{value:g}"
    return text.replace("e-0", "e-").replace("e+0", "e").replace("e+", "e")


@dataclass(frozen=True)
class Theta:
    """One row of the θ table: how a :class:`Settings` field is labelled, explained, bounded and flagged."""

    name: str
    label: str
    help: str
    kind: str  # "float", "int", "percent" (a float in [0, 100], a slider) or "choice"
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # the bound itself is not allowed
    high_open: bool = False
    step: float = 1.0  # the widget's step
    choices: tuple[str, ...] = ()
    enabled_by: tuple[tuple[str, tuple[str, ...]], ...] = ()  # ((field, values), ...): used only when each holds

    def enabled(self, values: Mapping[str, Any]) -> bool:
        """Whether this setting is used, given the other settings' ``values`` (by field name)."""
        return all(values[other] in allowed for other, allowed in self.enabled_by)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, value: Any) -> Any:
        """``value`` converted to the field's type, or a ``ValueError`` saying what is allowed."""
        if self.kind == "choice":
            if value not in self.choices:
                raise DeepvisError(f"{self.name} must be one of {', '.join(self.choices)}, not {value!r}")
            return value
        if self.kind == "int":
            if not is_int(value):
                raise DeepvisError(f"{self.name} must be a whole number, not {value!r}")
            value = int(value)
        else:
            if not _is_number(value):
                raise DeepvisError(f"{self.name} must be a finite number, not {value!r}")
            value = float(value)
        too_low = self.low is not None and (value < self.low or (self.low_open and value == self.low))
        too_high = self.high is not None and (value > self.high or (self.high_open and value == self.high))
        if too_low or too_high:
            raise DeepvisError(f"{self.name} must be {self.interval}, not {fmt(value)}")
        return value

    @property
    def interval(self) -> str:
        if self.low is not None and self.high is not None:
            return (f"in {'(' if self.low_open else '['}{fmt(self.low)}, {fmt(self.high)}"
                    f"{')' if self.high_open else ']'}")
        return f"{'above' if self.low_open else 'at least'} {fmt(self.low)}"


def _theta(default: Any, label: str, help: str, kind: str = "float", when: Mapping[str, tuple[str, ...]] | None = None,
           **limits: Any) -> Any:
    """A θ field; ``when`` maps other fields to the values under which this one is used."""
    limits["enabled_by"] = tuple((k, tuple(v)) for k, v in (when or {}).items())
    return field(default=default, metadata={"theta": (label, help, kind, limits)})


PARAMS = ("pixels", "fourier", "maco", "accentuate")
PARAM_NAMES = {"pixels": "pixels (the paper)", "fourier": "Fourier + decorrelated + transforms (Olah 2017)",
               "maco": "magnitude-constrained phase (MACO, Fel 2023)",
               "accentuate": "feature accentuation of a photo (Hamblin 2024)"}
PAPER = {"param": ("pixels",)}  # the paper's own θ apply to pixel rows only
MODERN = {"param": PARAMS[1:]}
CROPPED = {"param": ("maco", "accentuate")}


LATER = {"jitter": 0, "scale": 0.0, "rotate": 0.0}  # fields added after θ's files first shipped, and their "off" value (Settings.to_dict)


@dataclass(frozen=True)
class Settings:
    """The regularization and step-size hyperparameters θ of one run (one batch row); see module docstring."""

    param: str = _theta(
        "pixels", "Parametrization",
        "pixels: the paper's regularized ascent on the pixels; fourier: Olah et al. 2017's Fourier-space, "
        "colour-decorrelated image under random jitter, scale and rotation (Adam); maco: only the Fourier phase, "
        "the magnitude fixed to natural photos' (Fel et al. 2023, NAdam); accentuate: start from a photo and "
        "raise the unit while staying close to it (Hamblin et al. 2024, NAdam).", "choice", choices=PARAMS)
    steps: int = _theta(1000, "Iterations", "Number of gradient-ascent iterations.", "int", low=1, high=MAX_STEPS)
    lr_policy: str = _theta(
        "constant", "Learning-rate policy",
        "constant: a fixed lr; progress: lr chosen so each step aims at a fixed gain (capped by max lr).",
        "choice", when=PAPER, choices=LR_POLICIES)
    lr: float = _theta(100.0, "lr (constant policy)",
                       "Step size (constant policy), applied to the gradient w.r.t. the network's input.",
                       low=0, step=10.0, when={**PAPER, "lr_policy": ("constant",)})
    max_lr: float = _theta(100.0, "max lr (progress policy)", "Upper bound on the step size under the progress policy.",
                           low=0, low_open=True, step=10.0, when={**PAPER, "lr_policy": ("progress",)})
    desired_prog: float = _theta(2.0, "Desired progress (progress policy)",
                                 "Progress policy: the objective gain each step aims at (first-order prediction).",
                                 low=0, low_open=True, step=0.5, when={**PAPER, "lr_policy": ("progress",)})
    decay: float = _theta(1e-4, "L2 decay",
                          "L2 decay: shrinks every pixel towards the mean each step, keeping the image from saturating.",
                          when=PAPER, low=0, high=1, high_open=True, step=1e-4)
    blur_radius: float = _theta(1.0, "Blur σ (px)",
                                "Gaussian blur σ in pixels: removes high-frequency noise, favouring smooth, larger "
                                "shapes.", when=PAPER, low=0, step=0.1)
    blur_every: int = _theta(4, "Blur every n steps",
                             "Blur after every n-th step (0 = never); rarer blurs leave more fine detail.", "int",
                             when=PAPER, low=0)
    jitter: int = _theta(0, "Jitter (px)",
                         "Each step the network sees the image shifted (wrapped around) by a random 0 to ±n pixels "
                         "in each direction, so the image has to work wherever it sits; this weakens pixel-exact "
                         "high-frequency patterns (0 = the paper's fixed view).", "int", when=PAPER, low=0, high=256)
    scale: float = _theta(0.0, "Scale (±fraction)",
                          "Each step the network sees the image zoomed about its centre by a random factor in "
                          "1 ± this (0.1 = 0.9-1.1, Lucid's standard transforms), so it has to work at more than one "
                          "size (0 = the paper's fixed view).", when=PAPER, low=0, high=0.5, step=0.05)
    rotate: float = _theta(0.0, "Rotation (±°)",
                           "Each step the network sees the image turned about its centre by a random angle within "
                           "± this many degrees (Lucid: 10), so it has to work at more than one angle (0 = the "
                           "paper's fixed view).", when=PAPER, low=0, high=45, step=1.0)
    norm_pct: float = _theta(0.0, "Norm clip percentile",
                             "Pixels whose colour strength is below this percentile are reset to the mean (grey).",
                             "percent", when=PAPER, low=0, high=100)
    contrib_pct: float = _theta(0.0, "Contribution clip percentile",
                                "Pixels contributing less than this percentile to the unit are reset to the mean.",
                                "percent", when=PAPER, low=0, high=100)
    adam_lr: float = _theta(0.05, "Adam lr", "Step size of the parametrization's Adam-style optimizer (Olah 2017: "
                            "Adam 0.05; MACO and accentuation: NAdam 1.0 in their reference code).",
                            when=MODERN, low=0, low_open=True, step=0.01)
    crops: int = _theta(6, "Crops per step", "Random crops of the image the network sees each step (MACO's "
                        "transformation robustness); more is smoother and slower.", "int", when=CROPPED, low=1, high=64)
    noise: float = _theta(0.05, "Crop noise", "Gaussian plus uniform noise added to each crop, in the network's "
                          "input units (MACO: 0.05).", when=CROPPED, low=0, step=0.01)
    closeness: float = _theta(1.0, "Closeness to the photo",
                              "Accentuation: weight of the mean squared distance to the photo (network input units); "
                              "higher keeps the image nearer the photo.", when={"param": ("accentuate",)}, low=0,
                              step=0.5)

    def __post_init__(self) -> None:
        for theta in THETA:
            object.__setattr__(self, theta.name, theta.check(getattr(self, theta.name)))

    @property
    def blurs(self) -> bool:
        return self.blur_every > 0 and self.blur_radius > 0

    @property
    def label(self) -> str:
        if self.param != "pixels":
            extra = f" · {self.crops} crops" if self.param in CROPPED["param"] else ""
            extra += f" · closeness {fmt(self.closeness)}" if self.param == "accentuate" else ""
            return f"{self.param} · lr {fmt(self.adam_lr)}{extra} · {self.steps} it"
        blur = f"blur {fmt(self.blur_radius)}/{self.blur_every}" if self.blurs else "no blur"
        lr = f"lr {fmt(self.lr)}" if self.lr_policy == "constant" else \
            f"lr progress {fmt(self.desired_prog)} ≤ {fmt(self.max_lr)}"
        jitter = f" · jitter {self.jitter}" if self.jitter else ""
        jitter += f" · scale ±{fmt(self.scale)}" if self.scale else ""
        jitter += f" · rotate ±{fmt(self.rotate)}°" if self.rotate else ""
        return (f"decay {fmt(self.decay)} · {blur}{jitter} · norm {fmt(self.norm_pct)}% · "
                f"contrib {fmt(self.contrib_pct)}% · {lr} · {self.steps} it")

    def to_dict(self) -> dict[str, Any]:
        """Every field, except a field added later (:data:`LATER`) at its default: files, caches and atlases
        written before it existed keep their keys, and read back as the same θ."""
        data = dataclasses.asdict(self)
        for name, default in LATER.items():
            if data[name] == default:
                del data[name]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Settings:
        if not isinstance(data, Mapping):
            raise DeepvisError("settings must be a JSON object")
        unknown = set(data) - {t.name for t in THETA}
        if unknown:
            raise DeepvisError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        return cls(**data)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def _table() -> tuple[Theta, ...]:
    rows = []
    for f in dataclasses.fields(Settings):
        label, help_text, kind, limits = f.metadata["theta"]
        rows.append(Theta(f.name, label, help_text, kind, **limits))
    return tuple(rows)


THETA: tuple[Theta, ...] = _table()





def read_json_file(text: str | bytes, file_format: str, what: str) -> dict[str, Any]:
    """A deepvis JSON file of ``file_format``, version 1, as a dict; a one-line ``ValueError`` naming ``what``
    (e.g. "saved deepvis comparison") when it is not one."""
    try:
        data = json.loads(text)
    except (ValueError, TypeError) as exc:
        raise DeepvisError(f"This is not a JSON file ({exc.__class__.__name__}).") from None
    if not isinstance(data, dict) or data.get("format") != file_format:
        raise DeepvisError(f"This JSON file is not a {what}.")
    if data.get("version") != 1:
        raise DeepvisError(f"Unsupported {what} file version {data.get('version')!r}.")
    return data


