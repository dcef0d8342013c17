"""Preset families: the paper's Table 1 verbatim, and each network's own calibrated rows.

Conventions
-----------
* A preset is named by a string: ``"3"`` (or the int 3) is the model's calibrated
  row 3 when it has calibrated presets, else Table 1 row 3; ``"table1:3"`` is always
  the paper's CaffeNet row 3 verbatim (:data:`PRESETS`), except that its blur radius, a
  length in pixels of a ~224-px network, is scaled to the network's input side
  (:func:`table1_at`: ``× S / 224``; unchanged at 224 px).
* Calibrated rows keep Table 1's four characters (:mod:`deepvis.calibrate`); they
  are made by ``python -m deepvis calibrate`` and saved as JSON (format
  ``deepvis-presets``, version 1).  The embedded model's file ships in the package
  (``deepvis/presets/<model>.json``).
* Rows are numbered 1-4 as in Table 1.
* The later parametrizations are presets too, named by their parametrization
  (``"fourier"``, ``"maco"``, ``"accentuate"``; :data:`PARAM_PRESETS`):
  their papers' defaults, the same for every model.
* ``"none"`` (:data:`UNREGULARIZED`): plain gradient ascent with no regularizer at all, the paper's starting
  point: it reaches near-certain class scores with images nobody recognizes ("fooling images", Nguyen, Yosinski
  & Clune 2015; Szegedy et al. 2014).  Constant lr 100 (Table 1 row 2's) for 100 iterations: the embedded model
  gives its class p > 0.99 within about 10.
"""

from __future__ import annotations

import functools
import json
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from deepvis.errors import DeepvisError
from deepvis.settings import PARAM_NAMES, Settings, is_int, read_json_file

if TYPE_CHECKING:
    from deepvis.models import LoadedModel

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
# Each later parametrization with its published defaults: Olah et al. 2017 as in Lucid/Lucent's render_vis (Adam
# 0.05, 512 steps); MACO as in Fel et al.'s reference code (NAdam 1.0, 6 crops, noise 0.05; 256 steps as in
# Xplique's maco); accentuation as in Hamblin et al.'s (NAdam, 6 crops, noise 0.05, penalty 1), with a smaller
# step for this parametrization's spectrum scale (:mod:`deepvis.param_ascent`).
PARAM_PRESETS: Mapping[str, Settings] = types.MappingProxyType({
    "fourier": Settings(param="fourier", adam_lr=0.05, steps=512),
    "maco": Settings(param="maco", adam_lr=1.0, steps=256, crops=6, noise=0.05),
    "accentuate": Settings(param="accentuate", adam_lr=0.02, steps=128, crops=6, noise=0.05, closeness=1.0),
})
NONE = "none"
UNREGULARIZED = Settings(decay=0.0, blur_radius=0.0, blur_every=0, norm_pct=0, contrib_pct=0, steps=100,
                         lr_policy="constant", lr=100.0)
FOOLING_NOTE = ("With no regularization, gradient ascent makes the network near-certain of its class with an image "
                "nobody recognizes, and a network that took no part does not see the class in it: the fooling images "
                "that motivated the paper (Nguyen, Yosinski & Clune 2015; Szegedy et al. 2014). The paper's answer "
                "is its four regularizers, which keep the image closer to natural ones: compare with its rows.")


def unregularized(settings: Settings) -> bool:
    """Whether ``settings`` are plain pixel ascent with no regularizer (as preset ``"none"``, any length)."""
    return settings.param == "pixels" and not (settings.decay or settings.norm_pct or settings.contrib_pct
                                                or (settings.blur_radius and settings.blur_every))


PRESET_NAMES: Mapping[int, str] = types.MappingProxyType({n: f"Table 1 row {n}" for n in PRESETS})


def table1_row(number: int) -> Settings:
    """Table 1 row ``number`` (1-4) of the paper."""
    if not is_int(number) or number not in PRESETS:
        raise DeepvisError(f"preset must be one of {', '.join(map(str, PRESETS))}, not {number!r}")
    return PRESETS[number]


PRESET_FORMAT = "deepvis-presets"
SHIPPED = Path(__file__).parent / "presets"
ROWS = (1, 2, 3, 4)
TABLE1 = "table1"


