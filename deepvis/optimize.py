"""Regularized gradient ascent in image space (Yosinski et al. 2015, section 3).

(Over 300 lines: one iteration's steps, the batch's bookkeeping and the checks of a run's arguments are read
together.)

Synthesizes the image a unit "wants to see", following the semantics of the
authors' deep-visualization-toolbox optimizer.

Conventions
-----------
* **Pixel space.**  The image ``x`` is ``(B, C, H, W)`` float32 in 0-255 units
  with the model's mean subtracted (``spec.normalization.mean255``), the paper's
  space, so blur radii, percentiles, decay and the N(0, 10) start carry over.
  The start ``x0 ~ N(0, 10)`` per pixel comes from a CPU ``torch.Generator``
  seeded with ``seed`` and is the same for every row of a batch, so a row's
  settings and unit are the only difference between rows (except with a diversity
  term, :mod:`deepvis.targets`: row ``b`` then starts from ``seed + b``).  Records keep ``x``
  as float (:mod:`deepvis.records`); images are shown scaled about zero by
  default (:mod:`deepvis.display`).
* **The network** sees ``normalize(x + mean)`` = ``x / s_c`` with ``s_c`` the
  model's std of channel c in 0-255 units (128 for the embedded model, about
  58 for torchvision's ImageNet models).  On a CPU that input is handed over
  channels-last (about 15-20 % faster for the embedded model on our 2-core CPU);
  the model itself is never touched.
* θ is applied as given: ``blur_radius`` is in the run's pixels.  Table 1's rows are
  scaled to a network's input side when they are resolved (:mod:`deepvis.presets`).
* **Learning-rate rule.**  CaffeNet took raw 0-255 input, so the paper's ``lr``
  multiplies the gradient with respect to the *network's own input*:
  ``g_in = s_c * d(objective)/dx`` per channel, and the step is taken in pixel
  space, ``x += lr * g_in`` (``lr * s`` on the pixel-space gradient).  The
  contribution clip also uses ``g_in``.
* **Progress policy.**  As in the authors' code, ``lr`` is chosen so that the
  step's first-order predicted gain of the objective equals ``desired_prog``,
  capped by ``max_lr``.  The step ``x += lr * g_in`` predicts a gain of
  ``lr * <grad_x, g_in>``, so ``lr = min(max_lr, desired_prog / <grad_x, g_in>)``
  per row, where ``<grad_x, g_in> = sum(s_c * grad_x^2) = sum(g_in^2 / s_c)``.
  With CaffeNet's raw input (s = 1) this is the paper's
  ``desired_prog / ||grad||^2``; ``desired_prog / ||g_in||^2`` would instead
  predict a gain of only ``desired_prog / s`` (2/128 per step for the embedded
  model: Table 1 rows 1 and 4 then leave the image grey).
* **A rectified unit** (a ReLU/ReLU6 node) is ascended through its input, the
  pre-activation, as the authors' toolbox does (Caffe's ``backward_from_layer``
  starts below the in-place ReLU), so a unit that is 0 on the starting noise
  still moves; its recorded objective is its own rectified value.
* **Objective**, always maximized: for a conv layer one activation
  ``(c, y, x)`` (default the centre of the layer's output at the run's image
  size) or the channel's spatial mean; for a vector layer (logits) the element
  ``c`` (a class).
* **One iteration** ``it`` (0-based), :func:`_evaluate` then :func:`_ascent_step`:
  clip ``x + mean`` to [0, 255]; forward to the deepest target layer only (with
  ``jitter`` J > 0 the network sees the image rolled by ``(dy, dx)``, each drawn from
  ``-J..J`` per iteration, as in DeepDream's reference notebook, Mordvintsev et al. 2015;
  the draws come from a CPU generator seeded with ``seed``, one pair per iteration shared
  by every row and scaled to each row's J, so a batch row still equals its single run; with ``scale`` s or
  ``rotate`` r > 0 the rolled view is then zoomed about its centre by ``1 + s·u`` and turned by ``r·v``
  degrees, ``u, v`` uniform in [-1, 1] from a second seeded generator (``seed + 1``, so jitter's draws
  do not change), bilinear, uncovered corners at the mean (Lucid's standard transforms, Olah et al. 2017,
  *Feature Visualization*: scale 0.9-1.1, rotation ±10°; the transformation robustness that makes an
  image hold for another network); the objective recorded, and so the best image's choice, is that of
  the view seen: Lite0's flamingo under row 3, best 16.7 in its view, 15.7 unshifted);
  objective; ``torch.autograd.grad`` w.r.t. ``x`` (a row whose gradient is exactly
  zero, its unit fed only by rectifiers that are off, gets the redirected rectifier
  gradient instead: :mod:`deepvis.redirect`); then, unless ``it`` is the
  row's last iteration: (1) ``x += lr * g_in``, ``x *= 1 - decay``; (2) Gaussian
  blur with sigma ``blur_radius`` when ``blur_every > 0 and blur_radius > 0 and
  it % blur_every == 0``; (3) pixels whose L2 norm over channels is below the
  ``norm_pct`` percentile -> 0; (4) pixels whose ``|sum_c g_in * -x|`` is below
  the ``contrib_pct`` percentile -> 0.  Iteration ``it`` records the image it
  evaluated (its objective, whether the unit is its layer's argmax, the image's
  L2 norm and std, the lr of the step that followed); the best image is the one
  with the highest objective so far (of equals, the higher rank: :mod:`deepvis.rows`).
* **Batch.**  Each row has its own target and settings; one forward/backward
  per iteration serves all rows still running.  A row stops after its own
  ``steps`` iterations and no longer changes; the batch runs to the longest.
* θ lives in :mod:`deepvis.settings`, targets in :mod:`deepvis.targets`, batch rows in :mod:`deepvis.rows`.
* Rows of another parametrization (``Settings.param``) run in :mod:`deepvis.param_ascent`,
  one batch per parametrization, advanced snapshot by snapshot with the pixel rows.
* The model is shared: the forward pass is :func:`deepvis.activations.capture`'s
  graph module (nothing is registered on the model), gradients come from
  ``torch.autograd.grad``, so neither a finished nor an abandoned generator
  leaves anything on it.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Mapping, Sequence

import numpy as np
import torch

from deepvis import objectives, param_ascent, parametrize, redirect
from deepvis import regularizers as reg
from deepvis.activations import capture
from deepvis.graph import rectifier_input
from deepvis.images import channel_stats
from deepvis.models import LoadedModel
from deepvis.records import Recorder, RowRecord, RunRecord, Snapshot
from deepvis.rows import Rows
from deepvis.settings import MAX_SIZE, MAX_STEPS, MIN_SIZE, OptimizeError, Settings, is_int
from deepvis.targets import Target, resolve_unit

INIT_STD = 10.0


def initial_image(size: int, seed: int = 0, device: torch.device | str = "cpu", channels: int = 3) -> torch.Tensor:
    """``x0 ~ N(0, 10)``, ``(1, C, size, size)`` float32, drawn on the CPU so every device starts alike."""
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    return (torch.randn(1, channels, size, size, generator=generator) * INIT_STD).to(device)


def _broadcast(targets: Target | Sequence[Target], settings: Settings | Sequence[Settings]
               ) -> tuple[list[Target], list[Settings]]:
    target_list = [targets] if isinstance(targets, Target) else list(targets)
    settings_list = [settings] if isinstance(settings, Settings) else list(settings)
    if not target_list or not settings_list:
        raise OptimizeError("optimize needs at least one target and one setting")
    if not all(isinstance(t, Target) for t in target_list) or not all(isinstance(s, Settings) for s in settings_list):
        raise OptimizeError("targets must be Target objects and settings Settings objects")
    if len(target_list) == 1:
        target_list = target_list * len(settings_list)
    elif len(settings_list) == 1:
        settings_list = settings_list * len(target_list)
    if len(target_list) != len(settings_list):
        raise OptimizeError(f"{len(target_list)} targets and {len(settings_list)} settings: give one of either, "
                            "or as many of each")
    return target_list, settings_list


def optimize(model: LoadedModel, targets: Target | Sequence[Target], settings: Settings | Sequence[Settings],
             *, seed: int = 0, size: int | None = None, every: int = 10, photo: np.ndarray | None = None,
             magnitude: torch.Tensor | None = None) -> Generator[Snapshot, None, None]:
    """Run every row; yield :class:`Snapshot` s (see module docstring).

    Rows whose ``Settings.param`` is not ``pixels`` run under :mod:`deepvis.param_ascent` (``photo``: the
    ``(H, W, 3)`` uint8 image that ``accentuate`` rows start from; ``magnitude``: MACO's spectrum, default
    the bundled photos'), each parametrization in its own batch, in step with the pixel rows' batch."""
    target_list, settings_list = _broadcast(targets, settings)
    size = model.spec.input_size if size is None else size
    if not is_int(size) or not MIN_SIZE <= size <= MAX_SIZE:
        raise OptimizeError(f"image size must be between {MIN_SIZE} and {MAX_SIZE} pixels, not {size!r}")
    if not is_int(every) or every < 1:
        raise OptimizeError(f"every must be a positive whole number, not {every!r}")
    if not is_int(seed) or seed < 0:
        raise OptimizeError(f"seed must be a non-negative whole number, not {seed!r}")
    for target in target_list:
        resolve_unit(model, target.layer, target.unit)  # the layer exists and has this unit, or a plain error
    layers = list(dict.fromkeys([*(t.layer for t in target_list),
                                 *(term.layer for t in target_list for term in t.terms)]))
    sources = {layer: rectifier_input(model.module, layer) for layer in layers}
    try:  # one dry pass, so a size the network cannot take fails here, in plain words
        acts = capture(model.module, torch.zeros(1, model.spec.channels, size, size, device=model.device), layers)
    except RuntimeError:
        raise OptimizeError(f"A {size}-pixel image is too small for {', '.join(layers)} of "
                            f"{model.spec.title}; try a larger image size.") from None
    shapes = {layer: acts[layer].shape[1:] for layer in layers}
    objectives.check_terms(model, target_list, shapes)
    target_list = [objectives.with_references(model, t, size) for t in target_list]
    distinct = any(term.kind == "diversity" for t in target_list for term in t.terms)
    Rows(tuple(range(len(target_list))), target_list, settings_list, shapes, sources, model.device)  # bad positions
    groups = {p: [b for b, s in enumerate(settings_list) if s.param == p] for p in dict.fromkeys(
        s.param for s in settings_list)}
    parts = []
    for param, members in groups.items():
        chosen_targets, chosen_settings = [target_list[b] for b in members], [settings_list[b] for b in members]
        if param == "pixels":
            part = _optimize(model, chosen_targets, chosen_settings, shapes, sources, int(seed), int(size), int(every),
                             distinct)
        else:
            part = param_ascent.optimize_group(model, chosen_targets, chosen_settings, shapes, sources, int(seed),
                                               int(size), int(every), photo, magnitude, distinct)
        parts.append((members, part))
    return parts[0][1] if len(parts) == 1 else _in_step(parts, settings_list)


def _in_step(parts: list[tuple[list[int], Generator[Snapshot, None, None]]], settings: list[Settings]
             ) -> Generator[Snapshot, None, None]:
    """Several batches advanced snapshot by snapshot, their rows put back in the caller's order."""
    total = max(s.steps for s in settings)
    records: list[RunRecord | None] = [None] * len(parts)
    finished = [False] * len(parts)
    while not all(finished):
        for i, (_, part) in enumerate(parts):
            if not finished[i]:
                snapshot = next(part)
                records[i], finished[i] = snapshot.record, snapshot.done
        iteration = max(record.iteration for record in records)
        ordered: list[RowRecord | None] = [None] * len(settings)
        for (members, _), record in zip(parts, records):
            for b, row in zip(members, record.rows):
                ordered[b] = row
        first = records[0]
        yield Snapshot(iteration, total, RunRecord(tuple(ordered), first.seed, first.size, iteration,
                                                   sum(r.seconds for r in records)))


def _evaluate(model: LoadedModel, x: torch.Tensor, rows: Rows, std: torch.Tensor,
              shifts: list[View] | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward to the deepest target layer and back: (objectives, is-argmax, ranks, d objective / d x), row by
    row (ranks: :mod:`deepvis.rows`); ``shifts``: each row's jitter, or None."""
    xa = x.detach().requires_grad_(True)
    with torch.enable_grad():
        inputs = _shifted(xa, shifts) / std  # = normalize(xa + mean), the "network" convention, in one op
        if inputs.device.type == "cpu":  # channels-last is faster on a CPU (module docstring)
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        total, values, is_max, ranks = rows.objective(capture(model.module, inputs, rows.captured, keep_graph=True,
                                                             folded=True))
        (grad,) = torch.autograd.grad(total, xa)
    return values, is_max, ranks, grad


View = tuple[int, int, float, float]  # one row's view this iteration: (dy, dx) roll, zoom, degrees
SAME: View = (0, 0, 1.0, 0.0)


def _shifted(x: torch.Tensor, shifts: list[View] | None) -> torch.Tensor:
    """Each row of ``x`` as the network sees it: rolled by its ``(dy, dx)`` over (H, W) (the jitter), then
    zoomed and turned about its centre; autograd takes the gradient back through both."""
    if not shifts or all(view == SAME for view in shifts):
        return x
    if len(set(shifts)) == 1:
        return _view(x, shifts[0])
    return torch.cat([_view(x[i:i + 1], view) for i, view in enumerate(shifts)])


def _view(x: torch.Tensor, view: View) -> torch.Tensor:
    dy, dx, zoom, degrees = view
    x = torch.roll(x, (dy, dx), dims=(2, 3)) if dy or dx else x
    return parametrize.rotate(x, degrees, fill=0.0, zoom=zoom)  # fill 0: the mean, in pixel space


def _views(generator: torch.Generator | None, turning: torch.Generator | None, settings: list[Settings],
            active: tuple[int, ...]) -> list[View] | None:
    """This iteration's view per active row: one uniform pair for the roll, scaled to each row's J, and one for
    zoom and turn, scaled to each row's ``scale`` and ``rotate`` (module docstring)."""
    if generator is None and turning is None:
        return None
    u = torch.rand(2, generator=generator).tolist() if generator is not None else [0.5, 0.5]
    v = (2 * torch.rand(2, generator=turning) - 1).tolist() if turning is not None else [0.0, 0.0]
    views = []
    for b in active:
        j = settings[b].jitter
        views.append((int(u[0] * (2 * j + 1)) - j, int(u[1] * (2 * j + 1)) - j,
                      1 + v[0] * settings[b].scale, v[1] * settings[b].rotate))
    return views


def _unstick(model: LoadedModel, xa: torch.Tensor, grad: torch.Tensor, active: tuple[int, ...], plans: dict,
             targets: list[Target], settings: list[Settings], shapes: Mapping[str, torch.Size],
             sources: Mapping[str, tuple[str, float | None] | None], std: torch.Tensor,
             shifts: list[View] | None = None) -> torch.Tensor:
    """``grad`` with each row whose gradient is exactly zero given the redirected one (:mod:`deepvis.redirect`)."""
    where = [i for i, s in enumerate((grad.flatten(1).abs().amax(dim=1) == 0).tolist()) if s]
    if not where:
        return grad
    rows = tuple(active[i] for i in where)
    if rows not in plans:
        plans[rows] = Rows(rows, targets, settings, shapes, sources, xa.device)
    with redirect.redirected():
        *_, again = _evaluate(model, xa[where], plans[rows], std, None if shifts is None else [shifts[i] for i in where])
    grad = grad.clone()
    grad[where] = again
    return grad


def _ascent_step(x: torch.Tensor, grad: torch.Tensor, g_in: torch.Tensor, rows: Rows, it: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps (1)-(4) of the module docstring for every row in ``rows``; returns the new x and each row's lr."""
    if rows.all_constant:
        lr, lr4 = rows.lr, rows.lr4
    else:
        progress_lr = torch.minimum(rows.max_lr, rows.desired / (grad * g_in).flatten(1).sum(dim=1))
        lr = torch.where(rows.constant, rows.lr, progress_lr)
        lr4 = lr.view(-1, 1, 1, 1)
    x = (lr4 * g_in).add_(x).mul_(rows.keep4)  # (1) step, then L2 decay: (x + lr·g_in)·(1 − decay)
    sigmas = rows.blur_sigmas(it)
    if any(sigmas):
        x = reg.gaussian_blur(x, sigmas)  # (2)
    if any(rows.norm_pcts):
        x = reg.clip_small_norm(x, rows.norm_pcts)  # (3)
    if any(rows.contrib_pcts):
        x = reg.clip_small_contribution(x, g_in, rows.contrib_pcts)  # (4)
    return x, lr


def _optimize(model: LoadedModel, targets: list[Target], settings: list[Settings], shapes: Mapping[str, torch.Size],
              sources: Mapping[str, tuple[str, float | None] | None], seed: int, size: int,
              every: int, distinct: bool = False) -> Generator[Snapshot, None, None]:
    started, seconds = time.perf_counter(), 0.0
    device = model.device
    mean, std = channel_stats(model.spec.normalization, device)
    steps = [s.steps for s in settings]
    total = max(steps)
    if distinct:  # a diverse batch: row b starts from seed + b (from one start, diversity has no gradient)
        x = torch.cat([initial_image(size, seed + b, device, model.spec.channels) for b in range(len(targets))])
    else:
        x = initial_image(size, seed, device, model.spec.channels).expand(len(targets), -1, -1, -1).clone()
    history = Recorder(x, total)
    plans: dict[tuple[int, ...], Rows] = {}
    jitter_stream = torch.Generator(device="cpu").manual_seed(int(seed)) if any(s.jitter for s in settings) else None
    turn_stream = (torch.Generator(device="cpu").manual_seed(int(seed) + 1)
                   if any(s.scale or s.rotate for s in settings) else None)
    for it in range(total):
        active = tuple(b for b in range(len(targets)) if it < steps[b])
        if active not in plans:
            plans[active] = Rows(active, targets, settings, shapes, sources, device)
        rows = plans[active]
        # Clipped through 0-255 and back, not x.clamp(-mean, 255 - mean): the round trip puts every pixel on the
        # float grid of its 0-255 value, so a batch column stays equal to its single run (the kernels of a
        # batch of 3 and of 1 differ by ~1e-7, which the clamp alone would let grow to 1e-3 in 5 steps).
        xa = (x if isinstance(rows.rows, slice) else x[rows.rows]) + mean
        xa = xa.clamp_(0, 255).sub_(mean)  # (x + mean).clamp(0, 255) - mean, in place on the sum
        x = _assign(x, rows, xa)
        shifts = _views(jitter_stream, turn_stream, settings, active)
        values, is_max, ranks, grad = _evaluate(model, xa, rows, std, shifts)
        grad = _unstick(model, xa, grad, active, plans, targets, settings, shapes, sources, std, shifts)
        history.record(it, rows.rows, xa, values, is_max, ranks)
        snapshot_due = it % every == 0 or it == total - 1
        shown = x.clone() if snapshot_due else None  # each row's image at this iteration (x changes in place)

        stepped, lr = _ascent_step(xa, grad, grad * std, rows, it)
        moving = [it < steps[b] - 1 for b in active]
        if all(moving):
            x = _assign(x, rows, stepped)
        else:  # a row's last iteration evaluates its image and does not change it
            moves = torch.tensor(moving, device=device)
            x = _assign(x, rows, torch.where(moves.view(-1, 1, 1, 1), stepped, xa))
            lr = torch.where(moves, lr, 0.0)
        history.record_lr(it, rows.rows, lr)

        if snapshot_due:
            seconds += time.perf_counter() - started
            yield Snapshot(it, total, history.run_record(it, targets, settings, shown, mean, seed, seconds))
            started = time.perf_counter()


def _assign(x: torch.Tensor, rows: Rows, values: torch.Tensor) -> torch.Tensor:
    """``x`` with ``rows`` replaced by ``values`` (no copy when every row is running)."""
    if isinstance(rows.rows, slice):
        return values
    x[rows.rows] = values
    return x


def run(model: LoadedModel, targets: Target | Sequence[Target], settings: Settings | Sequence[Settings],
        *, seed: int = 0, size: int | None = None, photo: np.ndarray | None = None,
        magnitude: torch.Tensor | None = None) -> RunRecord:
    """Run :func:`optimize` to the end and return its final record."""
    last = None
    for last in optimize(model, targets, settings, seed=seed, size=size, every=MAX_STEPS, photo=photo,
                         magnitude=magnitude):
        pass
    assert last is not None
    return last.record
