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
  is judged on that value.  Each row also gives a *rank*, the value it ascends (the
  pre-activation; otherwise its objective): among images of equal objective (a unit
  still at 0, or at its ReLU6 cap of 6) the best is the one ranked higher.
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
        # Composed objectives (deepvis.targets): each row's own weight, and its other terms.
        chosen_targets = [targets[b] for b in active]
        self.composed = any(t.composed for t in chosen_targets)
        self._weights = per_row([t.weight for t in chosen_targets])
        self._terms = [(i, t.terms) for i, t in enumerate(chosen_targets) if t.terms]
        self.captured += [layer for layer in dict.fromkeys(term.layer for _, terms in self._terms for term in terms)
                          if layer not in self.captured]
        self._shapes = shapes

    def blur_sigmas(self, iteration: int) -> list[float]:
        return [s.blur_radius if reg.blur_due(s.blur_radius, s.blur_every, iteration) else 0.0 for s in self.settings]

    def objective(self, acts: Mapping[str, torch.Tensor]
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(sum of the objectives to differentiate, each row's objective ``(n,)``, whether its unit is its
        layer's argmax ``(n,)``, each row's rank ``(n,)``: module docstring), rows in ``self.active`` order."""
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
        if self.composed:
            return self._composed(acts, parts)
        total = parts[0][1].sum()
        for _, value, _, _ in parts[1:]:
            total = total + value.sum()
        dtype = torch.get_default_dtype()
        if self._whole:  # one group holding every row in order: its tensors are the rows'
            _, value, reported, hit = parts[0]
            return (total, reported if reported.dtype == dtype else reported.to(dtype), hit,
                    value.detach().to(dtype))
        values = torch.empty(n, dtype=dtype, device=self.index.device)
        ranks = torch.empty(n, dtype=dtype, device=self.index.device)
        is_max = torch.empty(n, dtype=torch.bool, device=self.index.device)
        for members, value, reported, hit in parts:
            values[members], is_max[members], ranks[members] = reported.detach(), hit, value.detach()
        return total, values, is_max, ranks


    def _composed(self, acts: Mapping[str, torch.Tensor], parts: list
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`objective` for rows with a weight or other terms: each row's value is its weight times its own
        unit's plus its terms' (module docstring of :mod:`deepvis.targets`)."""
        n, device = len(self.active), self.index.device
        values = torch.zeros(n, dtype=torch.float32, device=device)
        ranks = torch.zeros(n, dtype=torch.float32, device=device)
        is_max = torch.zeros(n, dtype=torch.bool, device=device)
        total = torch.zeros((), device=device)
        for members, value, reported, hit in parts:
            weights = self._weights[members]
            total = total + (weights * value).sum()
            values[members], is_max[members] = (weights * reported.detach()).float(), hit
            ranks[members] = (weights * value.detach()).float()
        grams: dict[str, tuple[list[int], torch.Tensor]] = {}  # per diversity layer, computed once per step
        for i, terms in self._terms:
            for term in terms:
                if term.kind == "diversity" and term.layer not in grams:
                    group = self._diversity_rows(term)
                    grams[term.layer] = (group, _grams(acts[term.layer][group]))
                value = term_value(acts[term.layer], i, term, grams.get(term.layer))
                total = total + value
                values[i] += value.detach().float()
                ranks[i] += value.detach().float()
        return total, values, is_max, ranks

    def _diversity_rows(self, term) -> list[int]:
        return [i for i, terms in self._terms if any(t.kind == "diversity" and t.layer == term.layer for t in terms)]


def _grams(act: torch.Tensor) -> torch.Tensor:
    """Each row's Gram matrix over its channels ``(n, C·C)``, scaled to length 1 (a vector layer: its outer product)."""
    features = act.flatten(2) if act.dim() == 4 else act.unsqueeze(2)
    return torch.nn.functional.normalize((features @ features.transpose(1, 2)).flatten(1), dim=1)


def term_value(act: torch.Tensor, i: int, term, grams: tuple[list[int], torch.Tensor] | None = None) -> torch.Tensor:
    """One term's weighted value for row ``i`` of a layer's activations ``(n, C, H, W)`` or ``(n, K)``;
    ``grams``: for a diversity term, the rows that share it at this layer and their :func:`_grams`."""
    if term.kind == "diversity":
        group, normalized = grams
        others = [j for j in group if j != i]
        if not others:
            return act.new_zeros(())
        mine = normalized[group.index(i)]
        similarity = torch.stack([mine @ normalized[group.index(j)].detach() for j in others]).mean()
        return -term.weight * similarity
    if term.kind == "match":  # inversion: the normalized squared distance to the photo's representation
        reference = term.reference
        return -term.weight * (act[i] - reference).pow(2).sum() / reference.pow(2).sum().clamp_min(1e-12)
    if term.kind == "unit":
        if act.dim() == 2:
            return term.weight * act[i, term.unit]
        if term.objective == "channel":
            return term.weight * act[i, term.unit].mean()
        return term.weight * act[i, term.unit, act.shape[2] // 2, act.shape[3] // 2]
    vector = torch.nn.functional.normalize(torch.tensor(term.direction, dtype=act.dtype, device=act.device), dim=0)
    if act.dim() == 2:
        return term.weight * (act[i] @ vector)
    channels = act[i].mean(dim=(1, 2)) if term.objective == "channel" else act[i, :, act.shape[2] // 2, act.shape[3] // 2]
    return term.weight * (channels @ vector)


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