@dataclass(frozen=True)
class PresetFile:
    """A network's calibrated rows and how they were found."""

    model: str
    rows: Mapping[int, Settings]
    judge: str | None = None
    trials: int = 0  # per row
    seconds: float = 0.0
    classes: tuple[str, ...] = ()
    scores: Mapping[int, float] = field(default_factory=dict)  # each row's score (over all classes if validated)
    command: str = ""
    validation: tuple[str, ...] = ()  # the classes each row's best trials were checked on

    def __post_init__(self) -> None:
        if not self.model:
            raise DeepvisError("a preset file names its model")
        if set(self.rows) != set(ROWS) or not all(isinstance(s, Settings) for s in self.rows.values()):
            raise DeepvisError("a preset file has settings for rows 1, 2, 3 and 4")
        object.__setattr__(self, "rows", types.MappingProxyType(dict(sorted(self.rows.items()))))

    def to_json(self) -> str:
        return json.dumps({"format": PRESET_FORMAT, "version": 1, "model": self.model, "judge": self.judge,
                           "trials": self.trials, "seconds": round(self.seconds, 1), "classes": list(self.classes),
                           "validation": list(self.validation), "command": self.command,
                           "scores": {str(k): v for k, v in self.scores.items()},
                           "rows": {str(k): s.to_dict() for k, s in self.rows.items()}}, indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> PresetFile:
        data = read_json_file(text, PRESET_FORMAT, "deepvis preset file")
        try:
            rows = {int(k): Settings.from_dict(v) for k, v in data["rows"].items()}
            return cls(data["model"], rows, data.get("judge"), int(data.get("trials", 0)),
                       float(data.get("seconds", 0.0)), tuple(data.get("classes", ())),
                       {int(k): float(v) for k, v in data.get("scores", {}).items()}, data.get("command", ""),
                       tuple(data.get("validation", ())))
        except (KeyError, TypeError, AttributeError) as exc:
            raise DeepvisError(f"The preset file is incomplete ({exc.__class__.__name__}: {exc}).") from None

    @classmethod
    def read(cls, path: str | Path) -> PresetFile:
        return cls.from_json(Path(path).read_bytes())


@functools.lru_cache(maxsize=16)
def shipped(model: str) -> PresetFile | None:
    """The calibrated presets shipped for ``model``, or ``None``."""
    path = SHIPPED / f"{model}.json"
    return PresetFile.read(path) if path.exists() else None


def _row(text: str) -> int:
    if not text.isdigit() or int(text) not in ROWS:
        raise DeepvisError(f"a preset is a row {', '.join(map(str, ROWS))}, table1:N or one of "
                         f"{', '.join(PARAM_PRESETS)} or {NONE}, not {text!r}")
    return int(text)


def _name(model: str | LoadedModel) -> str:
    return model if isinstance(model, str) else model.spec.name


def network_side(model: str | LoadedModel) -> int:
    """The input side of a network (a registry name or a loaded model); 224 for a name deepvis does not know."""
    if not isinstance(model, str):
        return model.spec.input_size
    from deepvis.models import REGISTRY

    return REGISTRY[model].input_size if model in REGISTRY else 224


def table1_at(number: int, side: int) -> Settings:
    """Table 1 row ``number`` for a network of input side ``side``: the blur radius, in pixels of the paper's
    ~224-px network, times ``side / 224`` (unchanged at 224), so a 28-px network blurs the same fraction of
    its view.  Percentiles, decay and learning rates have no length and are kept."""
    row = table1_row(number)
    if side == 224 or not row.blur_radius:
        return row
    return row.replace(blur_radius=float(f"{row.blur_radius * side / 224:.3g}"))


def resolve(model: str | LoadedModel, choice: str | int, calibrated: PresetFile | None = None) -> Settings:
    """The settings a preset name stands for (module docstring) for a model (or its name); a one-line
    :class:`deepvis.errors.DeepvisError` otherwise.  Table 1's rows come scaled to the network's input side
    (:func:`table1_at`); calibrated rows were found at the network's own size and are used as found."""
    side, model = network_side(model), _name(model)
    text = str(choice).strip().lower() if not is_int(choice) else str(choice)
    if text in PARAM_PRESETS:
        return PARAM_PRESETS[text]
    if text == NONE:
        return UNREGULARIZED
    if text.startswith(TABLE1 + ":"):
        return table1_at(_row(text.split(":", 1)[1]), side)
    row = _row(text)
    found = calibrated if calibrated is not None else shipped(model)
    return found.rows[row] if found is not None else table1_at(row, side)


def name(model: str | LoadedModel, choice: str | int) -> str:
    """``Lite0 row 3 (calibrated)``, ``Table 1 row 3 (verbatim)`` (a model without calibrated rows says so)."""
    side, model = network_side(model), _name(model)
    text = str(choice).strip().lower()
    if text in PARAM_PRESETS:
        return PARAM_NAMES[text]
    if text == NONE:
        return "No regularization (fooling images)"

    def scaled(row: int) -> bool:
        return side != 224 and bool(PRESETS[row].blur_radius)

    if text.startswith(TABLE1 + ":"):
        row = _row(text.split(":", 1)[1])
        return f"Table 1 row {row} ({f'blur scaled to {side} px' if scaled(row) else 'verbatim'})"
    if shipped(model) is None:
        row = _row(text)
        return f"Table 1 row {row} (no calibrated rows for {model}{f', blur scaled to {side} px' if scaled(row) else ''})"
    return f"{short_model(model)} row {_row(text)} (calibrated)"


def short_model(model: str) -> str:
    return model.replace("efficientnet_lite", "Lite")


def choices(model: str | LoadedModel, photo: bool = True) -> dict[str, Settings]:
    """Every named preset for ``model``: its calibrated rows ``"1"``-``"4"`` (if any), Table 1's (scaled to
    its input side, :func:`table1_at`), then the later parametrizations (without ``"accentuate"`` when ``photo``
    is False: there is no photo to start from)."""
    side, model = network_side(model), _name(model)
    found = shipped(model)
    out = {str(r): found.rows[r] for r in ROWS} if found is not None else {}
    out.update({f"{TABLE1}:{r}": table1_at(r, side) for r in ROWS})
    out[NONE] = UNREGULARIZED
    out.update({k: v for k, v in PARAM_PRESETS.items() if photo or v.param != "accentuate"})
    return out


CUSTOM = "custom"  # what settings equal to no named preset are called


def preset_of(settings: Settings, model: str | LoadedModel) -> str:
    """The preset key (``"3"``, ``"table1:3"``) these settings equal, else :data:`CUSTOM`."""
    return next((key for key, found in choices(model).items() if found == settings), CUSTOM)


def settings_name(settings: Settings, model: str | LoadedModel) -> str:
    """``Lite0 row 3 (calibrated)``, ``Table 1 row 3 (verbatim), 200 it`` (only the iterations changed), ``custom``."""
    found = preset_of(settings, model)
    if found != CUSTOM:
        return name(model, found)
    for key, preset in choices(model).items():
        if preset.replace(steps=settings.steps) == settings:
            return f"{name(model, key)}, {settings.steps} it"
    return CUSTOM
