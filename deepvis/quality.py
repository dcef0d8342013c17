"""How legible an optimized image is: a judge network's verdict and the image's robustness.

Conventions
-----------
* Images in: the optimizer's float images ``x``, ``(B, H, W, 3)`` in its pixel space
  (0-255 units, model mean subtracted; :mod:`deepvis.optimize`), one per target.
* **Judge** (class units only: the visualized model's logits).  The *reporting judge*
  (:data:`REPORTING_JUDGES`: EfficientNet-Lite2 for every model but itself, which Lite0
  judges) took no part in making the image and none in choosing θ: the calibration
  (:mod:`deepvis.calibrate`) is scored by another network, the *calibration judge*
  (:data:`CALIBRATION_JUDGES`: Lite1, or Lite0 for Lite1), under random views
  (:mod:`deepvis.eot`).  The judge looks at the image *as displayed by default*
  (scaled about zero, :mod:`deepvis.display`), resized with antialiasing to its own
  input size and normalized its own way.  It reports the target class's rank among
  its 1000 classes (1 = its top class) and softmax probability.
* **Robustness** (any unit).  The unit's value (the run's objective: the neuron at
  its position, the channel mean, or the logit; a rectified node's own value) on 8
  small transforms of the image as the network saw it (``clip(x + mean)``), averaged,
  divided by its value on the image itself.  The transforms are jitter of
  ``size/56`` px (4 px at 224) left, right, up and down, scale 0.95 and 1.05 and
  rotation of ±5°, borders filled with the mean colour: transformation robustness
  as in Olah, Mordvintsev & Schubert (2017), *Feature Visualization*, Distill.
  About 1: the pattern survives small shifts, as a picture of a thing does; near 0
  or below: it depends on exact pixels, as an adversarial noise pattern does.
  ``None`` when the unit is not positive on the image itself.
* **The network's own probability** (class units): its softmax probability for the class on the image itself,
  next to the judge's, so an image the network is sure of and the judge is not (a fooling image) shows as such.
* **Score**, one number per image for tables: with a judge
  ``0.5·(1 − ln rank / ln K) + 0.25·p + 0.25·clip(robustness, 0, 1)`` (K = number of
  classes); without one ``clip(robustness, 0, 1)``.  1 is best, 0 worst.  It is
  reported, never used to choose θ.
* The shared model and the judge are only read (forward passes under
  :func:`deepvis.graph.forward_pass`, no grad); the judge is loaded once per device.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

from deepvis.errors import DeepvisError
from deepvis.activations import capture
from deepvis.display import DEFAULT_DISPLAY, show
from deepvis.graph import forward_pass
from deepvis.images import channel_stats
from deepvis.models import REGISTRY, LoadedModel, imagenet_classes, load_model
from deepvis.targets import Target, class_names

REPORTING_JUDGES = {"efficientnet_lite2": "efficientnet_lite0"}
DEFAULT_REPORTING_JUDGE = "efficientnet_lite2"
CALIBRATION_JUDGES = {"efficientnet_lite1": "efficientnet_lite0"}
DEFAULT_CALIBRATION_JUDGE = "efficientnet_lite1"
JUDGE_HELP = ("The judge is EfficientNet-Lite2 (Lite0 for Lite2 itself), a network that took no part in making the "
              "image and none in choosing the presets (they were calibrated against Lite1 under random views); "
              "rank 1 is its top class of 1000, p its probability. Robustness: the unit's value on 8 small "
              "shifts, scalings and rotations of the image over its value on the image (about 1 = robust).")
ROTATION_DEG, SCALES = 5.0, (0.95, 1.05)
LEGIBLE_RANK = 5


def judge_name(model: LoadedModel) -> str | None:
    """The reporting judge of ``model``'s class images (no part in the images, none in choosing θ); ``None``
    for a network whose classes are not ImageNet's (a network of one's own: robustness alone speaks)."""
    if model.spec.name not in REGISTRY and tuple(model.class_names) != imagenet_classes():
        return None
    return REPORTING_JUDGES.get(model.spec.name, DEFAULT_REPORTING_JUDGE)


def calibration_judge_name(model: LoadedModel) -> str | None:
    """The network whose views score a calibration's trials (:mod:`deepvis.eot`); never the reporting judge.
    ``None`` for a network whose classes are not ImageNet's (the user names one, or robustness alone scores)."""
    if judge_name(model) is None:
        return None
    return CALIBRATION_JUDGES.get(model.spec.name, DEFAULT_CALIBRATION_JUDGE)


