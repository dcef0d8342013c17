"""Regularized gradient ascent in image space (Yosinski et al. 2015, section 3).

Synthesizes the image a unit "wants to see", following the semantics of the
authors' deep-visualization-toolbox optimizer.

Conventions
-----------
* **Pixel space.**  The image ``x`` is ``(B, 3, H, W)`` float32 in 0-255 units
  with the model's mean subtracted (``spec.normalization.mean255``), the paper's
  space, so blur radii, percentiles, decay and the N(0, 10) start carry over.
  The start ``x0 ~ N(0, 10)`` per pixel comes from a CPU ``torch.Generator``
  seeded with ``seed`` and is the same for every row of a batch, so a row's
  settings and unit are the only difference between rows.  Displayed images
  are ``clip(x + mean, 0, 255)`` as uint8 ``(H, W, 3)``.
* **The network** sees ``normalize(x + mean)`` = ``x / s_c`` with ``s_c`` the
  model's std of channel c in 0-255 units (128 for the embedded model, about
  58 for torchvision's ImageNet models).  On a CPU that input is handed over
  channels-last (about 15-20 % faster for the embedded model on our 2-core CPU);
  the model itself is never touched.
* **Learning-rate rule.**  CaffeNet took raw 0-255 input, so the paper's ``lr``
  multiplies the gradient with respect to the *network's own input*:
  ``g_in = s_c * d(objective)/dx`` per channel, and the step is taken in pixel
  space, ``x += lr * g_in`` (``lr * s`` on the pixel-space gradient).  The
  contribution clip also uses ``g_in``.
* **Progress policy.**  As in the authors' code, ``lr`` is chosen so that the
  step's first-order predicted gain of the objective equals ``desired_prog``,
  capped by ``max_lr``.  The step ``x += lr * g_in`` predicts a gain of
  ``lr * <grad_x, g_in>``, so ``lr = min(max_lr, desired_prog / <grad_x, g_in>)``
  per row, where ``<grad_x, g_in> = sum(s_c * grad_x^2) = sum(g_in^2 / s_c)``.
  With CaffeNet's raw input (s = 1) this is the paper's
  ``desired_prog / ||grad||^2``; ``desired_prog / ||g_in||^2`` would instead
  predict a gain of only ``desired_prog / s`` (2/128 per step for the embedded
  model: Table 1 rows 1 and 4 then leave the image grey).
* **Objective**, always maximized: for a conv layer one activation
  ``(c, y, x)`` (default the centre of the layer's output at the run's image
  size) or the channel's spatial mean; for a vector layer (logits) the element
  ``c`` (a class).
* **One iteration** ``it`` (0-based): clip ``x + mean`` to [0, 255]; forward to
  the deepest target layer only; objective; ``torch.autograd.grad`` w.r.t.
  ``x``; then, unless ``it`` is the row's last iteration: (1) ``x += lr * g_in``,
  ``x *= 1 - decay``; (2) Gaussian blur with sigma ``blur_radius`` when
  ``blur_every > 0 and blur_radius > 0 and it % blur_every == 0``; (3) pixels
  whose L2 norm over channels is below the ``norm_pct`` percentile -> 0;
  (4) pixels whose ``|sum_c g_in * -x|`` is below the ``contrib_pct``
  percentile -> 0.  Iteration ``it`` records the image it evaluated.
* **Batch.**  Each row has its own target and settings; one forward/backward
  per iteration serves all rows still running.  A row stops after its own
  ``steps`` iterations and no longer changes; the batch runs to the longest.
* The model is shared: hooks live only inside :func:`deepvis.activations.capture`
  (thread-owned, removed on return), gradients come from ``torch.autograd.grad``,
  so neither a finished nor an abandoned generator leaves anything on it.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import math
import numbers
import time
import types
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from deepvis import regularizers as reg
from deepvis.activations import capture
from deepvis.images import normalize
from deepvis.models import DEFAULT_MODEL, LoadedModel

LR_POLICIES = ("constant", "progress")
OBJECTIVES = ("neuron", "channel")
MIN_SIZE, MAX_SIZE = 8, 1024
MAX_STEPS = 100_000
INIT_STD = 10.0

LR_RULE = ("lr multiplies the gradient w.r.t. the network's own input (g = s · ∂obj/∂pixel, s = the model's std "
           "in 0-255 units) and the step is taken in 0-255 pixel space: x += lr · g. The progress policy picks "
           "lr = min(max lr, desired progress / (∂obj/∂pixel · g)), so each step is predicted to raise the "
           "objective by the desired progress.")

THETA_HELP: Mapping[str, str] = types.MappingProxyType({
    "decay": "L2 decay: shrinks every pixel towards the mean each step, keeping the image from saturating.",
    "blur_radius": "Gaussian blur σ in pixels: removes high-frequency noise, favouring smooth, larger shapes.",
    "blur_every": "Blur after every n-th step (0 = never); rarer blurs leave more fine detail.",
    "norm_pct": "Pixels whose colour strength is below this percentile are reset to the mean (grey).",
    "contrib_pct": "Pixels contributing less than this percentile to the unit are reset to the mean.",
    "steps": "Number of gradient-ascent iterations.",
    "lr_policy": "constant: a fixed lr; progress: lr chosen so each step aims at a fixed gain (capped by max lr).",
    "lr": "Step size (constant policy), applied to the gradient w.r.t. the network's input.",
    "max_lr": "Upper bound on the step size under the progress policy.",
    "desired_prog": "Progress policy: the objective gain each step aims at (first-order prediction).",
})


class OptimizeError(ValueError):
    """A run cannot be set up (bad target, size, ...); the message says why."""


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


def _fmt(value: float) -> str:
    text = f"{value:g}"
    return text.replace("e-0", "e-").replace("e+0", "e").replace("e+", "e")


@dataclass(frozen=True)
class Settings:
    """The regularization and step-size hyperparameters θ of one run (one batch row)."""

    decay: float = 1e-4
    blur_radius: float = 1.0
    blur_every: int = 4
    norm_pct: float = 0.0
    contrib_pct: float = 0.0
    steps: int = 1000
    lr_policy: str = "constant"
    lr: float = 100.0
    max_lr: float = 100.0
    desired_prog: float = 2.0

    def __post_init__(self) -> None:
        for name in ("decay", "blur_radius", "norm_pct", "contrib_pct", "lr", "max_lr", "desired_prog"):
            value = getattr(self, name)
            if not _is_number(value):
                raise ValueError(f"{name} must be a finite number, not {value!r}")
            object.__setattr__(self, name, float(value))
        for name in ("blur_every", "steps"):
            if not _is_int(getattr(self, name)):
                raise ValueError(f"{name} must be a whole number, not {getattr(self, name)!r}")
            object.__setattr__(self, name, int(getattr(self, name)))
        if not 0 <= self.decay < 1:
            raise ValueError(f"decay must be in [0, 1), not {self.decay:g}")
        if self.blur_radius < 0:
            raise ValueError(f"blur_radius must not be negative, not {self.blur_radius:g}")
        if self.blur_every < 0:
            raise ValueError(f"blur_every must not be negative, not {self.blur_every}")
        for name in ("norm_pct", "contrib_pct"):
            if not 0 <= getattr(self, name) <= 100:
                raise ValueError(f"{name} is a percentile and must be between 0 and 100, not {getattr(self, name):g}")
        if not 1 <= self.steps <= MAX_STEPS:
            raise ValueError(f"steps must be between 1 and {MAX_STEPS}, not {self.steps}")
        if self.lr_policy not in LR_POLICIES:
            raise ValueError(f"lr_policy must be one of {', '.join(LR_POLICIES)}, not {self.lr_policy!r}")
        if self.lr < 0:
            raise ValueError(f"lr must not be negative, not {self.lr:g}")
        if self.max_lr <= 0 or self.desired_prog <= 0:
            raise ValueError("max_lr and desired_prog must be positive")

    @property
    def blurs(self) -> bool:
        return self.blur_every > 0 and self.blur_radius > 0

    @property
    def label(self) -> str:
        blur = f"blur {_fmt(self.blur_radius)}/{self.blur_every}" if self.blurs else "no blur"
        if self.lr_policy == "constant":
            lr = f"lr {_fmt(self.lr)}"
        else:
            lr = f"lr progress {_fmt(self.desired_prog)} ≤ {_fmt(self.max_lr)}"
        return (f"decay {_fmt(self.decay)} · {blur} · norm {_fmt(self.norm_pct)}% · "
                f"contrib {_fmt(self.contrib_pct)}% · {lr} · {self.steps} it")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Settings:
        if not isinstance(data, Mapping):
            raise ValueError("settings must be a JSON object")
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        return cls(**data)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


PRESETS: Mapping[int, Settings] = types.MappingProxyType({
    1: Settings(decay=0.0, blur_radius=0.5, blur_every=4, norm_pct=50, contrib_pct=0, steps=500,
                lr_policy="progress", max_lr=100.0, desired_prog=2.0),
    2: Settings(decay=0.3, blur_radius=0.0, blur_every=0, norm_pct=20, contrib_pct=0, steps=750,
                lr_policy="constant", lr=100.0),
    3: Settings(decay=1e-4, blur_radius=1.0, blur_every=4, norm_pct=0, contrib_pct=0, steps=1000,
                lr_policy="constant", lr=100.0),
    4: Settings(decay=0.0, blur_radius=0.5, blur_every=4, norm_pct=0, contrib_pct=90, steps=1000,
                lr_policy="progress", max_lr=1e8, desired_prog=2.0),
})
PRESET_NAMES: Mapping[int, str] = types.MappingProxyType({n: f"Table 1 row {n}" for n in PRESETS})


def preset(number: int) -> Settings:
    """Table 1 row ``number`` (1-4) of the paper."""
    if not _is_int(number) or number not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(map(str, PRESETS))}, not {number!r}")
    return PRESETS[number]


@dataclass(frozen=True)
class Target:
    """The unit to maximize: ``unit`` is a channel (conv layer) or an element/class (vector layer)."""

    layer: str
    unit: int
    objective: str = "neuron"
    position: tuple[int, int] | None = None  # (y, x) for "neuron" on a conv layer; None = centre

    def __post_init__(self) -> None:
        if not isinstance(self.layer, str) or not self.layer:
            raise ValueError("layer must be a non-empty layer name")
        if not _is_int(self.unit) or self.unit < 0:
            raise ValueError(f"unit must be a non-negative whole number, not {self.unit!r}")
        object.__setattr__(self, "unit", int(self.unit))
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, not {self.objective!r}")
        if self.position is not None:
            pos = tuple(self.position)
            if len(pos) != 2 or not all(_is_int(v) and v >= 0 for v in pos):
                raise ValueError(f"position must be two non-negative whole numbers (y, x), not {self.position!r}")
            object.__setattr__(self, "position", (int(pos[0]), int(pos[1])))

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
            raise ValueError("target must be a JSON object")
        unknown = set(data) - {"layer", "unit", "objective", "position"}
        if unknown:
            raise ValueError(f"unknown target field(s): {', '.join(sorted(unknown))}")
        if "layer" not in data or "unit" not in data:
            raise ValueError("target needs a layer and a unit")
        position = data.get("position")
        return cls(data["layer"], data["unit"], data.get("objective", "neuron"),
                   tuple(position) if isinstance(position, (list, tuple)) else position)


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
            raise ValueError("an experiment needs at least one target")
        if not self.settings or not all(isinstance(s, Settings) for s in self.settings):
            raise ValueError("an experiment needs at least one setting")
        if not _is_int(self.seed) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative whole number, not {self.seed!r}")
        if self.size is not None and (not _is_int(self.size) or not MIN_SIZE <= self.size <= MAX_SIZE):
            raise ValueError(f"size must be between {MIN_SIZE} and {MAX_SIZE} pixels, not {self.size!r}")
        if not isinstance(self.model, str) or not self.model:
            raise ValueError("model must be a model name")

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
        try:
            data = json.loads(text)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"This is not a JSON file ({exc.__class__.__name__}).") from None
        if not isinstance(data, dict) or data.get("format") != EXPERIMENT_FORMAT:
            raise ValueError("This JSON file is not a saved deepvis comparison.")
        if data.get("version") != 1:
            raise ValueError(f"Unsupported comparison file version {data.get('version')!r}.")
        try:
            targets = [Target.from_dict(t) for t in data["targets"]]
            settings = [Settings.from_dict(s) for s in data["settings"]]
            return cls(tuple(targets), tuple(settings), data.get("seed", 0), data.get("size"),
                       data.get("model", DEFAULT_MODEL))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"The comparison file is incomplete ({exc.__class__.__name__}: {exc}).") from None


@dataclass(frozen=True)
class RowStats:
    """One row at one snapshot."""

    step: int  # the row's own 0-based iteration of the shown image
    objective: float
    is_argmax: bool
    norm: float
    std: float
    lr: float  # the lr of the step after ``step`` (0 once finished)
    finished: bool


@dataclass(frozen=True, eq=False)
class RowRecord:
    """What one row's run recorded so far (all iterations up to the snapshot it came with)."""

    target: Target
    settings: Settings
    objectives: np.ndarray = field(repr=False)  # (n,) float64
    is_argmax: np.ndarray = field(repr=False)  # (n,) bool
    norms: np.ndarray = field(repr=False)  # (n,) L2 norm of x
    stds: np.ndarray = field(repr=False)  # (n,) std of x
    best_image: np.ndarray = field(repr=False)  # (H, W, 3) uint8
    best_objective: float
    best_step: int
    last_image: np.ndarray = field(repr=False)  # (H, W, 3) uint8
    argmax_step: int | None
    finished: bool

    @property
    def steps_done(self) -> int:
        return int(self.objectives.shape[0])

    @property
    def initial(self) -> float:
        return float(self.objectives[0])

    @property
    def final(self) -> float:
        return float(self.objectives[-1])

    def summary(self) -> dict[str, Any]:
        return {"layer": self.target.layer, "unit": self.target.unit, "objective": self.target.objective,
                "steps": self.steps_done, "initial": self.initial, "final": self.final,
                "best": self.best_objective, "best_step": self.best_step, "argmax_step": self.argmax_step}


