"""Commands that synthesize images: ``optimize``, ``compare`` and ``calibrate``.

(Over 300 lines: the three commands share θ's flags, the preset options and the output files, read together.)

Each prints JSON on stdout (the run's summary, or the preset file ``calibrate`` wrote);
images go to the files ``--out`` and its siblings name.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from deepvis import optimize as opt
from deepvis import objectives, presets, quality
from deepvis.calibrate import DEFAULT_CLASSES, DEFAULT_STEPS, DEFAULT_VALIDATION, search
from deepvis.cli.common import (LAYER_HELP, PRESET_HELP, add_model_options, emit, model_of, read_image,
                                run_with_bar, write_png)
from deepvis.display import DISPLAYS
from deepvis.errors import DeepvisError
from deepvis.models import LoadedModel
from deepvis.progress import Progress
from deepvis.render import compose_sheet, gif_bytes
from deepvis.settings import PARAMS, THETA
from deepvis.targets import Target, resolve_unit


def _unit_run_options(parser: argparse.ArgumentParser) -> None:
    """The options ``optimize`` and ``compare`` share: the unit, the run's length and seed, the model."""
    parser.add_argument("--layer", default=None, help=f"{LAYER_HELP} (may be left out for a class name: the logits)")
    parser.add_argument("--unit", default=None, help="channel or unit number; at the logits also a class name "
                        "(e.g. flamingo), which alone names the logits")
    parser.add_argument("--objective", default="neuron", choices=["neuron", "channel"],
                        help="one spatial position (the centre) or the channel's spatial mean (default: %(default)s)")
    steps = next(t for t in THETA if t.name == "steps")
    parser.add_argument(steps.flag, type=int, default=None, help=f"{steps.help} Default: the preset's.")
    parser.add_argument("--seed", type=int, default=0, help="seed of the starting noise N(0, 10) (default: 0)")
    parser.add_argument("--size", type=int, default=None, help="image side in pixels (default: the model's input)")
    parser.add_argument("--display", default="zero", choices=list(DISPLAYS),
                        help="how images are written: " + "; ".join(f"{d.name} = {d.label}" for d in DISPLAYS.values())
                        + " (default: %(default)s, as the paper's toolbox saves them)")
    add_model_options(parser)


def _target(loaded: LoadedModel, args: argparse.Namespace) -> Target:
    if getattr(args, "target", None):
        if args.unit is not None or args.layer is not None:
            raise DeepvisError("give --target EXPR, or --layer and --unit, not both")
        return objectives.parse(loaded, args.target)
    if args.unit is None:
        raise DeepvisError("give --unit (with --layer), or --target EXPR")
    if args.layer is None:
        if str(args.unit).strip().lstrip("-").isdigit():
            raise DeepvisError(f"--unit {args.unit} needs --layer: a number alone does not say which layer "
                               "(a class name alone means the logits)")
        if loaded.logits_layer is None:
            raise DeepvisError("this network has no logits layer for a class name; give --layer")
    layer = loaded.layer(args.layer or loaded.logits_layer).name
    return Target(layer, resolve_unit(loaded, layer, args.unit), args.objective)


def _photo(args: argparse.Namespace) -> np.ndarray | None:
    return np.asarray(read_image(args.from_photo)) if args.from_photo else None


def add_optimize(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "optimize", help="synthesize the image a unit wants to see (regularized gradient ascent)",
        description="Regularized gradient ascent from N(0, 10) noise (Yosinski et al. 2015). The JSON gives the "
        "objective at the first, last and best iteration, best_step (the iteration whose image scored highest: "
        "the image --out holds), argmax_step (the first iteration at which the unit was the largest of its "
        "layer - for a class, the network's top-1 - or null if never) and the image's quality (a judge "
        "network's rank of the class, robustness to small shifts; see deepvis.quality).")
    parser.add_argument("--preset", default=None, help=f"{PRESET_HELP} (default: 3, or the --param's own "
                        "defaults)")
    parser.add_argument("--from-photo", default=None, metavar="IMAGE",
                        help="feature accentuation (Hamblin et al. 2024): start from this photo and raise the unit "
                        "while staying close to it (--param accentuate)")
    for theta in THETA:  # one flag per θ setting, from the θ table (deepvis.settings)
        if theta.name == "steps":
            continue  # --steps is a run option (compare takes it too)
        kind = {"int": int, "choice": str}.get(theta.kind, float)
        parser.add_argument(theta.flag, type=kind, default=None, choices=theta.choices or None,
                            help=f"{theta.help} Overrides the preset.")
    parser.add_argument("--out", required=True, help="PNG file to write: the best image (highest objective)")
    parser.add_argument("--final", action="store_true",
                        help="write the final image to --out instead of the best one (the paper's output)")
    parser.add_argument("--npy", default=None, help="also write that image as float32 (H, W, 3) .npy: x in the "
                        "optimizer's pixel space (0-255 units, the model's mean subtracted; the JSON gives the mean)")
    parser.add_argument("--gif", default=None, help="also write the history as an animated GIF")
    parser.add_argument("--target", default=None, metavar="EXPR",
                        help='a composed objective instead of --layer/--unit: e.g. "_blocks.9._swish_1:5 - '
                        '0.5*_blocks.9._swish_1:7", "-_fc:flamingo", "L:[v1,v2,...]" or "L:@direction.npy" (a '
                        'direction over L\'s channels); see deepvis.objectives')
    parser.add_argument("--diversity", type=float, default=None, metavar="W",
                        help="add a diversity term of weight W (Olah et al. 2017) over --batch images, each from its "
                        "own seed; --out then holds them side by side")
    parser.add_argument("--batch", type=int, default=None, metavar="N",
                        help="images optimized together with --diversity (default: 4)")
    _unit_run_options(parser)


