"""Presets found the paper's way: a random search over θ for each Table 1 row, scored automatically.

Yosinski et al. (2015) found Table 1 by a random search over about 300 θ combinations on
CaffeNet, judged by eye.  Its magnitudes do not carry over to other networks; the method
does.  This module repeats the search for any network with an automatic judge.

Conventions
-----------
* **Four rows keep Table 1's characters** (:data:`SPACES`); only magnitudes are searched:
  (1) norm clip + small blur + progress lr, (2) strong decay + norm clip, no blur,
  constant lr, (3) small decay + blur, constant lr, (4) contribution clip + small blur +
  progress lr.  Settings a row does not use are fixed at zero.  Learning rates, decays
  and desired progress are drawn log-uniformly, σ and percentiles uniformly, blur
  frequency and iterations from short lists.
* **A trial** is one θ for one row: every calibration class (a logit of the model) is
  optimized in one batch from the same seeded noise, and each best image is scored
  by :func:`deepvis.quality.assess` (a judge that took no part, and robustness); the
  trial's score is the mean (0 worst, 1 best).
* Trial ``t`` of row ``r`` draws its θ from ``random.Random(f"{seed}:{r}:{t}")``, so a
  search is reproducible and a resumed one draws the same trials.  Trials run
  interleaved (trial 0 of rows 1-4, then trial 1, ...), so an interrupted search has
  every row early.
* **Resumable.**  Every finished trial is one JSON line in ``<out>.trials.jsonl``
  (after a header line naming the model, judge, classes, seed, size and iterations);
  a search started again with the same ``out`` skips logged trials.  After each
  trial the preset file ``out`` (:class:`deepvis.presets.PresetFile`) is rewritten
  with each row's best trial so far, once every row has one.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepvis import optimize as opt
from deepvis import quality
from deepvis.models import LoadedModel
from deepvis.presets import ROWS, PresetFile
from deepvis.settings import Settings, resolve_unit

DEFAULT_CLASSES = ("ladybug", "lemon", "volcano")  # kept apart from the README's report classes
DEFAULT_STEPS = (100, 200, 300, 400)
EVERY = (2, 3, 4, 6, 8)


@dataclass(frozen=True)
class Space:
    """What a row's search draws: fixed settings, log-uniform and uniform ranges, and lists."""

    character: str
    fixed: tuple[tuple[str, object], ...]
    log_uniform: tuple[tuple[str, float, float], ...]
    uniform: tuple[tuple[str, float, float], ...]
    lists: tuple[tuple[str, tuple], ...]

    def sample(self, rng: random.Random, steps: Sequence[int]) -> Settings:
        values: dict[str, object] = dict(self.fixed)
        for name, low, high in self.log_uniform:
            values[name] = float(f"{math.exp(rng.uniform(math.log(low), math.log(high))):.3g}")
        for name, low, high in self.uniform:
            values[name] = round(rng.uniform(low, high), 2)
        for name, options in self.lists:
            values[name] = rng.choice(options)
        values["steps"] = int(rng.choice(tuple(steps)))
        return Settings(**values)


SPACES: dict[int, Space] = {
    1: Space("norm clip + small blur + progress lr",
             (("lr_policy", "progress"), ("decay", 0.0), ("contrib_pct", 0.0)),
             (("desired_prog", 0.5, 64.0), ("max_lr", 10.0, 1e4)),
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
             (("desired_prog", 0.5, 64.0), ("max_lr", 100.0, 1e8)),
             (("blur_radius", 0.3, 1.0), ("contrib_pct", 50.0, 95.0)), (("blur_every", EVERY),)),
}


@dataclass(frozen=True)
class Trial:
    """One finished trial: its row, number, θ and what the judge and robustness said."""

    row: int
    index: int
    settings: Settings
    score: float
    ranks: tuple[int | None, ...]
    robustness: tuple[float | None, ...]
    seconds: float

    def to_json(self) -> str:
        return json.dumps({"row": self.row, "trial": self.index, "score": self.score, "ranks": list(self.ranks),
                           "robustness": list(self.robustness), "seconds": round(self.seconds, 2),
                           "settings": self.settings.to_dict()})

    @classmethod
    def from_json(cls, line: str) -> Trial:
        data = json.loads(line)
        return cls(int(data["row"]), int(data["trial"]), Settings.from_dict(data["settings"]), float(data["score"]),
                   tuple(data["ranks"]), tuple(data["robustness"]), float(data["seconds"]))


@dataclass(frozen=True)
class Progress:
    """What :func:`search` yields after each trial (finished ones included when resuming)."""

    done: int
    total: int
    trial: Trial
    resumed: bool  # read back from the log, not run now
    best: dict[int, Trial]