@dataclass(frozen=True, eq=False)
class RunRecord:
    """All rows of a run, as of ``iteration``; ``seconds`` is compute time so far."""

    rows: tuple[RowRecord, ...]
    seed: int
    size: int
    iteration: int
    seconds: float
    done: bool

    def summaries(self) -> list[dict[str, Any]]:
        return [row.summary() for row in self.rows]

    @property
    def last_images(self) -> np.ndarray:
        return np.stack([row.last_image for row in self.rows])

    @property
    def best_images(self) -> np.ndarray:
        return np.stack([row.best_image for row in self.rows])


@dataclass(frozen=True, eq=False)
class Snapshot:
    """What :func:`optimize` yields every ``every`` iterations and at the end."""

    iteration: int
    total: int
    images: np.ndarray = field(repr=False)  # (B, H, W, 3) uint8
    objectives: np.ndarray  # (B,) float64
    stats: tuple[RowStats, ...]
    record: RunRecord = field(repr=False)
    done: bool

    @property
    def progress(self) -> float:
        return (self.iteration + 1) / self.total


def initial_image(size: int, seed: int = 0, device: torch.device | str = "cpu") -> torch.Tensor:
    """``x0 ~ N(0, 10)``, ``(1, 3, size, size)`` float32, drawn on the CPU so every device starts alike."""
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    return (torch.randn(1, 3, size, size, generator=generator) * INIT_STD).to(device)


