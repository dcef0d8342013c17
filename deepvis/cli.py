"""Command line: ``deepvis <command> …`` (or ``python -m deepvis``); every command prints JSON on stdout.

Errors a person can cause (a bad file, an unknown layer, weights that cannot be
had) print one line on stderr and exit with status 2.  (About 370 lines: one parser
and one short function per command; the work itself is in the library.)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from deepvis.errors import DeepvisError
from deepvis.models import DEFAULT_MODEL, REGISTRY, WEIGHT_CHOICES, LoadedModel, load_model
from deepvis.settings import THETA


LAYER_HELP = ("a node of the traced graph as `info` lists it, e.g. _blocks.9._swish_1 (ReLU6 in block 9); "
              "a module path such as _blocks.9 names that module's output")


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, choices=list(REGISTRY), help="network (default: %(default)s)")
    parser.add_argument("--weights", default="default", choices=WEIGHT_CHOICES,
                        help="pretrained ImageNet weights or a seeded random init (default: %(default)s)")
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")


def _model(args: argparse.Namespace) -> LoadedModel:
    return load_model(args.model, args.weights, check_device(args.device))


def check_device(device: str | None) -> str | None:
    """``device`` if this machine has it, else a ``ValueError`` in one line (no torch traceback)."""
    import torch

    if device is None:
        return None
    kind = device.split(":")[0]
    available = {"cpu": True, "cuda": torch.cuda.is_available(),
                 "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()}
    if kind not in available:
        raise DeepvisError(f"unknown device {device!r}; use cpu, cuda or mps")
    if not available[kind]:
        raise DeepvisError(f"this machine has no {kind} device; use --device cpu (or leave --device out)")
    return device


def _read_image(path: str):
    from deepvis.images import ImageDecodeError, decode_image

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageDecodeError(f"Cannot read {path}: {exc.strerror or exc}.") from None
    return decode_image(data)


def _with_bar(work, desc: str, unit: str):
    """Run a generator of progress steps (``done``, ``total``) to its end with a tqdm bar on stderr; its return
    value."""
    from tqdm import tqdm

    with tqdm(desc=desc, unit=unit, file=sys.stderr) as bar:
        while True:
            try:
                step = next(work)
            except StopIteration as done:
                return done.value
            bar.total = step.total
            bar.update(step.done - bar.n)


def _emit(value: object) -> int:
    json.dump(value, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def _add_info(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("info", help="model, device, input size and layers with their shapes")
    _add_model_options(parser)


def cmd_info(args: argparse.Namespace) -> int:
    loaded = _model(args)
    return _emit({
        "model": loaded.spec.name, "title": loaded.spec.title, "weights": loaded.weights,
        "device": str(loaded.device), "input_size": loaded.spec.input_size,
        "normalization": {"mean": loaded.spec.normalization.mean, "std": loaded.spec.normalization.std},
        "default_layer": loaded.default_layer, "notice": loaded.notice,
        "layers": [{"name": i.name, "group": i.group, "op": i.op, "rectified": i.rectified,
                    "description": i.description, "shape": list(i.shape), "kind": i.kind} for i in loaded.layers],
    })


def _add_predict(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("predict", help="top-K ImageNet classes for a photo")
    parser.add_argument("image")
    parser.add_argument("--top", type=int, default=5)
    _add_model_options(parser)


def cmd_predict(args: argparse.Namespace) -> int:
    from deepvis.activations import predict
    from deepvis.images import preprocess

    image = _read_image(args.image)
    loaded = _model(args)
    predictions = predict(loaded.module, preprocess(image, loaded.spec, loaded.device), loaded.class_names, args.top)
    return _emit([{"label": p.label, "index": p.index, "prob": p.prob} for p in predictions[0]])


def _add_activations(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("activations", help="per-channel mean, max and argmax of one layer for a photo")
    parser.add_argument("image")
    parser.add_argument("--layer", required=True, help=LAYER_HELP)
    _add_model_options(parser)


def cmd_activations(args: argparse.Namespace) -> int:
    from deepvis.activations import analyze

    image = _read_image(args.image)
    loaded = _model(args)
    info = loaded.layer(args.layer)
    result = analyze(loaded, image, info.name)
    return _emit({"model": loaded.spec.name, "layer": info.name, "description": info.description,
                  "shape": list(info.shape), "channels": result.stats.as_records()})


def _add_backprop(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("backprop", help="saliency, deconvnet or guided-backprop image of one unit for a photo")
    parser.add_argument("image")
    parser.add_argument("--layer", required=True, help=LAYER_HELP)
    parser.add_argument("--unit", type=int, required=True, help="channel of the layer")
    parser.add_argument("--y", type=int, default=None, help="row of the unit (with --x): seed a one-hot there; "
                        "without --y/--x the seed is the channel's activation map")
    parser.add_argument("--x", type=int, default=None, help="column of the unit (with --y)")
    parser.add_argument("--mode", required=True, choices=["saliency", "deconv", "guided"])
    parser.add_argument("--filter", default="norm_blur", choices=["raw", "gray", "norm", "norm_blur"],
                        help="how the PNG shows the gradient, as on the Activations page: raw (signed, zero = grey; "
                             "faint), gray, norm (per-pixel strength) or norm_blur (default: %(default)s)")
    parser.add_argument("--out", required=True, help="PNG of the gradient, drawn with --filter")
    parser.add_argument("--npy", default=None, help="also save the raw gradient (3, H, W) w.r.t. the network input")
    _add_model_options(parser)


def cmd_backprop(args: argparse.Namespace) -> int:
    import numpy as np

    from deepvis.backprop import Unit, backprop
    from deepvis.images import preprocess
    from deepvis.render import backprop_image, png_bytes

    unit = Unit(args.unit, args.y, args.x)
    image = _read_image(args.image)
    loaded = _model(args)
    layer = loaded.layer(args.layer).name
    gradient = backprop(loaded.module, preprocess(image, loaded.spec, loaded.device), layer, unit, args.mode)[0]
    Path(args.out).write_bytes(png_bytes(backprop_image(gradient, args.filter)))
    array = gradient.float().cpu().numpy()
    if args.npy:
        np.save(args.npy, array)
    return _emit({"model": loaded.spec.name, "weights": loaded.weights, "layer": layer, "mode": args.mode,
                  "filter": args.filter,
                  "unit": {"channel": unit.channel, "y": unit.y, "x": unit.x},
                  "seed": "point" if unit.has_position else "map", "shape": list(array.shape),
                  "max_abs": float(np.abs(array).max()), "out": args.out, "npy": args.npy})


def _add_occlusion(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("occlusion", help="occlusion map of a photo: what covering each part does to the top "
                            "class or a unit (Zeiler & Fergus)")
    parser.add_argument("image")
    parser.add_argument("--layer", default=None, help=f"{LAYER_HELP}; with --unit the target is that unit's "
                        "activation summed over its map (default: the top class's probability)")
    parser.add_argument("--unit", type=int, default=None, help="channel or element of --layer")
    parser.add_argument("--patch", type=int, default=32, help="side of the grey square, px (default: %(default)s)")
    parser.add_argument("--stride", type=int, default=16, help="step between squares, px (default: %(default)s)")
    parser.add_argument("--out", required=True, help="PNG of the map as a heatmap (bright = the target drops most)")
    parser.add_argument("--npy", default=None, help="also save the (H, W) float32 map: per pixel the mean drop over "
                        "the squares that cover it (Captum's convention)")
    _add_model_options(parser)


def cmd_occlusion(args: argparse.Namespace) -> int:
    import numpy as np

    from deepvis.images import model_view
    from deepvis.occlusion import occlude
    from deepvis.render import heat_colors, png_bytes, to_uint8

    if (args.layer is None) != (args.unit is None):
        raise DeepvisError("give --layer and --unit together, or neither (the top class)")
    image = _read_image(args.image)
    loaded = _model(args)
    layer = loaded.layer(args.layer).name if args.layer else None
    view = model_view(image, loaded.spec)
    result = _with_bar(occlude(loaded, view, args.patch, args.stride, layer, args.unit), "occlusion", "window")
    Path(args.out).write_bytes(png_bytes(heat_colors(to_uint8(np.clip(result.drops, 0, None)))))
    if args.npy:
        np.save(args.npy, result.drops.astype(np.float32))
    return _emit({"model": loaded.spec.name, "target": result.target, "baseline": result.baseline,
                  "patch": args.patch, "stride": args.stride, "windows": result.windows,
                  "max_drop": float(result.drops.max()), "out": args.out, "npy": args.npy})


def _unit_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layer", required=True, help=LAYER_HELP)
    parser.add_argument("--unit", required=True, help="channel or unit number; at the logits also a class name "
                        "(e.g. flamingo)")
    parser.add_argument("--objective", default="neuron", choices=["neuron", "channel"],
                        help="one spatial position (the centre) or the channel's spatial mean (default: %(default)s)")
    from deepvis.display import DISPLAYS
    from deepvis.settings import THETA

    steps = next(t for t in THETA if t.name == "steps")
    parser.add_argument(steps.flag, type=int, default=None, help=f"{steps.help} Default: the preset's.")
    parser.add_argument("--seed", type=int, default=0, help="seed of the starting noise N(0, 10) (default: 0)")
    parser.add_argument("--size", type=int, default=None, help="image side in pixels (default: the model's input)")
    parser.add_argument("--display", default="zero", choices=list(DISPLAYS),
                        help="how images are written: " + "; ".join(f"{d.name} = {d.label}" for d in DISPLAYS.values())
                        + " (default: %(default)s, as the paper's toolbox saves them)")
    _add_model_options(parser)


PRESET_HELP = ("N = the model's calibrated row N (Table 1 row N for a model without calibrated rows); "
               "table1:N = the paper's CaffeNet row N verbatim; fourier, maco, accentuate = a later "
               "parametrization with its paper's defaults")


def _target(loaded: LoadedModel, args: argparse.Namespace):
    from deepvis.targets import Target, resolve_unit

    layer = loaded.layer(args.layer).name
    return Target(layer, resolve_unit(loaded, layer, args.unit), args.objective)


def _write_png(path: str, image) -> None:
    from deepvis.render import png_bytes

    Path(path).write_bytes(png_bytes(image))


def _add_optimize(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "optimize", help="synthesize the image a unit wants to see (regularized gradient ascent)",
        description="Regularized gradient ascent from N(0, 10) noise (Yosinski et al. 2015). The JSON gives the "
        "objective at the first, last and best iteration, best_step (the iteration whose image scored highest: "
        "the image --out holds), argmax_step (the first iteration at which the unit was the largest of its "
        "layer - for a class, the network's top-1 - or null if never) and the image's quality (a judge "
        "network's rank of the class, robustness to small shifts; see deepvis.quality).")
    from deepvis.settings import THETA

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
    _unit_run_options(parser)


def cmd_optimize(args: argparse.Namespace) -> int:
    import numpy as np

    from deepvis import optimize as opt
    from deepvis import presets, quality
    from deepvis.render import gif_bytes

    param = _param_of(args.param, args.from_photo)
    settings = presets.resolve(args.model, args.preset or ("3" if param == "pixels" else param))
    chosen = {t.name: getattr(args, t.name) for t in THETA if getattr(args, t.name) is not None}
    settings = settings.replace(**{**chosen, "param": param})
    photo = np.asarray(_read_image(args.from_photo)) if args.from_photo else None
    loaded = _model(args)
    target = _target(loaded, args)
    every = max(1, settings.steps // 60) if args.gif else settings.steps
    frames = []
    for snapshot in opt.optimize(loaded, target, settings, seed=args.seed, size=args.size, every=every, photo=photo):
        if args.gif:
            frames.append(snapshot.view(args.display)[0])
    row = snapshot.record.rows[0]
    which = "last" if args.final else "best"
    x = row.last_x if args.final else row.best_x
    _write_png(args.out, row.image(which, args.display))
    if args.npy:
        np.save(args.npy, x.astype(np.float32))
    if args.gif:
        Path(args.gif).write_bytes(gif_bytes(frames))
    (verdict,) = quality.assess(loaded, x[None], [target])
    return _emit({**row.summary(), "out": args.out, "image": "final" if args.final else "best",
                  "param": settings.param, "from_photo": args.from_photo, "display": args.display, "npy": args.npy,
                  "mean": list(row.mean), "settings": settings.to_dict(),
                  "quality": verdict.to_dict(), "seconds": round(snapshot.record.seconds, 3)})


def _param_of(param: str | None, photo: str | None) -> str:
    """The parametrization ``--param`` and ``--from-photo`` ask for (a photo means accentuation)."""
    if photo is None:
        if param == "accentuate":
            raise DeepvisError("--param accentuate needs --from-photo IMAGE")
        return param or "pixels"
    if param not in (None, "fourier", "accentuate"):
        raise DeepvisError(f"--from-photo is feature accentuation (Fourier parametrization), not --param {param}")
    return "accentuate"


def _add_compare(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("compare", help="one unit under several presets, in one batched run")
    parser.add_argument("--presets", default="1,2,3,4", help=f"comma-separated presets: {PRESET_HELP} "
                        "(default: %(default)s)")
    from deepvis.settings import PARAMS

    parser.add_argument("--params", default=None, help=f"comma-separated parametrizations ({', '.join(PARAMS)}), "
                        "one per column, paired with --presets (a single preset is repeated); a pixels column takes "
                        "its preset, the others their papers' defaults (default: all pixels)")
    parser.add_argument("--from-photo", default=None, metavar="IMAGE", help="the photo accentuate columns start from")
    parser.add_argument("--out", required=True, help="PNG file to write: the sheet of final images")
    parser.add_argument("--out-dir", default=None, help="also write each column's image (as displayed) here")
    _unit_run_options(parser)


def _columns(preset_list: str, param_list: str | None) -> list[tuple[str, str]]:
    """``(preset name, parametrization)`` per column of ``compare``."""
    from deepvis.settings import PARAMS

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


def cmd_compare(args: argparse.Namespace) -> int:
    import numpy as np

    from deepvis import optimize as opt
    from deepvis import presets, quality
    from deepvis.render import compose_sheet

    columns = _columns(args.presets, args.params)
    choices = [c for c, _ in columns]
    settings = [presets.resolve(args.model, c) for c in choices]
    if any(s.param == "accentuate" for s in settings) and not args.from_photo:
        raise DeepvisError("an accentuate column needs --from-photo IMAGE")
    if args.steps is not None:
        settings = [s.replace(steps=args.steps) for s in settings]
    photo = np.asarray(_read_image(args.from_photo)) if args.from_photo else None
    loaded = _model(args)
    target = _target(loaded, args)
    record = opt.run(loaded, target, settings, seed=args.seed, size=args.size, photo=photo)
    images = record.images("last", args.display)
    verdicts = quality.assess_record(loaded, record, "last")  # the images the sheet shows
    names = [presets.name(args.model, c) for c in choices]
    sheet = compose_sheet(images, 1, len(settings), [target.label],
                          [f"{n}: {s.label} · {q.label}" for n, s, q in zip(names, settings, verdicts)])
    _write_png(args.out, sheet)
    files = []
    if args.out_dir:
        out_dir = Path(args.out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for j, (choice, image) in enumerate(zip(choices, images)):
            files.append(str(out_dir / f"{chr(ord('A') + j)}_{choice.replace(':', '')}.png"))
            _write_png(files[-1], image)
    seconds = round(record.seconds, 3)
    return _emit([{**row.summary(), "preset": c, "name": n, "param": s.param, "settings": s.to_dict(),
                   "quality": q.to_dict(),
                   "image": files[j] if files else None, "display": args.display, "seconds": seconds}
                  for j, (c, n, s, q, row) in enumerate(zip(choices, names, settings, verdicts, record.rows))])


def _add_calibrate(sub: argparse._SubParsersAction) -> None:
    from deepvis.calibrate import DEFAULT_CLASSES, DEFAULT_STEPS, DEFAULT_VALIDATION

    parser = sub.add_parser(
        "calibrate", help="find a network's own presets: a random search over θ for each Table 1 row",
        description="A random search over θ that keeps each Table 1 row's character and tunes its magnitudes, "
        "scored by a judge network that took no part and by robustness (see deepvis.calibrate). Resumable: run "
        "the same command again after an interruption. Writes the preset file and prints it as JSON.")
    parser.add_argument("--trials", type=int, default=20, help="trials per row (default: %(default)s)")
    parser.add_argument("--classes", default=",".join(DEFAULT_CLASSES),
                        help="comma-separated class names to optimize in every trial (default: %(default)s)")
    parser.add_argument("--validate", default=",".join(DEFAULT_VALIDATION),
                        help="comma-separated classes each row's best trials are checked on before one is chosen "
                        "(default: %(default)s)")
    parser.add_argument("--top", type=int, default=3, help="how many of each row's best trials to check on the "
                        "--validate classes; 0 = choose by the search alone (default: %(default)s)")
    parser.add_argument("--out", default=None, help="preset file to write (default: presets-MODEL.json)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the search and of the starting noise")
    parser.add_argument("--size", type=int, default=None, help="image side in pixels (default: the model's input)")
    parser.add_argument("--steps", default=",".join(map(str, DEFAULT_STEPS)),
                        help="iteration counts to draw from (default: %(default)s)")
    _add_model_options(parser)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from deepvis.calibrate import search

    try:
        steps = [int(v) for v in args.steps.split(",") if v.strip()]
    except ValueError:
        raise DeepvisError(f"--steps must be whole numbers separated by commas, not {args.steps!r}") from None
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    validate = [c.strip() for c in args.validate.split(",") if c.strip()]
    out = args.out or f"presets-{args.model}.json"
    loaded = _model(args)
    command = "python -m deepvis " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["calibrate"] else ""
    progress = search(loaded, out, classes=classes, trials=args.trials, seed=args.seed, size=args.size,
                      steps=steps, validate=validate, top=args.top, command=command)
    with tqdm(total=(args.trials + args.top) * 4, desc="calibrate", unit="trial", file=sys.stderr) as bar:
        try:
            while True:
                step = next(progress)
                best = " ".join(f"r{r}={t.score:.2f}" for r, t in sorted(step.detail.best.items()))
                stage = "validating " if step.detail.trial.stage == "validate" else ""
                bar.set_postfix_str(f"{stage}row {step.detail.trial.row} trial {step.detail.trial.index}: {step.detail.trial.score:.2f} · "
                                    f"best {best}")
                if step.resumed:  # read back from the log: count it as done before this run, not in its rate
                    bar.initial = bar.n = step.done
                    bar.refresh()
                else:
                    bar.update(1)
        except StopIteration as stop:
            found = stop.value
    return _emit({"out": out, **json.loads(found.to_json())})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepvis", description="Look inside a convolutional network (Yosinski et al. 2015). Every command "
        "prints JSON on stdout; bad input prints one line on stderr and exits with status 2.",
        epilog="Run `deepvis COMMAND --help` for a command's options; `deepvis info` lists a model's layers.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, value in _commands("_add_"):
        if name != "_add_model_options":
            value(sub)
    return parser


def _commands(prefix: str) -> list[tuple[str, object]]:
    """This module's and :mod:`deepvis.cli_collections`' functions whose names start with ``prefix``."""
    from deepvis import cli_collections

    found = list(globals().items()) + list(vars(cli_collections).items())
    return [(name, value) for name, value in found if name.startswith(prefix) and callable(value)]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return dict(_commands("cmd_"))[f"cmd_{args.command}"](args)
    except KeyboardInterrupt:
        print(f"deepvis {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as exc:  # our errors are ValueError subclasses with plain messages
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        print(f"deepvis {args.command}: {message}", file=sys.stderr)
        return 2


def run() -> None:
    """The ``deepvis`` console command (its process keeps freed memory: :mod:`deepvis.allocator`)."""
    from deepvis.allocator import keep_freed_memory

    keep_freed_memory()
    sys.exit(main())
