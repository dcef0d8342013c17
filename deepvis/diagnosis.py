"""What a run's measures say in words: units that died in training, a first layer still noisy.

Conventions
-----------
* Read from the measures :mod:`deepvis.timeline` keeps per step, up to a chosen step.
* **Dead units**: a layer's channels dead on every probe input now that were alive at the first
  measured snapshot, when they are at least :data:`deepvis.timeline.DEAD` of its channels; "since"
  is the first step from which all of them stayed dead.  Units dead from the first snapshot on did
  not die of training (the probe may not excite them) and are only listed in the evidence.  The
  same units seen again through the next ReLU or pooling are said once.  The reading, too high a
  learning rate, is CS231n's (*dying ReLU*, "Neural Networks Part 1").
* **Noisy first layer**: the first convolution's weight-noise ratio (:mod:`deepvis.health`) above
  :data:`deepvis.health.NOISY`; below it, the filters are called smooth, with where they started.
"""

from __future__ import annotations

from dataclasses import dataclass

from deepvis import health
from deepvis.run_files import RunView
from deepvis.timeline import DEAD, read_measures


@dataclass(frozen=True)
class Diagnosis:
    """One finding in words, with the numbers it rests on."""

    kind: str  # "dead", "noisy", "smooth"
    text: str
    layer: str
    evidence: dict


def diagnose(view: RunView, at: int | None = None) -> list[Diagnosis]:
    """What the measures up to step ``at`` (default: the last) say, in words (:mod:`deepvis.health`)."""
    steps = [s for s in view.steps if at is None or s <= at]
    measured = [(s, read_measures(view, s)) for s in steps]
    measured = [(s, m) for s, m in measured if m is not None]
    if not measured:
        return []
    now_step, now = measured[-1]
    found: list[Diagnosis] = []
    seen: set[tuple[int, tuple[int, ...]]] = set()
    start = measured[0][1]["layers"]
    for name, stats in now["layers"].items():
        if not stats["dead"]:
            continue
        channels = round(len(stats["dead_channels"]) / stats["dead"])
        # units dead on the probe from the first snapshot on did not die of training: only the ones that died count
        born_dead = set(start.get(name, {}).get("dead_channels", [])) if len(measured) > 1 else set(
            stats["dead_channels"])
        died = tuple(c for c in stats["dead_channels"] if c not in born_dead)
        if not died or len(died) / channels < DEAD or (channels, died) in seen:
            continue  # (the same units seen again through the next ReLU or pooling: said once)
        seen.add((channels, died))
        since = now_step
        for step, m in reversed(measured):
            if not set(died) <= set(m["layers"].get(name, {}).get("dead_channels", [])):
                break
            since = step
        share = len(died) / channels
        found.append(Diagnosis("dead", f"{share:.0%} of `{name}`'s channels have been dead since step {since}: a "
                               "symptom of too high a learning rate", name,
                               {"dead": share, "channels": list(died), "since": since,
                                "dead_from_the_start": sorted(born_dead)}))
    first = next(((c, v) for c, v in now["convs"].items() if v.get("first")), None)
    if first is not None and first[1]["noise"] is not None:
        conv, values = first
        start = measured[0][1]["convs"].get(conv, {}).get("noise")
        evidence = {"noise": values["noise"], "at_start": start, "threshold": health.NOISY}
        if values["noise"] > health.NOISY:
            found.append(Diagnosis("noisy", f"first-layer filters are still noisy (high-frequency ratio "
                                   f"{values['noise']:.2f}; white noise scores 1, smooth filters below "
                                   f"{health.NOISY})", conv, evidence))
        else:
            was = f", from {start:.2f} at step {measured[0][0]}" if start is not None and now_step != measured[0][0] else ""
            found.append(Diagnosis("smooth", f"first-layer filters are smooth (high-frequency ratio "
                                   f"{values['noise']:.2f}{was})", conv, evidence))
    return found
