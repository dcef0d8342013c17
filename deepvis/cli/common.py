"""What every command shares: the model options, loading the model, reading a photo, writing
JSON and PNGs, and one progress bar for long work.

Conventions
-----------
* A command prints its result as JSON on stdout (:func:`emit`) and nothing else there.
* A bar goes to stderr; long work is a generator of :class:`deepvis.progress.Progress`,
  run by :func:`run_with_bar`.
* A mistake a person can make raises :class:`deepvis.errors.DeepvisError`;
  :func:`deepvis.cli.main` prints its first line and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Generator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from deepvis.errors import DeepvisError
from deepvis.images import open_photo
from deepvis.models import DEFAULT_MODEL, REGISTRY, WEIGHT_CHOICES, LoadedModel, load_model
from deepvis.models_file import DESCRIBE
from deepvis.networks import load
from deepvis.progress import Progress, Result, drain
from deepvis.render import png_bytes

LAYER_HELP = ("a node of the traced graph as `info` lists it, e.g. _blocks.9._swish_1 (ReLU6 in block 9); "
              "a module path such as _blocks.9 names that module's output")

PRESET_HELP = ("N = the model's calibrated row N (Table 1 row N for a model without calibrated rows); "
               "table1:N = the paper's CaffeNet row N verbatim; fourier, maco, accentuate = a later "
               "parametrization with its paper's defaults; none = no regularization (fooling images)")


MODELS_HELP = ("a models file (TOML) whose [models.NAME] entries --model can name; repeat for several "
               "(also DEEPVIS_MODELS)")
_TYPES = {"resize": int}
_METAVARS = {"model": "NAME", "title": "TEXT", "weights": "W", "input": "CxHxW", "mean": "M", "std": "S",
             "resize": "PX", "classes": "FILE"}


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """``--model`` and what describes a network of one's own (:data:`deepvis.models_file.DESCRIBE`), ``--models``
    (kept apart from the top-level one, which argparse would otherwise overwrite) and ``--device``."""
    for row in DESCRIBE:
        help_text = row.help
        if row.name == "model":
            help_text = f"{row.help}; built in: {', '.join(REGISTRY)} (default: %(default)s)"
        parser.add_argument(row.flag, type=_TYPES.get(row.name, str), help=help_text, metavar=_METAVARS[row.name],
                            action="append" if row.name in ("mean", "std") else "store",  # or comma-separated
                            default={"model": DEFAULT_MODEL, "weights": "default"}.get(row.name))
    parser.add_argument("--models", dest="models_after", action="append", default=argparse.SUPPRESS,
                        metavar="FILE", help=MODELS_HELP)
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")


def _numbers(values: list[str] | None, flag: str) -> list[float] | None:
    if values is None:
        return None
    try:
        return [float(v) for text in values for v in text.split(",") if v.strip()]
    except ValueError:
        raise DeepvisError(f"{flag} takes numbers separated by commas, not {','.join(values)!r}") from None


def model_files(args: argparse.Namespace) -> list[str]:
    """The models files ``--models`` names, before the command and after it."""
    return [*(getattr(args, "models", None) or ()), *(getattr(args, "models_after", None) or ())]


def model_of(args: argparse.Namespace) -> LoadedModel:
    """The model the options of :func:`add_model_options` name (the naming rule of :mod:`deepvis.networks`)."""
    device = check_device(args.device)
    given = {"input": args.input, "mean": _numbers(args.mean, "--mean"), "std": _numbers(args.std, "--std"),
             "resize": args.resize, "classes": args.classes, "title": args.title}
    if args.model in REGISTRY and args.weights in WEIGHT_CHOICES and all(v is None for v in given.values()):
        return load_model(args.model, args.weights, device)
    return load(args.model, args.weights, device, **given)


def check_device(device: str | None) -> str | None:
    """``device`` if this machine has it, else a :class:`DeepvisError` in one line (no torch traceback)."""
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


def read_image(path: str) -> Image.Image:
    """The photo at ``path`` as RGB; :class:`ImageDecodeError` for a file that cannot be read or decoded."""
    return open_photo(Path(path))  # a Path: a file, never a bundled sample's name


def emit(value: object) -> int:
    """Print ``value`` as JSON on stdout; the command's exit status (0)."""
    json.dump(value, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def write_png(path: str, image: np.ndarray) -> None:
    Path(path).write_bytes(png_bytes(image))


def run_with_bar(work: Generator[Progress, None, Result], desc: str, unit: str, *, total: int | None = None,
                 postfix: Callable[[Progress], str] | None = None) -> Result:
    """Run ``work`` to its end with a tqdm bar on stderr; its return value.

    ``total`` shows before the first step; ``postfix`` makes each step's note from its ``detail``.  A
    ``resumed`` step (read back from disk) counts as done before this run, not in the bar's rate.
    """
    with tqdm(total=total, desc=desc, unit=unit, file=sys.stderr) as bar:
        def show(step: Progress) -> None:
            bar.total = step.total
            if postfix is not None:
                bar.set_postfix_str(postfix(step))
            if step.resumed:
                bar.initial = bar.n = step.done
                bar.refresh()
            else:
                bar.update(step.done - bar.n)

        return drain(work, show)
