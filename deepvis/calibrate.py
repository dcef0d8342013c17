"""Presets found the paper's way: a random search over θ for each Table 1 row, scored automatically.

(Over 300 lines: the trial log that makes a search resumable, the validation that picks each row's preset and
the stages and rounds after it are one procedure, read together.)

Yosinski et al. (2015) found Table 1 by a random search over about 300 θ combinations on
CaffeNet, judged by eye.  Its magnitudes do not carry over to other networks; the method
does.  This module repeats the search for any network with an automatic judge.

Conventions
-----------
* **Four rows keep Table 1's characters** (:mod:`deepvis.search_space`); only magnitudes are
  searched: (1) norm clip + small blur + progress lr, (2) strong decay + norm clip, no blur,
  constant lr, (3) small decay + blur, constant lr, (4) contribution clip + small blur +
  progress lr.  The robust space (``robust=True``) also draws the view's jitter, scale and
  rotation.
* **A trial** is one θ for one row: every calibration class (a logit of the model) is
  optimized in one batch from the same seeded noise, and each best image is scored by
  how its class holds under :data:`deepvis.eot.VIEWS` random views of the *calibration
  judge* (Expectation over Transformation, Athalye et al. 2018) and by the generating
  network's own robustness (:mod:`deepvis.eot`); the trial's score is the mean over its
  classes (0 worst, 1 best).  The *reporting judge* whose verdict the pages and the
  CLI show (:mod:`deepvis.quality`) never scores a trial.
* **A network of one's own** (classes that are not ImageNet's) has no built-in judge:
  the user names a second network with the same classes (``judge_with``), or the trials
  are scored by robustness alone (``judge_with=None``, ``no_judge=True``).  Its default
  classes are its own first eight, and the next six validate (:func:`default_classes`).
* Eight calibration classes per trial (:data:`DEFAULT_CLASSES`): a θ has to work for
  many classes at once, not one lucky one.
* Trial ``t`` of row ``r`` draws its θ from ``random.Random(f"{seed}:{r}:{t}")``, so a
  search is reproducible and a resumed one draws the same trials.  Trials run
  interleaved (trial 0 of rows 1-4, then trial 1, ...), so an interrupted search has
  every row early.
* **Validation** (against the winner's curse: with a few classes, a row's best trial
  is partly luck).  After the search, each row's ``top`` best trials run again on a
  second set of classes (:data:`DEFAULT_VALIDATION`, apart from the calibration classes
  and from the benchmarks' report classes, ``bench/README.md``); the row's preset is the
  candidate with the best mean score over both sets (weighted by their number of classes).
* **Jitter** (``jitters``, optional): then each row's chosen θ runs again with each
  jitter J (:class:`deepvis.settings.Settings`, the view rolled by up to ±J px each step,
  Mordvintsev et al. 2015) on both sets of classes, scored the same way; the row keeps
  the θ (J = 0 included) with the best mean over both sets.  Transformation robustness
  is what makes an image hold under another network's views (Olah et al. 2017,
  *Feature Visualization*); the search's own draws do not change (J is 0 in them).
* **Transforms** (``transforms``, optional): then each row's θ so far runs again with each
  ``(scale, rotate)`` (:class:`deepvis.settings.Settings`: the view zoomed by up to ±scale and
  turned by up to ±rotate degrees each step, Lucid's standard transforms, Olah et al. 2017)
  on both sets of classes, scored and chosen the same way (no transform included).
* **A second round** (``start``, a preset file of the same model, judge and classes, and
  ``rows``, the rows to search again): the rows searched keep the start file's θ unless the
  new search finds one with a higher score (the same objective on the same classes, so the
  scores compare); the other rows are the start file's.
* **Resumable.**  Every finished trial (and validation run) is one JSON line in ``<out>.trials.jsonl``
  (after a header line naming the model, judge, classes, seed, size and iterations);
  a search started again with the same ``out`` skips logged trials.  After each
  trial the preset file ``out`` (:class:`deepvis.presets.PresetFile`) is rewritten
  with each row's best trial so far, once every row has one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepvis.errors import DeepvisError
from deepvis.progress import Progress
from deepvis import optimize as opt
from deepvis import eot, quality
from deepvis.models import LoadedModel
from deepvis.presets import ROWS, PresetFile
from deepvis.search_space import DEFAULT_STEPS, SPACES, spaces, trial_settings
from deepvis.settings import Settings
from deepvis.targets import resolve_unit
from deepvis.targets import Target

# Kept apart from each other and from the report's held-out classes (bench/bench_legibility.py).
DEFAULT_CLASSES = ("ladybug", "lemon", "volcano", "goldfinch", "daisy", "pretzel", "fire engine", "teapot")
DEFAULT_VALIDATION = ("hummingbird", "pizza", "pineapple", "jellyfish", "tree frog", "ambulance")
OBJECTIVE = "eot-v1"  # the trial score's definition (deepvis.eot); a log scored another way is refused


@dataclass(frozen=True)
class Trial:
    """One finished trial: its row, number, θ and what the judge and robustness said."""

    row: int
    index: int
    settings: Settings
    score: float
    hits: tuple[float | None, ...]  # per class: the fraction of the judge's views with it in their top 5
    robustness: tuple[float | None, ...]
    seconds: float
    stage: str = "search"  # or "validate": the same θ re-run on the validation classes
    classes: tuple[str, ...] = ()  # the validation classes (a validation line only)

    def to_json(self) -> str:
        data = {"row": self.row, "trial": self.index, "score": self.score, "hits": list(self.hits),
                "robustness": list(self.robustness), "seconds": round(self.seconds, 2),
                "settings": self.settings.to_dict()}
        if self.stage != "search":
            data.update(stage=self.stage, classes=list(self.classes))
        return json.dumps(data)

    @classmethod
    def from_json(cls, line: str) -> Trial:
        data = json.loads(line)
        return cls(int(data["row"]), int(data["trial"]), Settings.from_dict(data["settings"]), float(data["score"]),
                   tuple(data["hits"]), tuple(data["robustness"]), float(data["seconds"]),
                   data.get("stage", "search"), tuple(data.get("classes", ())))


@dataclass(frozen=True)
class Report:
    """A calibration step's :attr:`deepvis.progress.Progress.detail`: the trial just run or read, each row's best."""

    trial: Trial
    best: dict[int, Trial]


def default_classes(model: LoadedModel) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The classes a search optimizes and validates on by default: :data:`DEFAULT_CLASSES` and
    :data:`DEFAULT_VALIDATION` for an ImageNet network; else the network's own first eight and the next six
    (none left: no validation); a network without class names has none."""
    if quality.judge_name(model) is not None:
        return DEFAULT_CLASSES, DEFAULT_VALIDATION
    names = tuple(model.class_names)
    return names[:8], names[8:14]