@functools.lru_cache(maxsize=4)
def judge_model(name: str, device: str) -> LoadedModel:
    """The judge network on ``device``, loaded once (it is only read, like every shared model)."""
    return load_model(name, device=device)


@dataclass(frozen=True)
class Quality:
    """What the judge and the robustness test say about one image (see module docstring)."""

    robustness: float | None
    judge: str | None = None  # the judge's model name; None for a unit that is not a class
    rank: int | None = None  # 1 = the judge's top class
    prob: float | None = None
    classes: int = 1000
    own_prob: float | None = None  # the visualized network's own probability for the class (a class unit only)

    @property
    def legible(self) -> bool:
        """The judge ranks the class in its top 5; without a judge, robustness at least 0.5."""
        if self.rank is not None:
            return self.rank <= LEGIBLE_RANK
        return self.robustness is not None and self.robustness >= 0.5

    @property
    def score(self) -> float:
        robust = 0.0 if self.robustness is None else min(1.0, max(0.0, self.robustness))
        if self.rank is None:
            return robust
        return 0.5 * (1 - math.log(self.rank) / math.log(self.classes)) + 0.25 * self.prob + 0.25 * robust

    @property
    def label(self) -> str:
        """``judge Lite1: rank 2 · p 0.31 · robustness 0.87`` (one line under an image)."""
        robust = "robustness n/a (unit not active)" if self.robustness is None else f"robustness {self.robustness:.2f}"
        own = f"network p {self.own_prob:.2f} · " if self.own_prob is not None else ""
        if self.rank is None:
            return own + robust
        short = self.judge.replace("efficientnet_lite", "Lite") if self.judge else "judge"
        return f"{own}judge {short}: rank {self.rank} · p {self.prob:.2f} · {robust}"

    def to_dict(self) -> dict[str, object]:
        return {"network_prob": self.own_prob, "judge": self.judge, "rank": self.rank, "prob": self.prob,
                "robustness": self.robustness,
                "legible": self.legible, "score": round(self.score, 4)}


def _variants(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, 8, C, H, W)``: the 8 transforms of the module docstring (fill: 0 = the mean)."""
    size = x.shape[-1]
    shift = max(1, round(size / 56))
    params = [(0.0, (shift, 0), 1.0), (0.0, (-shift, 0), 1.0), (0.0, (0, shift), 1.0), (0.0, (0, -shift), 1.0),
              (0.0, (0, 0), SCALES[0]), (0.0, (0, 0), SCALES[1]), (ROTATION_DEG, (0, 0), 1.0),
              (-ROTATION_DEG, (0, 0), 1.0)]
    out = [TF.affine(x, angle=a, translate=list(t), scale=s, shear=[0.0, 0.0],
                     interpolation=TF.InterpolationMode.BILINEAR, fill=0.0) for a, t, s in params]
    return torch.stack(out, dim=1)


def _unit_values(acts: torch.Tensor, target: Target) -> torch.Tensor:
    """The target's value for each image of a layer's activations ``(N, C, H, W)`` or ``(N, K)``."""
    if acts.dim() == 2:
        return acts[:, target.unit]
    if target.objective == "channel":
        return acts[:, target.unit].mean(dim=(1, 2))
    y, x = target.centre_or_position(acts.shape[2], acts.shape[3])
    return acts[:, target.unit, y, x]


def robustness(model: LoadedModel, pixels: np.ndarray, targets: Sequence[Target]) -> list[float | None]:
    """Each image's robustness for its target (module docstring); ``pixels`` ``(B, H, W, C)`` pixel space."""
    return _measure(model, pixels, targets)[0]