def _broadcast(targets: Target | Sequence[Target], settings: Settings | Sequence[Settings]
               ) -> tuple[list[Target], list[Settings]]:
    target_list = [targets] if isinstance(targets, Target) else list(targets)
    settings_list = [settings] if isinstance(settings, Settings) else list(settings)
    if not target_list or not settings_list:
        raise OptimizeError("optimize needs at least one target and one setting")
    if not all(isinstance(t, Target) for t in target_list):
        raise OptimizeError("targets must be Target objects")
    if not all(isinstance(s, Settings) for s in settings_list):
        raise OptimizeError("settings must be Settings objects")
    if len(target_list) == 1:
        target_list = target_list * len(settings_list)
    elif len(settings_list) == 1:
        settings_list = settings_list * len(target_list)
    if len(target_list) != len(settings_list):
        raise OptimizeError(f"{len(target_list)} targets and {len(settings_list)} settings: give one of either, "
                            "or as many of each")
    return target_list, settings_list


class _Objective:
    """Per-row objective and is-argmax for a fixed set of rows, grouped by (layer, objective kind)."""

    def __init__(self, targets: Sequence[Target], rows: Sequence[int], acts: Mapping[str, torch.Tensor]) -> None:
        self.groups: list[tuple[str, str, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]] = []
        device = next(iter(acts.values())).device
        order: list[int] = []
        for (layer, kind), members in itertools.groupby(
                sorted(range(len(rows)), key=lambda i: (targets[rows[i]].layer, targets[rows[i]].objective)),
                key=lambda i: (targets[rows[i]].layer, targets[rows[i]].objective)):
            members = list(members)
            shape = acts[layer].shape[1:]
            units = [targets[rows[i]].unit for i in members]
            ys: list[int] = []
            xs: list[int] = []
            for i, unit in zip(members, units):
                target = targets[rows[i]]
                if unit >= shape[0]:
                    raise OptimizeError(f"{layer} has {shape[0]} {'channels' if len(shape) == 3 else 'units'}; "
                                        f"unit {unit} does not exist.")
                if len(shape) == 3:
                    y, x = target.position if target.position is not None else (shape[1] // 2, shape[2] // 2)
                    if y >= shape[1] or x >= shape[2]:
                        raise OptimizeError(f"position {(y, x)} is outside {layer}'s {shape[1]} x {shape[2]} "
                                            "output at this image size.")
                    ys.append(y)
                    xs.append(x)
            spatial = len(shape) == 3
            kind = kind if spatial else "vector"
            self.groups.append((
                layer, kind, torch.tensor(members, device=device), torch.tensor(units, device=device),
                torch.tensor(ys, device=device) if spatial else None,
                torch.tensor(xs, device=device) if spatial else None))
            order.extend(members)
        self.order = torch.tensor(order, device=device)  # position in `rows` of each concatenated objective

    def __call__(self, acts: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(objectives, is_argmax), both in the concatenated group order (see ``self.order``)."""
        values, argmax = [], []
        for layer, kind, members, units, ys, xs in self.groups:
            act = acts[layer][members]
            batch = torch.arange(act.shape[0], device=act.device)
            if kind == "neuron":
                values.append(act[batch, units, ys, xs])
                height, width = act.shape[2], act.shape[3]
                flat = act.detach().flatten(1).argmax(dim=1)
                argmax.append(flat == units * height * width + ys * width + xs)
            elif kind == "channel":
                means = act.mean(dim=(2, 3))
                values.append(means[batch, units])
                argmax.append(means.detach().argmax(dim=1) == units)
            else:
                values.append(act[batch, units])
                argmax.append(act.detach().argmax(dim=1) == units)
        return torch.cat(values), torch.cat(argmax)


def _to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """``(B, 3, H, W)`` 0-255 floats -> ``(B, H, W, 3)`` uint8 on the CPU."""
    return pixels.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def optimize(model: LoadedModel, targets: Target | Sequence[Target], settings: Settings | Sequence[Settings],
             *, seed: int = 0, size: int | None = None, every: int = 10) -> Generator[Snapshot, None, None]:
    """Run regularized gradient ascent for every row; yield :class:`Snapshot` s (see module docstring)."""
    target_list, settings_list = _broadcast(targets, settings)
    size = model.spec.input_size if size is None else size
    if not _is_int(size) or not MIN_SIZE <= size <= MAX_SIZE:
        raise OptimizeError(f"image size must be between {MIN_SIZE} and {MAX_SIZE} pixels, not {size!r}")
    if not _is_int(every) or every < 1:
        raise OptimizeError(f"every must be a positive whole number, not {every!r}")
    if not _is_int(seed) or seed < 0:
        raise OptimizeError(f"seed must be a non-negative whole number, not {seed!r}")
    for target in target_list:
        info = model.layer(target.layer)  # raises ModelError (a ValueError) naming the layers
        if target.unit >= info.channels:
            noun = "channels" if info.is_spatial else "units"
            raise OptimizeError(f"{target.layer} has {info.channels} {noun}; unit {target.unit} does not exist.")
    layers = list(dict.fromkeys(t.layer for t in target_list))
    try:  # one dry pass, so a size the network cannot take fails here, in plain words
        capture(model.module, torch.zeros(1, 3, size, size, device=model.device), layers)
    except RuntimeError:
        raise OptimizeError(f"A {size}-pixel image is too small for {', '.join(layers)} of "
                            f"{model.spec.title}; try a larger image size.") from None
    return _optimize(model, target_list, settings_list, int(seed), int(size), int(every))


def _optimize(model: LoadedModel, targets: list[Target], settings: list[Settings], seed: int, size: int,
              every: int) -> Generator[Snapshot, None, None]:
    started = time.perf_counter()
    seconds = 0.0
    module = model.module
    device = next(module.parameters()).device
    norm = model.spec.normalization
    mean = torch.tensor(norm.mean255, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    std = torch.tensor(norm.std255, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    rows = len(targets)
    steps = [s.steps for s in settings]
    total = max(steps)

    x = initial_image(size, seed, device).expand(rows, -1, -1, -1).clone()
    hist_obj = torch.zeros(total, rows, dtype=torch.float64, device=device)
    hist_max = torch.zeros(total, rows, dtype=torch.bool, device=device)
    hist_norm = torch.zeros(total, rows, dtype=torch.float64, device=device)
    hist_std = torch.zeros(total, rows, dtype=torch.float64, device=device)
    best_obj = torch.full((rows,), -math.inf, dtype=torch.float64, device=device)
    best_step = torch.zeros(rows, dtype=torch.long, device=device)
    best_x = x.clone()
    last_lr = torch.zeros(rows, dtype=torch.float64, device=device)

    constant = torch.tensor([s.lr_policy == "constant" for s in settings], device=device)
    lr_const = torch.tensor([s.lr for s in settings], dtype=torch.float32, device=device)
    max_lr = torch.tensor([s.max_lr for s in settings], dtype=torch.float32, device=device)
    desired = torch.tensor([s.desired_prog for s in settings], dtype=torch.float32, device=device)
    keep = torch.tensor([1.0 - s.decay for s in settings], dtype=torch.float32, device=device)

    objective_cache: dict[tuple[int, ...], _Objective] = {}

    def snapshot(iteration: int, images: np.ndarray, done: bool) -> Snapshot:
        objs = hist_obj.cpu().numpy()
        maxes = hist_max.cpu().numpy()
        norms = hist_norm.cpu().numpy()
        stds = hist_std.cpu().numpy()
        lrs = last_lr.cpu().tolist()
        best_images = _to_uint8(best_x + mean)
        best_objs = best_obj.cpu().tolist()
        best_steps = best_step.cpu().tolist()
        records, stats = [], []
        for b in range(rows):
            n = min(iteration + 1, steps[b])
            hits = np.flatnonzero(maxes[:n, b])
            finished = n == steps[b]
            records.append(RowRecord(
                targets[b], settings[b], objs[:n, b].copy(), maxes[:n, b].copy(), norms[:n, b].copy(),
                stds[:n, b].copy(), best_images[b], float(best_objs[b]), int(best_steps[b]), images[b].copy(),
                int(hits[0]) if hits.size else None, finished))
            stats.append(RowStats(n - 1, float(objs[n - 1, b]), bool(maxes[n - 1, b]), float(norms[n - 1, b]),
                                  float(stds[n - 1, b]), 0.0 if finished else float(lrs[b]), finished))
        record = RunRecord(tuple(records), seed, size, iteration, seconds, done)
        return Snapshot(iteration, total, images, np.array([s.objective for s in stats]), tuple(stats), record,
                        done)

    for it in range(total):
        active = tuple(b for b in range(rows) if it < steps[b])
        full = len(active) == rows  # the common case: plain tensors instead of gathers and scatters
        index = torch.tensor(active, device=device)
        sel = slice(None) if full else index
        xa = (x[sel] + mean).clamp(0, 255) - mean
        if full:
            x = xa
        else:
            x[index] = xa
        xa = xa.detach().requires_grad_(True)
        layers = sorted({targets[b].layer for b in active})
        with torch.enable_grad():
            inputs = normalize(xa + mean, norm)
            if device.type == "cpu":
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            acts = capture(module, inputs, layers, keep_graph=True)
            if active not in objective_cache:
                objective_cache[active] = _Objective(targets, active, acts)
            objective = objective_cache[active]
            values, is_max = objective(acts)
            (grad,) = torch.autograd.grad(values.sum(), xa)
        del acts
        where = index[objective.order]
        xd = xa.detach()
        values = values.detach().double()
        hist_obj[it, where] = values
        hist_max[it, where] = is_max
        flat = xd.flatten(1)
        # One pass of sums instead of torch.std (several ms per row on a CPU); x has mean ~0, so no cancellation.
        squares, sums = flat.pow(2).sum(dim=1).double(), flat.sum(dim=1).double()
        hist_norm[it, sel] = squares.sqrt()
        hist_std[it, sel] = (squares / flat.shape[1] - (sums / flat.shape[1]) ** 2).clamp(min=0).sqrt()
        row_values = torch.empty_like(values)
        row_values[objective.order] = values
        improved = row_values > best_obj[sel]
        best_obj[sel] = torch.where(improved, row_values, best_obj[sel])
        best_step[sel] = torch.where(improved, torch.full_like(best_step[sel], it), best_step[sel])
        if full:
            best_x = torch.where(improved.view(-1, 1, 1, 1), xd, best_x)
        else:
            best_x[index] = torch.where(improved.view(-1, 1, 1, 1), xd, best_x[index])

        is_snapshot = it % every == 0 or it == total - 1
        images = _to_uint8(x + mean) if is_snapshot else None

        g_in = grad * std
        moving = [i for i, b in enumerate(active) if it < steps[b] - 1]
        if moving:
            all_move = full and len(moving) == rows
            local = slice(None) if all_move else torch.tensor(moving, device=device)
            rows_m = slice(None) if all_move else index[local]
            xm, gm = xd[local], g_in[local]
            predicted_gain_per_lr = (grad[local] * gm).flatten(1).sum(dim=1)
            progress_lr = torch.minimum(max_lr[rows_m], desired[rows_m] / predicted_gain_per_lr)
            lr = torch.where(constant[rows_m], lr_const[rows_m], progress_lr)
            last_lr[rows_m] = lr.double()
            xm = (xm + lr.view(-1, 1, 1, 1) * gm) * keep[rows_m].view(-1, 1, 1, 1)
            chosen = [active[i] for i in moving]
            sigmas = [settings[b].blur_radius if reg.blur_due(settings[b].blur_radius, settings[b].blur_every, it)
                      else 0.0 for b in chosen]
            if any(sigmas):
                xm = reg.gaussian_blur(xm, sigmas)
            norm_pcts = [settings[b].norm_pct for b in chosen]
            if any(norm_pcts):
                xm = reg.clip_small_norm(xm, norm_pcts)
            contrib_pcts = [settings[b].contrib_pct for b in chosen]
            if any(contrib_pcts):
                xm = reg.clip_small_contribution(xm, gm, contrib_pcts)
            if all_move:
                x = xm
            else:
                x[rows_m] = xm

        if is_snapshot:
            now = time.perf_counter()
            seconds += now - started
            snap = snapshot(it, images, it == total - 1)
            yield snap
            started = time.perf_counter()


def run(model: LoadedModel, targets: Target | Sequence[Target], settings: Settings | Sequence[Settings],
        *, seed: int = 0, size: int | None = None) -> RunRecord:
    """Run :func:`optimize` to the end and return its final record."""
    last = None
    for last in optimize(model, targets, settings, seed=seed, size=size, every=MAX_STEPS):
        pass
    assert last is not None
    return last.record


def contrast_stretch(images: np.ndarray) -> np.ndarray:
    """Min-max stretch each uint8 image, ``(H, W, 3)`` or ``(B, H, W, 3)``, to the full 0-255 range."""
    array = np.asarray(images)
    if array.ndim not in (3, 4) or array.shape[-1] != 3:
        raise ValueError(f"contrast_stretch needs (H, W, 3) or (B, H, W, 3), got shape {array.shape}")
    batch = array[None] if array.ndim == 3 else array
    values = batch.astype(np.float64)
    low = values.min(axis=(1, 2, 3), keepdims=True)
    high = values.max(axis=(1, 2, 3), keepdims=True)
    span = np.where(high - low > 0, high - low, 1.0)
    out = np.clip((values - low) * (255.0 / span) + 0.5, 0, 255).astype(np.uint8)
    return out[0] if array.ndim == 3 else out


def find_class(class_names: Sequence[str], query: str | int) -> int:
    """A class index from an index or an exact, case-insensitive class name."""
    if _is_int(query) or (isinstance(query, str) and query.strip().isdigit()):
        index = int(query)
        if not 0 <= index < len(class_names):
            raise OptimizeError(f"class index must be between 0 and {len(class_names) - 1}, not {index}")
        return index
    wanted = str(query).strip().lower()
    for index, name in enumerate(class_names):
        if name.lower() == wanted:
            return index
    raise OptimizeError(f"No class called {query!r}.")


def compose_sheet(images: np.ndarray, rows: int, cols: int, row_labels: Sequence[str] = (),
                  col_labels: Sequence[str] = (), pad: int = 4) -> np.ndarray:
    """Lay ``(rows * cols, H, W, 3)`` uint8 images out row-major with labels -> one uint8 image."""
    array = np.asarray(images)
    if array.ndim != 4 or array.shape[0] != rows * cols or array.shape[-1] != 3:
        raise ValueError(f"compose_sheet needs ({rows * cols}, H, W, 3) images, got shape {array.shape}")
    if row_labels and len(row_labels) != rows or col_labels and len(col_labels) != cols:
        raise ValueError("need one label per row and per column")
    font = ImageFont.load_default()
    height, width = array.shape[1:3]
    line = 12
    top = (line * _wrapped_lines(col_labels, width) + pad) if col_labels else 0
    left = (max(len(t) for t in row_labels) * 6 + 2 * pad) if row_labels else 0
    sheet = Image.new("RGB", (left + cols * (width + pad) + pad, top + rows * (height + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for c, label in enumerate(col_labels):
        for k, text in enumerate(_wrap(label, width)):
            draw.text((left + pad + c * (width + pad), pad // 2 + k * line), text, fill="black", font=font)
    for r in range(rows):
        y = top + pad + r * (height + pad)
        if row_labels:
            draw.text((pad, y + height // 2 - line // 2), row_labels[r], fill="black", font=font)
        for c in range(cols):
            sheet.paste(Image.fromarray(array[r * cols + c]), (left + pad + c * (width + pad), y))
    return np.asarray(sheet, dtype=np.uint8)


def _wrap(text: str, width: int) -> list[str]:
    per_line = max(4, width // 6)
    words, lines, current = text.split(" "), [], ""
    for word in words:
        if current and len(current) + 1 + len(word) > per_line:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    return lines + [current] if current else lines


def _wrapped_lines(labels: Sequence[str], width: int) -> int:
    return max(len(_wrap(t, width)) for t in labels)


def gif_bytes(frames: Sequence[np.ndarray], duration_ms: int = 80) -> bytes:
    """An endlessly looping animated GIF of ``(H, W, 3)`` uint8 frames."""
    if not frames:
        raise ValueError("a GIF needs at least one frame")
    pictures = [Image.fromarray(np.asarray(f, dtype=np.uint8)) for f in frames]
    buffer = io.BytesIO()
    pictures[0].save(buffer, format="GIF", save_all=True, append_images=pictures[1:], duration=duration_ms,
                     loop=0, optimize=False)
    return buffer.getvalue()