def _referee(model: LoadedModel, judge_with: LoadedModel | None, no_judge: bool) -> LoadedModel | None:
    if no_judge:
        return None
    if judge_with is not None:
        return judge_with
    name = quality.calibration_judge_name(model)
    return None if name is None else quality.judge_model(name, str(model.device))


def run_trial(model: LoadedModel, units: Sequence[int], settings: Settings, *, seed: int = 0, size: int | None = None,
              judge_with: LoadedModel | None = None, no_judge: bool = False) -> tuple[float, list[eot.Holding]]:
    """Optimize every class unit under ``settings`` in one batch; the mean score and each image's holding."""
    targets = [Target(model.logits_layer, unit) for unit in units]
    record = opt.run(model, targets, settings, seed=seed, size=size)
    pixels = np.stack([row.best_x for row in record.rows])
    referee = _referee(model, judge_with, no_judge)
    held = eot.holding(model, referee, pixels, list(units), quality.robustness(model, pixels, targets), seed=seed)
    values = [h.score if math.isfinite(h.score) else 0.0 for h in held]
    return float(np.mean(values)), held


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
        raise DeepvisError(f"{path} was made by a different search ({found}); use another --out or delete it.")
    trials = []
    for line in lines[1:]:
        try:
            trials.append(Trial.from_json(line))
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by an interruption: that trial runs again
    return trials