def run_optimize(args: argparse.Namespace) -> int:
    param = _param_of(args.param, args.from_photo)
    presets.resolve(args.model, args.preset or ("3" if param == "pixels" else param))  # a bad name fails first
    loaded = model_of(args)
    settings = presets.resolve(loaded, args.preset or ("3" if param == "pixels" else param))
    chosen = {t.name: getattr(args, t.name) for t in THETA if getattr(args, t.name) is not None}
    settings = settings.replace(**{**chosen, "param": param})
    photo = _photo(args)
    target = _target(loaded, args)
    if args.batch is not None and args.diversity is None:
        raise DeepvisError("--batch goes with --diversity W")
    targets = [target] if args.diversity is None else objectives.with_diversity(target, args.diversity,
                                                                                 args.batch or 4)
    every = max(1, settings.steps // 60) if args.gif else settings.steps
    frames = []
    for snapshot in opt.optimize(loaded, targets, settings, seed=args.seed, size=args.size, every=every, photo=photo):
        if args.gif:
            frames.append(np.concatenate(list(snapshot.view(args.display)), axis=1))
    if len(targets) > 1:
        return _diverse(loaded, args, snapshot, settings, frames)
    row = snapshot.record.rows[0]
    which = "last" if args.final else "best"
    x = row.last_x if args.final else row.best_x
    write_png(args.out, row.image(which, args.display))
    if args.npy:
        np.save(args.npy, x.astype(np.float32))
    if args.gif:
        Path(args.gif).write_bytes(gif_bytes(frames))
    (verdict,) = quality.assess(loaded, x[None], [target])
    return emit({**row.summary(), "out": args.out, "image": "final" if args.final else "best",
                 "param": settings.param, "from_photo": args.from_photo, "display": args.display, "npy": args.npy,
                 "mean": list(row.mean), "settings": settings.to_dict(),
                 "quality": verdict.to_dict(), "seconds": round(snapshot.record.seconds, 3)})


def _diverse(loaded: LoadedModel, args: argparse.Namespace, snapshot, settings, frames: list) -> int:
    """``optimize --diversity``: the batch's images side by side, each row's summary, and how different they are."""
    rows = snapshot.record.rows
    which = "last" if args.final else "best"
    pixels = np.stack([row.last_x if args.final else row.best_x for row in rows])
    write_png(args.out, np.concatenate([row.image(which, args.display) for row in rows], axis=1))
    if args.npy:
        np.save(args.npy, pixels.astype(np.float32))
    if args.gif:
        Path(args.gif).write_bytes(gif_bytes(frames))
    layer = next(t.layer for t in rows[0].target.terms if t.kind == "diversity")
    return emit({"target": rows[0].target.label, "rows": [row.summary() for row in rows], "out": args.out,
                 "image": which, "diversity": {"weight": args.diversity, "layer": layer, "batch": len(rows),
                                               "feature_distance": objectives.feature_distance(loaded, pixels, layer)},
                 "settings": settings.to_dict(), "seconds": round(snapshot.record.seconds, 3)})


def _param_of(param: str | None, photo: str | None) -> str:
    """The parametrization ``--param`` and ``--from-photo`` ask for (a photo means accentuation)."""
    if photo is None:
        if param == "accentuate":
            raise DeepvisError("--param accentuate needs --from-photo IMAGE")
        return param or "pixels"
    if param not in (None, "fourier", "accentuate"):
        raise DeepvisError(f"--from-photo is feature accentuation (Fourier parametrization), not --param {param}")
    return "accentuate"


def add_compare(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("compare", help="one unit under several presets, in one batched run")
    parser.add_argument("--presets", default="1,2,3,4", help=f"comma-separated presets: {PRESET_HELP} "
                        "(default: %(default)s)")
    parser.add_argument("--params", default=None, help=f"comma-separated parametrizations ({', '.join(PARAMS)}), "
                        "one per column, paired with --presets (a single preset is repeated); a pixels column takes "
                        "its preset, the others their papers' defaults (default: all pixels)")
    parser.add_argument("--from-photo", default=None, metavar="IMAGE", help="the photo accentuate columns start from")
    parser.add_argument("--out", required=True, help="PNG file to write: the sheet of final images")
    parser.add_argument("--out-dir", default=None, help="also write each column's image (as displayed) here")
    _unit_run_options(parser)


def _columns(preset_list: str, param_list: str | None) -> list[tuple[str, str]]:
    """``(preset name, parametrization)`` per column of ``compare``."""
    choices = [p.strip() for p in preset_list.split(",") if p.strip()]
    if not choices:
        raise DeepvisError("--presets needs at least one preset")
    if param_list is None:
        return [(c, "pixels") for c in choices]
    params = [p.strip().lower() for p in param_list.split(",") if p.strip()]
    unknown = [p for p in params if p not in PARAMS]
    if unknown or not params:
        raise DeepvisError(f"--params takes {', '.join(PARAMS)}, not {', '.join(unknown) or 'nothing'}")
    if len(choices) == 1:
        choices = choices * len(params)
    if len(choices) != len(params):
        raise DeepvisError(f"--presets has {len(choices)} columns and --params {len(params)}: give one of each "
                           "per column (or a single preset)")
    return [(c if p == "pixels" else p, p) for c, p in zip(choices, params)]


def run_compare(args: argparse.Namespace) -> int:
    columns = _columns(args.presets, args.params)
    choices = [c for c, _ in columns]
    settings = [presets.resolve(args.model, c) for c in choices]
    if any(s.param == "accentuate" for s in settings) and not args.from_photo:
        raise DeepvisError("an accentuate column needs --from-photo IMAGE")
    loaded = model_of(args)
    settings = [presets.resolve(loaded, c) for c in choices]  # Table 1 rows scaled to the network's side
    if args.steps is not None:
        settings = [s.replace(steps=args.steps) for s in settings]
    photo = _photo(args)
    target = _target(loaded, args)
    record = opt.run(loaded, target, settings, seed=args.seed, size=args.size, photo=photo)
    images = record.images("last", args.display)
    verdicts = quality.assess_record(loaded, record, "last")  # the images the sheet shows
    names = [presets.name(loaded, c) for c in choices]
    sheet = compose_sheet(images, 1, len(settings), [target.label],
                          [f"{n}: {s.label} · {q.label}" for n, s, q in zip(names, settings, verdicts)])
    write_png(args.out, sheet)
    files = []
    if args.out_dir:
        out_dir = Path(args.out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for j, (choice, image) in enumerate(zip(choices, images)):
            files.append(str(out_dir / f"{chr(ord('A') + j)}_{choice.replace(':', '')}.png"))
            write_png(files[-1], image)
    seconds = round(record.seconds, 3)
    return emit([{**row.summary(), "preset": c, "name": n, "param": s.param, "settings": s.to_dict(),
                  "quality": q.to_dict(),
                  "image": files[j] if files else None, "display": args.display, "seconds": seconds}
                 for j, (c, n, s, q, row) in enumerate(zip(choices, names, settings, verdicts, record.rows))])


def add_calibrate(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "calibrate", help="find a network's own presets: a random search over θ for each Table 1 row",
        description="A random search over θ that keeps each Table 1 row's character and tunes its magnitudes, "
        "scored by a judge network that took no part and by robustness (see deepvis.calibrate). Resumable: run "
        "the same command again after an interruption. Writes the preset file and prints it as JSON.")
    parser.add_argument("--trials", type=int, default=20, help="trials per row (default: %(default)s)")
    parser.add_argument("--search-classes", dest="search_classes", default=None,
                        help="comma-separated class names (or numbers) to optimize in every trial (default: "
                        f"{','.join(DEFAULT_CLASSES)} for an ImageNet network; a network of your own: its first 8)")
    parser.add_argument("--validate", default=None,
                        help="comma-separated classes each row's best trials are checked on before one is chosen "
                        f"(default: {','.join(DEFAULT_VALIDATION)}; a network of your own: its next 6, if any)")
    parser.add_argument("--judge", default=None,
                        help="the network whose random views score each trial: a model name as --model takes, with "
                        "the same classes, or `none` for robustness alone (default: EfficientNet-Lite1 for an "
                        "ImageNet network; none for a network of your own). Never the reporting judge.")
    parser.add_argument("--top", type=int, default=3, help="how many of each row's best trials to check on the "
                        "--validate classes; 0 = choose by the search alone (default: %(default)s)")
    parser.add_argument("--jitters", default="", help="comma-separated jitters in pixels (e.g. 4,8,16): each row's "
                        "chosen θ is tried again with each, on both sets of classes, and kept if it scores better "
                        "(default: none)")
    parser.add_argument("--transforms", default="", help="comma-separated SCALE:DEGREES pairs (e.g. 0.1:10,0.2:20): "
                        "after the jitters, each row's θ is tried again with its view zoomed by up to ±SCALE and "
                        "turned by up to ±DEGREES each step, and kept if it scores better (default: none)")
    parser.add_argument("--rows", default="1,2,3,4", help="the rows to search (others come from --start; default: "
                        "%(default)s)")
    parser.add_argument("--robust-space", action="store_true", help="also draw each trial's jitter, scale and "
                        "rotation (deepvis.search_space.ROBUST)")
    parser.add_argument("--start", default=None, help="a preset file of the same model, judge and classes: a second "
                        "round, where each searched row keeps the file's θ unless it finds a higher score")
    parser.add_argument("--out", default=None, help="preset file to write (default: presets-MODEL.json)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the search and of the starting noise")
    parser.add_argument("--size", type=int, default=None, help="image side in pixels (default: the model's input)")
    parser.add_argument("--steps", default=",".join(map(str, DEFAULT_STEPS)),
                        help="iteration counts to draw from (default: %(default)s)")
    add_model_options(parser)


def _trial_note(step: Progress) -> str:
    """The bar's note for a calibration step: this trial and each row's best score so far."""
    trial = step.detail.trial
    best = " ".join(f"r{r}={t.score:.2f}" for r, t in sorted(step.detail.best.items()))
    s = trial.settings
    stage = {"validate": "validating ", "jitter": f"jitter {s.jitter} ",
             "transform": f"scale ±{s.scale:g} rotate ±{s.rotate:g}° "}.get(trial.stage, "")
    return f"{stage}row {trial.row} trial {trial.index}: {trial.score:.2f} · best {best}"


def run_calibrate(args: argparse.Namespace) -> int:
    try:
        steps = [int(v) for v in args.steps.split(",") if v.strip()]
    except ValueError:
        raise DeepvisError(f"--steps must be whole numbers separated by commas, not {args.steps!r}") from None
    try:
        jitters = [int(v) for v in args.jitters.split(",") if v.strip()]
    except ValueError:
        raise DeepvisError(f"--jitters must be whole numbers separated by commas, not {args.jitters!r}") from None
    try:
        transforms = [tuple(float(x) for x in v.split(":")) for v in args.transforms.split(",") if v.strip()]
        if any(len(t) != 2 for t in transforms):
            raise ValueError
    except ValueError:
        raise DeepvisError(f"--transforms must be SCALE:DEGREES pairs separated by commas, not {args.transforms!r}"
                           ) from None
    try:
        rows = [int(v) for v in args.rows.split(",") if v.strip()]
    except ValueError:
        raise DeepvisError(f"--rows must be row numbers separated by commas, not {args.rows!r}") from None
    start = None if args.start is None else presets.PresetFile.read(args.start)
    classes = None if args.search_classes is None else [c.strip() for c in args.search_classes.split(",") if c.strip()]
    validate = None if args.validate is None else [c.strip() for c in args.validate.split(",") if c.strip()]
    loaded = model_of(args)
    out = args.out or f"presets-{loaded.spec.name}.json"
    no_judge = args.judge is not None and args.judge.strip().lower() == "none"
    judge_with = None
    if args.judge is not None and not no_judge:
        import deepvis

        judge_with = deepvis.load_model(args.judge, device=str(loaded.device))
    command = "python -m deepvis " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["calibrate"] else ""
    work = search(loaded, out, classes=classes, trials=args.trials, seed=args.seed, size=args.size,
                  steps=steps, validate=validate, top=args.top, command=command, judge_with=judge_with,
                  no_judge=no_judge, jitters=jitters, transforms=transforms, rows=rows, robust=args.robust_space,
                  start=start)
    found = run_with_bar(work, "calibrate", "trial",
                         total=(args.trials + args.top + len(jitters) + len(transforms)) * len(set(rows)),
                         postfix=_trial_note)
    return emit({"out": out, **json.loads(found.to_json())})