def trial_settings(row: int, index: int, seed: int = 0, steps: Sequence[int] = DEFAULT_STEPS) -> Settings:
    """The θ of trial ``index`` of ``row`` (reproducible; module docstring)."""
    return SPACES[row].sample(random.Random(f"{seed}:{row}:{index}"), steps)


def run_trial(model: LoadedModel, units: Sequence[int], settings: Settings, *, seed: int = 0, size: int | None = None,
              judge_with: LoadedModel | None = None) -> tuple[float, list[quality.Quality]]:
    """Optimize every class unit under ``settings`` in one batch; the mean score and each image's quality."""
    targets = [opt.Target(model.logits_layer, unit) for unit in units]
    record = opt.run(model, targets, settings, seed=seed, size=size)
    pixels = np.stack([row.best_x for row in record.rows])
    scores = quality.assess(model, pixels, targets, judge_with=judge_with)
    values = [q.score if math.isfinite(q.score) else 0.0 for q in scores]
    return float(np.mean(values)), scores


def _log_path(out: Path) -> Path:
    return out.with_name(out.name + ".trials.jsonl")


def _read_log(path: Path, header: dict) -> list[Trial]:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(header) + "\n")
        return []
    lines = path.read_text().splitlines()
    found = json.loads(lines[0]) if lines else None
    if found != header:
        raise ValueError(f"{path} was made by a different search ({found}); use another --out or delete it.")
    trials = []
    for line in lines[1:]:
        try:
            trials.append(Trial.from_json(line))
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by an interruption: that trial runs again
    return trials


def search(model: LoadedModel, out: str | Path, *, classes: Sequence[str] = DEFAULT_CLASSES, trials: int = 20,
           seed: int = 0, size: int | None = None, steps: Sequence[int] = DEFAULT_STEPS,
           judge_with: LoadedModel | None = None, command: str = "") -> Generator[Progress, None, PresetFile]:
    """Run (or resume) the search; yield :class:`Progress` after each trial; write ``out`` (module docstring).

    Bad arguments (no trials, an unknown class, an iteration count below 1, a log of another search) raise
    a one-line ``ValueError`` here, before anything runs.
    """
    if not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials must be at least 1, not {trials}")
    if not steps or any(not isinstance(n, int) or n < 1 for n in steps):
        raise ValueError(f"iteration counts must be whole numbers of at least 1, not {list(steps)}")
    if not classes:
        raise ValueError("calibrate needs at least one class")
    out = Path(out)
    units = [resolve_unit(model, model.logits_layer, name) for name in classes]
    referee = judge_with or quality.judge_model(quality.judge_name(model), str(model.device))
    header = {"format": "deepvis-calibration-log", "model": model.spec.name, "judge": referee.spec.name,
              "classes": list(classes), "seed": seed, "size": size, "steps": list(steps)}
    logged = {(t.row, t.index): t for t in _read_log(_log_path(out), header)}
    return _search(model, referee, out, units, list(classes), trials, seed, size, list(steps), logged, command)


def _search(model: LoadedModel, referee: LoadedModel, out: Path, units: list[int], classes: list[str], trials: int,
            seed: int, size: int | None, steps: list[int], logged: dict[tuple[int, int], Trial],
            command: str) -> Generator[Progress, None, PresetFile]:
    best: dict[int, Trial] = {}
    order = [(index, row) for index in range(trials) for row in ROWS]
    spent = sum(t.seconds for (row, index), t in logged.items() if index < trials)  # compute time of the trials
    for done, (index, row) in enumerate(order, start=1):
        resumed = (row, index) in logged
        if resumed:
            trial = logged[(row, index)]
        else:
            settings = trial_settings(row, index, seed, steps)
            began = time.perf_counter()
            score, scores = run_trial(model, units, settings, seed=seed, size=size, judge_with=referee)
            trial = Trial(row, index, settings, score, tuple(q.rank for q in scores),
                          tuple(q.robustness for q in scores), time.perf_counter() - began)
            with _log_path(out).open("a") as log:
                log.write(trial.to_json() + "\n")
            spent += trial.seconds
        if row not in best or trial.score > best[row].score:
            best[row] = trial
        if len(best) == len(ROWS) and not resumed:
            _write(out, model, referee, best, trials, classes, command, spent)
        yield Progress(done, len(order), trial, resumed, dict(best))
    return _write(out, model, referee, best, trials, classes, command, spent)


def _write(out: Path, model: LoadedModel, referee: LoadedModel, best: dict[int, Trial], trials: int,
           classes: Sequence[str], command: str, seconds: float) -> PresetFile:
    found = PresetFile(model.spec.name, {r: t.settings for r, t in best.items()}, referee.spec.name, trials, seconds,
                       tuple(classes), {r: round(t.score, 4) for r, t in best.items()}, command)
    partial = out.with_name(out.name + ".partial")
    partial.write_text(found.to_json() + "\n")
    partial.replace(out)
    return found