def search(model: LoadedModel, out: str | Path, *, classes: Sequence[str] | None = None, trials: int = 20,
           seed: int = 0, size: int | None = None, steps: Sequence[int] = DEFAULT_STEPS,
           validate: Sequence[str] | None = None, top: int = 3, judge_with: LoadedModel | None = None,
           command: str = "", no_judge: bool = False, jitters: Sequence[int] = (),
           transforms: Sequence[tuple[float, float]] = (), rows: Sequence[int] = ROWS, robust: bool = False,
           start: PresetFile | None = None) -> Generator[Progress, None, PresetFile]:
    """Run (or resume) the search; yield :class:`Progress` after each trial; write ``out`` (module docstring).

    ``judge_with``: the calibration judge (default: the model's own, :func:`deepvis.quality.calibration_judge_name`;
    none for a network of one's own, which is then scored by robustness alone, as with ``no_judge``).
    Bad arguments (no trials, an unknown class, an iteration count below 1, a log of another search, a judge
    whose classes differ) raise a one-line :class:`DeepvisError` here, before anything runs.
    """
    if not isinstance(trials, int) or trials < 1:
        raise DeepvisError(f"trials must be at least 1, not {trials}")
    own_classes, own_validation = default_classes(model)
    classes = own_classes if classes is None else classes
    validate = own_validation if validate is None else validate
    if top and not validate and not own_validation:
        top = 0  # a network with too few classes to keep some apart: chosen by the search alone
    if not isinstance(top, int) or top < 0:
        raise DeepvisError(f"top must be a whole number of at least 0, not {top}")
    if not steps or any(not isinstance(n, int) or n < 1 for n in steps):
        raise DeepvisError(f"iteration counts must be whole numbers of at least 1, not {list(steps)}")
    if not classes:
        raise DeepvisError("calibrate needs at least one class")
    if any(not isinstance(j, int) or j < 1 for j in jitters):
        raise DeepvisError(f"jitters must be whole numbers of pixels of at least 1, not {list(jitters)}")
    try:
        variants = [{"jitter": j} for j in jitters] + [{"scale": float(a), "rotate": float(b)} for a, b in transforms]
        for changes in variants:
            Settings(**changes)  # in θ's ranges
    except (TypeError, ValueError) as exc:
        raise DeepvisError(f"transforms must be (scale, rotate) pairs within θ's ranges: {exc}") from None
    if top and not validate:
        raise DeepvisError("validation needs at least one class (or top 0 for none)")
    rows = tuple(sorted(set(rows)))
    if not rows or not set(rows) <= set(ROWS):
        raise DeepvisError(f"rows must be among {', '.join(map(str, ROWS))}, not {list(rows)}")
    if rows != ROWS and start is None:
        raise DeepvisError("searching some rows only needs a start file for the others")
    out = Path(out)
    units = [resolve_unit(model, model.logits_layer, name) for name in classes]
    checks = [resolve_unit(model, model.logits_layer, name) for name in validate] if top else []
    referee = _referee(model, judge_with, no_judge)
    if referee is not None and referee.spec.name == quality.judge_name(model):
        raise DeepvisError(f"{referee.spec.name} is {model.spec.name}'s reporting judge; it must not choose θ")
    if referee is not None and len(referee.class_names) != len(model.class_names):
        raise DeepvisError(f"the judge {referee.spec.name} has {len(referee.class_names)} classes and "
                           f"{model.spec.name} {len(model.class_names)}; a judge must have the same classes")
    judge = referee.spec.name if referee is not None else None
    if start is not None and (start.model, start.judge, start.classes, start.validation) != (
            model.spec.name, judge, tuple(classes), tuple(validate) if top else ()):
        raise DeepvisError("the start file was made for another model, judge or classes: its scores do not compare")
    header = {"format": "deepvis-calibration-log", "model": model.spec.name, "judge": judge,
              "objective": OBJECTIVE, "views": eot.VIEWS,
              "classes": list(classes), "seed": seed, "size": size, "steps": list(steps),
              "spaces": {str(r): space.to_dict() for r, space in spaces(robust).items()}}
    logged = {}
    for t in _read_log(_log_path(out), header):
        if t.stage in ("search", "jitter", "transform") or t.classes == tuple(validate):
            logged[(t.stage, t.row, t.index, t.settings)] = t
    run = _Run(model, referee, out, seed, size, logged, command, list(classes), list(validate) if top else [], start)
    return run.search(units, checks, trials, list(steps), top, variants, rows, robust)


