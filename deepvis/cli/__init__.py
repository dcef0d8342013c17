"""Command line: ``deepvis <command> …`` (or ``python -m deepvis``).

Conventions
-----------
* Every command prints JSON on stdout; progress bars go to stderr.
* A mistake a person can make (a bad file, an unknown layer, weights that cannot be had)
  is a :class:`deepvis.errors.DeepvisError` or an ``OSError``: one line on stderr,
  ``deepvis <command>: <what to do>``, and exit status 2.  Ctrl-C exits with 130.
  Any other exception is a bug and propagates with its traceback.
* ``--models FILE`` (before the command or after it, repeatable) names models files whose
  entries ``--model`` can name (:mod:`deepvis.models_file`); they hold for that one run.
* :data:`COMMANDS` lists the commands in the order ``deepvis --help`` shows them; each
  module of this package holds one family's ``add_*`` (its parser) and ``run_*`` (its work).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from deepvis.allocator import keep_freed_memory
from deepvis.cli import atlas, collections, inspection, inversion, synthesis, training
from deepvis.cli.common import MODELS_HELP, model_files
from deepvis.errors import DeepvisError, one_line
from deepvis.models_file import registered


@dataclass(frozen=True)
class Command:
    """One ``deepvis`` command: ``add`` puts its parser on the subparsers, ``run`` does it (exit status)."""

    name: str
    add: Callable[[argparse._SubParsersAction], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: tuple[Command, ...] = (
    Command("info", inspection.add_info, inspection.run_info),
    Command("predict", inspection.add_predict, inspection.run_predict),
    Command("activations", inspection.add_activations, inspection.run_activations),
    Command("backprop", inspection.add_backprop, inspection.run_backprop),
    Command("gradcam", inspection.add_gradcam, inspection.run_gradcam),
    Command("occlusion", inspection.add_occlusion, inspection.run_occlusion),
    Command("optimize", synthesis.add_optimize, synthesis.run_optimize),
    Command("invert", inversion.add_invert, inversion.run_invert),
    Command("compare", synthesis.add_compare, synthesis.run_compare),
    Command("calibrate", synthesis.add_calibrate, synthesis.run_calibrate),
    Command("index", collections.add_index, collections.run_index),
    Command("top", collections.add_top, collections.run_top),
    Command("merge", collections.add_merge, collections.run_merge),
    Command("embed", collections.add_embed, collections.run_embed),
    Command("atlas", atlas.add_atlas, atlas.run_atlas),
    Command("timeline", training.add_timeline, training.run_timeline),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepvis", description="Look inside a convolutional network (Yosinski et al. 2015). Every command "
        "prints JSON on stdout; bad input prints one line on stderr and exits with status 2.",
        epilog="Run `deepvis COMMAND --help` for a command's options; `deepvis info` lists a model's layers.")
    parser.add_argument("--models", action="append", default=[], metavar="FILE", help=MODELS_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and run the command; its exit status."""
    args = build_parser().parse_args(argv)
    run_command = next(c.run for c in COMMANDS if c.name == args.command)
    try:
        with registered(model_files(args)):
            return run_command(args)
    except KeyboardInterrupt:
        print(f"deepvis {args.command}: interrupted", file=sys.stderr)
        return 130
    except (DeepvisError, OSError) as exc:
        print(f"deepvis {args.command}: {one_line(exc)}", file=sys.stderr)
        return 2


def run() -> None:
    """The ``deepvis`` console command (its process keeps freed memory: :mod:`deepvis.allocator`)."""
    keep_freed_memory()
    sys.exit(main())
