"""Presets scored by the calibration's own objective, as ``deepvis calibrate`` scores a trial.

    python -m bench.bench_calibration_score --presets table1:3,3

Each preset's classes run in one batch (seed 0, the model's input size), on the calibration classes and then on
the validation classes (:func:`deepvis.calibrate.default_classes`); each is scored by
:func:`deepvis.calibrate.run_trial`: the calibration judge's random views plus the model's own robustness
(:mod:`deepvis.eot`).  The mean weights the two sets by their number of classes, as the calibration's jitter stage
does.  The reporting judge takes no part.  Prints one JSON line per preset.
"""

from __future__ import annotations

import argparse
import json
import time

from deepvis import calibrate, presets
from deepvis.models import load_model
from deepvis.targets import resolve_unit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--presets", default="table1:3,3")
    args = parser.parse_args()
    model = load_model(args.model)
    classes, validate = calibrate.default_classes(model)
    units = [resolve_unit(model, model.logits_layer, name) for name in classes]
    checks = [resolve_unit(model, model.logits_layer, name) for name in validate]
    weight = len(units) / (len(units) + len(checks))
    for choice in args.presets.split(","):
        settings = presets.resolve(model, choice)
        began = time.perf_counter()
        on_classes, _ = calibrate.run_trial(model, units, settings)
        on_checks, _ = calibrate.run_trial(model, checks, settings) if checks else (on_classes, None)
        print(json.dumps({"preset": choice, "settings": settings.label, "calibration": round(on_classes, 4),
                          "validation": round(on_checks, 4),
                          "mean": round(weight * on_classes + (1 - weight) * on_checks, 4),
                          "seconds": round(time.perf_counter() - began, 1)}), flush=True)


if __name__ == "__main__":
    main()
