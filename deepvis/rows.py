"""The rows of a batched optimization: each row's target and θ as tensors, and their objectives.

Conventions
-----------
* A batch of ``B`` rows optimizes one image per row; each row has its own
  :class:`deepvis.targets.Target` and :class:`deepvis.settings.Settings`.  Rows stop
  at their own ``steps``, so an iteration runs only the ``active`` ones.
* **Objective**, always maximized: for a conv layer one activation ``(c, y, x)``
  (default the centre of the layer's output at the run's image size) or the channel's
  spatial mean; for a vector layer (logits) the element ``c`` (a class).
* **A rectified unit** (a ReLU/ReLU6 node, ``sources[layer] = (input node, cap)``) is
  ascended through its input, the pre-activation, as the authors' toolbox does; its
  reported objective is its own rectified value, and whether it is its layer's argmax
  is judged on that value.
* Used by both engines: the paper's pixel ascent (:mod:`deepvis.optimize`) and the later
  parametrizations (:mod:`deepvis.param_ascent`).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import torch

from deepvis import regularizers as reg
from deepvis.settings import OptimizeError, Settings
from deepvis.targets import Target


def _position(target: Target, layer: str, shape: torch.Size) -> tuple[int, int]:
    y, x = target.centre_or_position(shape[1], shape[2])
    if y >= shape[1] or x >= shape[2]:
        raise OptimizeError(f"position {(y, x)} is outside {layer}'s {shape[1]} x {shape[2]} output at this image size.")
    return y, x


class Rows:
    """The rows running at an iteration, with their settings as tensors (built once per set of rows)."""

    def __init__(self, active: tuple[int, ...], targets: list[Target], settings: list[Settings],
                 shapes: Mapping[str, torch.Size], sources: Mapping[str, tuple[str, float | None] | None],
                 device: torch.device) -> None:
        chosen = [settings[b] for b in active]
        self.active, self.settings = active, chosen
        self.index = torch.tensor(active, device=device)
        self.rows = slice(None) if len(active) == len(targets) else self.index

        def per_row(values: list, dtype=torch.float32) -> torch.Tensor:
            return torch.tensor(values, dtype=dtype, device=device)

        self.constant = per_row([s.lr_policy == "constant" for s in chosen], torch.bool)
        self.all_constant = all(s.lr_policy == "constant" for s in chosen)
        self.lr, self.max_lr = per_row([s.lr for s in chosen]), per_row([s.max_lr for s in chosen])
        self.desired, self.keep = per_row([s.desired_prog for s in chosen]), per_row([1 - s.decay for s in chosen])
        self.lr4, self.keep4 = self.lr.view(-1, 1, 1, 1), self.keep.view(-1, 1, 1, 1)  # to broadcast over images
        self.norm_pcts, self.contrib_pcts = [s.norm_pct for s in chosen], [s.contrib_pct for s in chosen]
        self.groups = []  # (layer, kind, members, units, ys, xs, source): one objective per layer and kind
        key = lambda i: (targets[active[i]].layer, targets[active[i]].objective)  # noqa: E731
        for (layer, kind), members in itertools.groupby(sorted(range(len(active)), key=key), key=key):
            members = list(members)
            shape = shapes[layer]
            units = [targets[active[i]].unit for i in members]
            positions = [_position(targets[active[i]], layer, shape) for i in members] if len(shape) == 3 else []
            self.groups.append((layer, kind if len(shape) == 3 else "vector", per_row(members, torch.long),
                                per_row(units, torch.long), per_row([p[0] for p in positions], torch.long),
                                per_row([p[1] for p in positions], torch.long), sources[layer]))
        self.captured = list(dict.fromkeys(source[0] if source else layer for layer, *_, source in self.groups))
        self._batch = [torch.arange(len(members), device=device) for _, _, members, *_ in self.groups]
        self._whole = len(self.groups) == 1 and self.groups[0][2].tolist() == list(range(len(active)))

    def blur_sigmas(self, iteration: int) -> list[float]:
        return [s.blur_radius if reg.blur_due(s.blur_radius, s.blur_every, iteration) else 0.0 for s in self.settings]

    def objective(self, acts: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(sum of the objectives to differentiate, each row's objective ``(n,)``, whether its unit is its
        layer's argmax ``(n,)``), rows in ``self.active`` order."""
        n = len(self.active)
        parts = []
        for g, (layer, kind, members, units, ys, xs, source) in enumerate(self.groups):
            name = source[0] if source else layer
            act = acts[name] if len(members) == n else acts[name][members]
            # A rectified unit: ascend its input (module docstring), report and rank its own rectified value.
            shown = act if source is None else act.detach().clamp(0.0, source[1])
            batch = self._batch[g]
            if kind == "neuron":
                value = act[batch, units, ys, xs]
                reported = value.detach() if source is None else shown[batch, units, ys, xs]
                hit = _argmax_hits(shown.detach(), units, ys, xs)
            else:
                scores = act.mean(dim=(2, 3)) if kind == "channel" else act
                value = scores[batch, units]
                if source is None:
                    reported_scores, reported = scores, value.detach()
                else:
                    reported_scores = shown.mean(dim=(2, 3)) if kind == "channel" else shown
                    reported = reported_scores[batch, units]
                hit = reported_scores.argmax(dim=1) == units
            parts.append((members, value, reported, hit))
        total = parts[0][1].sum()
        for _, value, _, _ in parts[1:]:
            total = total + value.sum()
        dtype = torch.get_default_dtype()
        if self._whole:  # one group holding every row in order: its tensors are the rows'
            _, _, reported, hit = parts[0]
            return total, reported if reported.dtype == dtype else reported.to(dtype), hit
        values = torch.empty(n, dtype=dtype, device=self.index.device)
        is_max = torch.empty(n, dtype=torch.bool, device=self.index.device)
        for members, _, reported, hit in parts:
            values[members], is_max[members] = reported.detach(), hit
        return total, values, is_max


def _argmax_hits(maps: torch.Tensor, units: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """Per row of ``(n, C, H, W)`` maps: whether ``(units, ys, xs)`` is the map's first maximum.  Read in the
    tensor's own memory order (a CPU network's maps are channels-last: flattening them as ``(C, H, W)`` would
    copy them every step); the first maximum of a tie is the same element in either order for the all-equal
    maps of a dead layer, the one tie that happens in practice."""
    n, channels, height, width = maps.shape
    if not maps.is_contiguous() and maps.is_contiguous(memory_format=torch.channels_last):
        where = maps.permute(0, 2, 3, 1).reshape(n, -1).argmax(dim=1)  # (y, x, c) order, no copy
        return where == (ys * width + xs) * channels + units
    return maps.reshape(n, -1).argmax(dim=1) == (units * height + ys) * width + xs