class _Run:
    """One search (and its validation) in progress: what is logged, what it has spent, what it writes."""

    def __init__(self, model: LoadedModel, referee: LoadedModel | None, out: Path, seed: int, size: int | None,
                 logged: dict, command: str, classes: list[str], validate: list[str], start: PresetFile | None) -> None:
        self.model, self.referee, self.out, self.seed, self.size = model, referee, out, seed, size
        self.logged, self.command, self.classes, self.validate = logged, command, classes, validate
        self.start = start
        self.spent = 0.0 if start is None else start.seconds

    def trial(self, stage: str, row: int, index: int, settings: Settings, units: list[int]) -> tuple[Trial, bool]:
        """The logged trial, or a new one run now and logged; and whether it was logged already."""
        key = (stage, row, index, settings)
        if key in self.logged:
            self.spent += self.logged[key].seconds
            return self.logged[key], True
        began = time.perf_counter()
        score, scores = run_trial(self.model, units, settings, seed=self.seed, size=self.size,
                                  judge_with=self.referee, no_judge=self.referee is None)
        trial = Trial(row, index, settings, score, tuple(h.hits for h in scores), tuple(h.robustness for h in scores),
                      time.perf_counter() - began, stage,
                      tuple(self.validate) if stage.endswith("validate") else ())
        with _log_path(self.out).open("a") as log:
            log.write(trial.to_json() + "\n")
        self.spent += trial.seconds
        return trial, False

    def search(self, units: list[int], checks: list[int], trials: int, steps: list[int],
               top: int, variants: list[dict], rows: tuple[int, ...], robust: bool
               ) -> Generator[Progress, None, PresetFile]:
        best: dict[int, Trial] = {}
        finished: dict[int, list[Trial]] = {row: [] for row in rows}
        order = [(index, row) for index in range(trials) for row in rows]
        total = len(order) + (top + len(variants)) * len(rows)
        for done, (index, row) in enumerate(order, start=1):
            settings = trial_settings(row, index, self.seed, steps, robust)
            trial, resumed = self.trial("search", row, index, settings, units)
            finished[row].append(trial)
            if row not in best or trial.score > best[row].score:
                best[row] = trial
            if (len(best) == len(rows) or self.start is not None) and not resumed:
                self.write(best, trials)
            yield Progress(done, total, resumed=resumed, detail=Report(trial, dict(best)))
        if not top:
            best = yield from self.vary(best, units, checks, variants, done, total, trials)
            return self.write(best, trials)
        # Validation: each row's `top` best trials again on other classes; the best mean over all classes wins.
        candidates = {row: sorted(finished[row], key=lambda t: -t.score)[:top] for row in rows}
        validated: dict[int, Trial] = {}
        weight = len(units) / (len(units) + len(checks))
        for rank in range(top):
            for row in rows:
                done += 1
                if rank >= len(candidates[row]):
                    continue
                found = candidates[row][rank]
                check, resumed = self.trial("validate", row, found.index, found.settings, checks)
                combined = dataclasses.replace(found, score=weight * found.score + (1 - weight) * check.score)
                if row not in validated or combined.score > validated[row].score:
                    validated[row] = combined
                self.write({**best, **validated}, trials)
                yield Progress(done, total, resumed=resumed, detail=Report(check, {**best, **validated}))
        chosen = yield from self.vary({**best, **validated}, units, checks, variants, done, total, trials)
        return self.write(chosen, trials)

    def vary(self, chosen: dict[int, Trial], units: list[int], checks: list[int], variants: list[dict],
             done: int, total: int, trials: int) -> Generator[Progress, None, dict[int, Trial]]:
        """Each row's chosen θ again with each variant (a jitter, then a transform: module docstring), on both
        sets of classes; the best mean wins.  Each transform starts from the θ the jitters left.  Variants in
        the outer loop, so an interrupted stage has every row tried with the first."""
        chosen = dict(chosen)
        base = dict(chosen)
        weight = len(units) / (len(units) + len(checks))
        stage = "jitter"
        for changes in variants:
            if "jitter" not in changes and stage == "jitter":
                stage, base = "transform", dict(chosen)  # transforms start from the θ the jitters chose
            for row in base:
                done += 1
                start = base[row]
                settings = start.settings.replace(**changes)
                found, resumed = self.trial(stage, row, start.index, settings, units)
                score = found.score
                if checks:
                    check, again = self.trial(f"{stage}-validate", row, start.index, settings, checks)
                    score, resumed = weight * found.score + (1 - weight) * check.score, resumed and again
                if score > chosen[row].score:
                    chosen[row] = dataclasses.replace(found, score=score)
                self.write(chosen, trials)
                yield Progress(done, total, resumed=resumed, detail=Report(found, dict(chosen)))
        return chosen

    def write(self, best: dict[int, Trial], trials: int) -> PresetFile:
        """The preset file of each row's best so far (a second round: the start file's row where it scores
        at least as high, and its rows not searched)."""
        judge = self.referee.spec.name if self.referee is not None else None
        rows = {r: t.settings for r, t in best.items()}
        scores = {r: round(t.score, 4) for r, t in best.items()}
        command = self.command
        if self.start is not None:
            for r, settings in self.start.rows.items():
                if r not in scores or self.start.scores.get(r, -math.inf) >= scores[r]:
                    rows[r], scores[r] = settings, self.start.scores.get(r, 0.0)
            command = f"{self.start.command}; then {self.command}" if self.start.command else self.command
        found = PresetFile(self.model.spec.name, rows, judge, trials, self.spent, tuple(self.classes), scores,
                           command, tuple(self.validate))
        partial = self.out.with_name(self.out.name + ".partial")
        partial.write_text(found.to_json() + "\n")
        partial.replace(self.out)
        return found
