"""``deepvis timeline``: a recorded run's measures over its steps, and a sheet of a layer's filters over steps.

Prints ``{"steps", "scalars", "layers": {L: {"dead", "sparsity", "mean"}}, "convs", "diagnoses", …}`` as JSON
(:func:`deepvis.timeline.summary`; ``null`` where not computed yet).  ``--compute`` first fills in everything
missing with a progress bar; Ctrl-C keeps what it finished and the next ``--compute`` goes on from there.
"""

from __future__ import annotations

import argparse

from deepvis import timeline
from deepvis.diagnosis import diagnose
from deepvis.cli.common import check_device, emit, run_with_bar, write_png
from deepvis.run import RunError, open_run


def add_timeline(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("timeline", help="a training run's measures per step (dead units, sparsity, weight "
                            "noise, your scalars) and a sheet of a layer's filters over steps")
    parser.add_argument("run", help="a run folder (recorded with deepvis.Run or adopted with Run.adopt)")
    parser.add_argument("--layer", default=None, help="the layer whose filters' optimized images the sheet shows "
                        "and --compute fills (default: measures only); its measures lead the JSON's layers")
    parser.add_argument("--compute", action="store_true", help="compute what is missing first (resumable)")
    parser.add_argument("--out", default=None, metavar="SHEET.png", help="write filters × steps of --layer's "
                        "optimized images (steps not computed yet are blank)")
    parser.add_argument("--preset", default=timeline.PRESET, help=f"the preset of every step's images (default: "
                        f"{timeline.PRESET}, the same at every step)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the starting noise, the same at every step")
    parser.add_argument("--size", type=int, default=None, help="image size (default: the network's input)")
    parser.add_argument("--steps", type=int, default=None, help="iterations of every image (default: the preset's)")
    parser.add_argument("--device", default=None, help="cpu, cuda or mps (default: cpu)")


def run_timeline(args: argparse.Namespace) -> int:
    view = open_run(args.run)
    if not view.steps:
        raise RunError(f"{view.name} has no complete snapshot yet")
    device = check_device(args.device) or "cpu"
    pictures = loaded = None
    if args.layer is not None:
        pictures = timeline.Pictures(args.layer, args.preset, args.seed, args.size, args.steps)
        loaded = view.load(view.steps[-1], device)
        names = [info.name for info in loaded.layers]
        if args.layer not in names:
            raise RunError(f"{view.name}'s network has no layer {args.layer!r}; its layers are "
                           f"{', '.join(names[:12])}{' …' if len(names) > 12 else ''}")
    elif args.out:
        raise RunError("--out draws a layer's filters: name it with --layer")
    if args.compute:
        run_with_bar(timeline.compute(view, pictures, device), "timeline", "item",
                     postfix=lambda p: f"step {p.detail['step']} {p.detail['kind']}" if p.detail else "")
    found = timeline.summary(view)
    if args.layer is not None:
        found["layers"] = {args.layer: found["layers"].pop(args.layer, {k: [None] * len(view.steps) for k in (
            "dead", "sparsity", "mean")}), **found["layers"]}
        found["pictures"] = {"layer": args.layer, "preset": args.preset, "seed": args.seed,
                             "folder": str(pictures.folder(view, loaded)),
                             "missing": [s for s, kind in timeline.missing(view, pictures, loaded) if kind == "pictures"]}
    found["diagnoses"] = [{"kind": d.kind, "text": d.text, "layer": d.layer, "evidence": d.evidence}
                          for d in diagnose(view)]
    if args.out:
        write_png(args.out, timeline.sheet(view, pictures, loaded))
        found["sheet"] = args.out
    return emit(found)