def _measure(model: LoadedModel, pixels: np.ndarray, targets: Sequence[Target]
             ) -> tuple[list[float | None], list[float | None]]:
    """Each image's robustness, and for a class its own network's probability on the image itself."""
    mean, std = channel_stats(model.spec.normalization, model.device)
    x = torch.as_tensor(np.asarray(pixels, dtype=np.float32), device=model.device).permute(0, 3, 1, 2)
    x = (x + mean).clamp(0, 255) - mean  # as the network saw it
    batch = torch.cat([x.unsqueeze(1), _variants(x)], dim=1)  # (B, 9, C, H, W): the image, then its variants
    count = batch.shape[1]
    batch = ((batch.flatten(0, 1) + mean).clamp(0, 255) - mean) / std
    if batch.device.type == "cpu":  # channels-last is faster on a CPU (as in deepvis.optimize)
        batch = batch.contiguous(memory_format=torch.channels_last)
    layers = list(dict.fromkeys(t.layer for t in targets))
    with torch.no_grad():
        acts = capture(model.module, batch, layers)
    out: list[float | None] = []
    own: list[float | None] = []
    for b, target in enumerate(targets):
        values = _unit_values(acts[target.layer][b * count:(b + 1) * count], target).double()
        itself = float(values[0])
        out.append(float(values[1:].mean()) / itself if itself > 0 else None)
        is_class = class_names(model, target.layer) is not None
        own.append(float(acts[target.layer][b * count].double().softmax(0)[target.unit]) if is_class else None)
    return out, own


def judge(model: LoadedModel, pixels: np.ndarray, classes: Sequence[int], mode: str = DEFAULT_DISPLAY,
          judge_with: LoadedModel | None = None) -> list[tuple[int, float]]:
    """``(rank, probability)`` of each image's class under the judge (module docstring)."""
    referee = judge_with or judge_model(judge_name(model), str(model.device))
    mean = model.spec.normalization.mean255
    shown = torch.as_tensor(show(np.asarray(pixels), mean, mode), device=referee.device)
    images = shown.permute(0, 3, 1, 2).float()
    size = referee.spec.input_size
    images = TF.resize(images, [size, size], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    norm = referee.spec.normalization
    r_mean, r_std = channel_stats(norm, referee.device)
    with forward_pass(), torch.no_grad():
        probs = referee.module((images[:, :norm.channels] - r_mean) / r_std).double().softmax(dim=1)
    out = []
    for b, unit in enumerate(classes):
        p = float(probs[b, unit])
        out.append((int((probs[b] > probs[b, unit]).sum()) + 1, p))
    return out


def assess(model: LoadedModel, pixels: np.ndarray, targets: Sequence[Target],
           judge_with: LoadedModel | None = None) -> list[Quality]:
    """The :class:`Quality` of each image ``pixels[b]`` (pixel space) made for ``targets[b]``."""
    pixels = np.asarray(pixels)
    if pixels.ndim != 4 or len(targets) != pixels.shape[0]:
        raise DeepvisError(f"need one (H, W, 3) image per target, got {pixels.shape} for {len(targets)} targets")
    robust, own = _measure(model, pixels, targets)
    is_class = [class_names(model, t.layer) is not None for t in targets]
    verdicts: dict[int, tuple[int, float]] = {}
    referee_name = judge_with.spec.name if judge_with is not None else judge_name(model)
    if any(is_class) and referee_name is not None:
        chosen = [b for b, c in enumerate(is_class) if c]
        referee = judge_with or judge_model(referee_name, str(model.device))
        for b, verdict in zip(chosen, judge(model, pixels[chosen], [targets[b].unit for b in chosen],
                                            judge_with=referee)):
            verdicts[b] = verdict
        name = referee.spec.name
    return [Quality(robust[b], name, *verdicts[b], classes=len(model.class_names), own_prob=own[b]) if b in verdicts
            else Quality(robust[b], own_prob=own[b]) for b in range(len(targets))]


def assess_record(model: LoadedModel, record, which: str = "best") -> list[Quality]:
    """The quality of every row's ``best`` (or ``last``) image of a :class:`deepvis.records.RunRecord`."""
    pixels = np.stack([row.best_x if which == "best" else row.last_x for row in record.rows])
    return assess(model, pixels, [row.target for row in record.rows])
