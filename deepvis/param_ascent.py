"""Optimization under the parametrizations that came after the paper (:mod:`deepvis.parametrize`).

Conventions
-----------
* Rows of one parametrization (``Settings.param``: ``fourier``, ``maco`` or
  ``accentuate``) run in one batch; :func:`deepvis.optimize.optimize` sends each
  parametrization's rows here and the paper's pixel rows to its own engine.
* Each row has its own parameters (a spectrum or a phase) and its own step size
  (``adam_lr``): Adam for ``fourier`` (Olah et al. 2017; Lucid and Lucent use
  Adam 0.05), NAdam for ``maco`` and ``accentuate`` (the reference code of Fel et al.
  2023 and Hamblin et al. 2024).  Every row of a batch starts from the same draw
  (seeded on the CPU), as the pixel engine's rows do.
* **One iteration**: each running row's image ``rgb`` in [0, 1] ``(n, C, S, S)``;
  the network sees its transforms (``fourier``: Lucid's jitter/scale/rotate, one
  view; ``maco``/``accentuate``: ``crops`` random crops plus noise), in the
  network's input units ``(255·rgb − mean)/std``; each row's activations are
  averaged over its views, so its objective is the mean over its views (the same
  objectives as the pixel engine, :class:`deepvis.rows.Rows`).  Loss = −objective,
  plus for ``accentuate`` ``closeness · mean((x − x_photo)²)`` with ``x`` in the
  network's input units (Hamblin et al.'s penalty; the photo is the start image as
  the parametrization draws it).  A row's last iteration evaluates and does not step.
* What is recorded is the untransformed image in the optimizer's pixel space
  (``255·rgb − mean``, :mod:`deepvis.optimize`) and the objective of its views; the
  "lr" recorded is the optimizer's step size.
* ``photo`` for ``accentuate`` is ``(H, W, 3)`` uint8 RGB; the run starts from what the network sees of it
  at the run's size (:func:`deepvis.images.model_view`).  MACO's magnitude is :func:`bundled_magnitude` (the
  default collection's photos, :mod:`deepvis.collection`) unless one is given
  (:func:`collection_magnitude` makes one from a folder of photos).
* The model is only read: forwards through :func:`deepvis.activations.capture`,
  gradients by ``torch.autograd.grad``.  A row whose gradient w.r.t. its parameters is
  exactly zero is given the redirected one (:mod:`deepvis.redirect`) from a second pass of
  those rows alone, with the iteration's random stream replayed: the same views for
  ``fourier`` (one transform for the batch), crops drawn again for ``maco`` and
  ``accentuate`` (theirs are drawn batch-wide); every other row moves exactly as before.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Generator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deepvis import parametrize as pz
from deepvis import redirect
from deepvis.activations import capture
from deepvis.images import channel_stats, model_view
from deepvis.models import LoadedModel, ModelSpec
from deepvis.rows import Rows
from deepvis.records import Recorder, Snapshot
from deepvis.settings import OptimizeError, Settings
from deepvis.targets import Target

FOURIER_DECAY, ACCENT_DECAY = 1.0, 1.5


@functools.lru_cache(maxsize=8)
def bundled_magnitude(size: int, channels: int = 3) -> torch.Tensor:
    """MACO's magnitude template at ``size`` from the default collection's photos (computed once per size)."""
    return collection_magnitude(None, size, channels)[0]


def collection_magnitude(source: str | None, size: int, channels: int = 3) -> tuple[torch.Tensor, list[str]]:
    """MACO's magnitude template from a collection's photos (:func:`deepvis.collection.entries`: ``None`` is the
    default one, else a folder), and the files it skipped because they could not be read as images."""
    from deepvis.collection import entries
    from deepvis.images import ImageDecodeError, decode_image

    photos, skipped = [], []
    for entry in entries(source):
        try:
            photos.append(np.asarray(decode_image(Path(entry.path).read_bytes())))
        except (OSError, ImageDecodeError):
            skipped.append(entry.path)
    if not photos:
        raise OptimizeError(f"No readable photo in {source or 'the default collection'} for MACO's spectrum.")
    return pz.magnitude_spectrum(photos, size, channels), skipped


def photo_rgb(photo: np.ndarray, spec: ModelSpec, size: int) -> torch.Tensor:
    """``(1, C, size, size)`` in [0, 1]: what the network sees of ``photo`` ``(H, W, 3)`` uint8 at ``size``
    (:func:`deepvis.images.model_view`, the centre crop the Activations page shows; gray for one channel)."""
    array = np.asarray(photo)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise OptimizeError("the photo to accentuate must be an (H, W, 3) uint8 RGB image")
    view = model_view(Image.fromarray(array), spec, size)
    return torch.from_numpy(view[..., :spec.channels].astype(np.float32) / 255.0).permute(2, 0, 1)[None].contiguous()


class _Images:
    """The rows' parameters (one tensor per row) and how they become images ``(n, C, S, S)`` in [0, 1]."""

    def __init__(self, param: str, rows: int, size: int, seed: int, device: torch.device,
                 photo: np.ndarray | None, magnitude: torch.Tensor | None, spec: ModelSpec,
                 distinct: bool = False) -> None:
        self.param, self.size, self.network_side = param, (size, size), spec.input_size
        channels = spec.channels
        generator = torch.Generator(device="cpu").manual_seed(seed)
        if param == "maco":
            magnitude = bundled_magnitude(size, channels) if magnitude is None else magnitude
            if tuple(magnitude.shape) != (channels, size, size // 2 + 1):
                raise OptimizeError(f"MACO's magnitude spectrum is {tuple(magnitude.shape)}, not "
                                    f"({channels}, {size}, {size // 2 + 1}) for a {size}-pixel image")
            self.magnitude = magnitude.to(device, torch.float32)
            start = torch.randn(rows if distinct else 1, channels, size, size // 2 + 1, generator=generator)
        else:
            decay = ACCENT_DECAY if param == "accentuate" else FOURIER_DECAY
            self.scale = pz.spectrum_scale(size, size, decay).to(device)
            if param == "accentuate":
                if photo is None:
                    raise OptimizeError("Feature accentuation starts from a photo: give one (--from-photo IMAGE).")
                start = pz.image_to_fourier(photo_rgb(photo, spec, size).to(device), self.scale).cpu()
            else:
                start = pz.random_spectrum(rows if distinct else 1, size, size, generator, channels)
        starts = list(start.split(1)) if start.shape[0] == rows and distinct else [start] * rows
        self.tensors = [s.to(device).clone().requires_grad_(True) for s in starts]

    def rgb(self, rows: Sequence[int]) -> torch.Tensor:
        stacked = torch.cat([self.tensors[b] for b in rows])
        if self.param == "maco":
            return pz.maco_to_image(stacked, self.magnitude, self.size)
        return pz.fourier_to_image(stacked, self.scale, self.size)


def _views(rgb: torch.Tensor, chosen: list[Settings], generator: torch.Generator,
           network_side: int = 224) -> tuple[torch.Tensor, torch.Tensor]:
    """What the network sees of each row ``(m, C, S, S)`` in [0, 1], and which row each view belongs to."""
    if chosen[0].param == "fourier":
        return pz.lucid_transforms(rgb, generator, network_side), torch.arange(rgb.shape[0], device=rgb.device)
    counts = [s.crops for s in chosen]
    owner = torch.repeat_interleave(torch.arange(len(chosen)), torch.tensor(counts)).to(rgb.device)
    return pz.random_crops(rgb, counts, generator), owner


def _per_row(acts: Mapping[str, torch.Tensor], owner: torch.Tensor, rows: int) -> dict[str, torch.Tensor]:
    """Each row's activations averaged over its views."""
    if owner.numel() == rows:
        return dict(acts)
    counts = torch.bincount(owner, minlength=rows).to(torch.float32)
    out = {}
    for name, act in acts.items():
        summed = torch.zeros((rows, *act.shape[1:]), dtype=act.dtype, device=act.device).index_add(0, owner, act)
        out[name] = summed / counts.view(-1, *([1] * (act.dim() - 1)))
    return out


def optimize_group(model: LoadedModel, targets: list[Target], settings: list[Settings],
                   shapes: Mapping[str, torch.Size], sources: Mapping[str, tuple[str, float | None] | None],
                   seed: int, size: int, every: int, photo: np.ndarray | None = None,
                   magnitude: torch.Tensor | None = None, distinct: bool = False) -> Generator[Snapshot, None, None]:
    """Rows that share one parametrization (module docstring); yields :class:`Snapshot` s like the pixel engine.
    The parameters are set up here, before the generator starts, so a missing photo or a wrong magnitude
    spectrum is an error at the call.  ``distinct``: each row starts from its own draw (a diverse batch)."""
    images = _Images(settings[0].param, len(targets), size, seed, model.device, photo, magnitude, model.spec,
                     distinct)
    return _run(model, targets, settings, shapes, sources, seed, size, every, images)


def _loss(model: LoadedModel, images: _Images, active: Sequence[int], rows: Rows, chosen: list[Settings],
          generator: torch.Generator, start: torch.Tensor, closeness: torch.Tensor, mean: torch.Tensor,
          std: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """One iteration's forward for the rows ``active`` (module docstring): their images ``rgb``, the loss to
    minimize, and each row's values, argmax flags and ranks (:meth:`deepvis.rows.Rows.objective`)."""
    device = images.tensors[0].device
    rgb = images.rgb(active)
    views, owner = _views(rgb, chosen, generator, images.network_side)
    inputs = (views * 255 - mean) / std
    if images.param != "fourier":
        amount = torch.tensor([s.noise for s in chosen], device=device)[owner].view(-1, 1, 1, 1)
        inputs = inputs + pz.crop_noise(inputs.shape, 1.0, generator).to(device) * amount
    if device.type == "cpu":
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    acts = _per_row(capture(model.module, inputs, rows.captured, keep_graph=True, folded=True), owner, len(active))
    objective, values, is_max, ranks = rows.objective(acts)
    loss = -objective
    weights = closeness[list(active)]
    if bool((weights > 0).any()):
        distance = (((rgb - start[list(active)]) * 255 / std) ** 2).flatten(1).mean(dim=1)
        loss = loss + (weights * distance).sum()
    return rgb, loss, values, is_max, ranks


def _run(model: LoadedModel, targets: list[Target], settings: list[Settings], shapes: Mapping[str, torch.Size],
         sources: Mapping[str, tuple[str, float | None] | None], seed: int, size: int, every: int,
         images: _Images) -> Generator[Snapshot, None, None]:
    started, seconds = time.perf_counter(), 0.0
    device = model.device
    mean, std = channel_stats(model.spec.normalization, device)
    kind = torch.optim.Adam if images.param == "fourier" else torch.optim.NAdam
    optimizer = kind([{"params": [t], "lr": s.adam_lr} for t, s in zip(images.tensors, settings)])
    generator = torch.Generator(device="cpu").manual_seed(seed + 1)  # the transforms' own stream
    steps = [s.steps for s in settings]
    total = max(steps)
    everyone = list(range(len(targets)))
    with torch.no_grad():
        start = images.rgb(everyone)
    x = start * 255 - mean
    history = Recorder(x, total)
    closeness = torch.tensor([s.closeness if s.param == "accentuate" else 0.0 for s in settings], device=device)
    plans: dict[tuple[int, ...], Rows] = {}
    for it in range(total):
        active = tuple(b for b in everyone if it < steps[b])
        if active not in plans:
            plans[active] = Rows(active, targets, settings, shapes, sources, device)
        rows = plans[active]
        chosen = [settings[b] for b in active]
        moving = [b for b in active if it < steps[b] - 1]
        drawn = generator.get_state()  # this iteration's random stream, replayed for a stuck row
        with torch.enable_grad():
            rgb, loss, values, is_max, ranks = _loss(model, images, active, rows, chosen, generator, start, closeness,
                                                     mean, std)
            grads = list(torch.autograd.grad(loss, [images.tensors[b] for b in moving])) if moving else []
        silent = torch.stack([grad.abs().amax() for grad in grads]).eq(0).tolist() if grads else []
        stuck = [b for b, none in zip(moving, silent) if none]
        if stuck:  # no ordinary gradient at all: the redirected one (deepvis.redirect)
            key = tuple(stuck)
            if key not in plans:
                plans[key] = Rows(key, targets, settings, shapes, sources, device)
            replay = torch.Generator(device="cpu")
            replay.set_state(drawn)
            with torch.enable_grad(), redirect.redirected():
                again = _loss(model, images, key, plans[key], [settings[b] for b in key], replay, start, closeness,
                              mean, std)[1]
                # redirect's rule reads d objective / d output: differentiate -loss, then turn it back
                fresh = torch.autograd.grad(-again, [images.tensors[b] for b in key])
            for b, grad in zip(key, fresh):
                grads[moving.index(b)] = -grad
        evaluated = rgb.detach() * 255 - mean
        x[list(active)] = evaluated
        history.record(it, rows.rows, evaluated, values, is_max, ranks)
        lrs = torch.tensor([settings[b].adam_lr if b in moving else 0.0 for b in active], device=device)
        history.record_lr(it, rows.rows, lrs)
        for tensor in images.tensors:
            tensor.grad = None
        for b, grad in zip(moving, grads):
            images.tensors[b].grad = grad
        if moving:
            optimizer.step()
        if it % every == 0 or it == total - 1:
            seconds += time.perf_counter() - started
            yield Snapshot(it, total, history.run_record(it, targets, settings, x.clone(), mean, seed, seconds))
            started = time.perf_counter()
