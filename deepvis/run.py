"""A training run on disk: snapshots of a network's weights as it learns, recorded from a training loop.

Conventions
-----------
* **Recording** adds two lines to a loop and changes nothing else::

      run = deepvis.Run("runs/digits", model="my_net.py:Net", input="1x28x28", mean=[0.5], std=[0.5],
                        classes=names, probe=images)
      run.snapshot(model, step=epoch, loss=loss, accuracy=accuracy)

  ``model`` follows the naming rule (:mod:`deepvis.networks`; a relative file is made absolute
  now); left out, it is the snapshot's own class, ``file.py:Class``.  ``probe`` is a small fixed
  batch ``(N, C, H, W)`` of the network's inputs as the loop feeds them (already normalized);
  left out, the bundled photos as the network sees them.  Keyword scalars are plain numbers.
* **A run folder** holds ``run.json`` (the manifest: format, the description, the tensors'
  shapes, and one entry per snapshot: step, file, scalars, time), ``probe.safetensors``,
  ``classes.txt`` and ``snapshots/step-00000012.safetensors`` (a state dict, CPU tensors).
  What the timeline computes goes under ``measures/`` and ``pictures/`` (:mod:`deepvis.timeline`).
* **Atomic writes.**  A snapshot's weights are written to a temporary file and renamed, then the
  manifest is replaced the same way: a reader sees a run before or after a snapshot, never
  between, and an interrupted run keeps every finished snapshot.  Opening an existing folder
  with the same description goes on appending (a resumed training); steps must increase.
* **Adopted runs** (:meth:`Run.adopt`): a folder of state dicts a training script saved itself,
  named by step (the last number in the name: ``epoch_3.pt``, ``ckpt-000120.safetensors``).
  Its manifest lists no snapshots; the files are read afresh each time, so new ones appear.
* **Reading** is :mod:`deepvis.run_files` (:func:`open_run`, :class:`RunView`, re-exported here).
"""

from __future__ import annotations

import inspect
import json
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deepvis.run_files import (FORMAT, MANIFEST, SNAPSHOTS, VERSION, WEIGHT_SUFFIXES, RunError, RunView, Snap,
                               adopted_files, find_runs, open_run, read_manifest, shape_problem, step_of,
                               write_atomic)

__all__ = ["Run", "RunError", "RunView", "Snap", "open_run", "find_runs", "step_of", "MANIFEST"]

DESCRIBED = ("model", "input", "mean", "std", "resize", "title")


def _absolute_model(reference: str) -> str:
    where, colon, attribute = reference.rpartition(":")
    if colon and where.endswith(".py") and where != "timm":
        return f"{Path(where).expanduser().resolve()}:{attribute}"
    return reference


def _own_class(module: nn.Module) -> str:
    cls = type(module)
    source = inspect.getsourcefile(cls)
    if cls.__module__ not in ("__main__",) and not cls.__module__.startswith("deepvis_user_"):
        return f"{cls.__module__}:{cls.__qualname__}"
    if source is None:
        raise RunError(f"cannot tell which file defines {cls.__qualname__}; name it: Run(..., model='file.py:NAME')")
    return f"{Path(source).resolve()}:{cls.__qualname__}"


def _state_of(model: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    model = getattr(model, "_orig_mod", model)  # torch.compile's wrapper
    model = getattr(model, "module", model) if isinstance(model, nn.DataParallel) else model
    state = model.state_dict() if isinstance(model, nn.Module) else model
    if not isinstance(state, Mapping):
        raise RunError(f"a snapshot is of an nn.Module or a state dict, not {type(model).__name__}")
    # on the CPU, written before training goes on; copied only where storage is shared (safetensors refuses it)
    out, seen = {}, set()
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            value = value.detach().to("cpu").contiguous()
            where = (value.untyped_storage().data_ptr(), value.untyped_storage().nbytes())
            out[key] = value.clone() if where in seen else value
            seen.add(where)
    return out


def _scalar(name: str, value: Any) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RunError(f"scalar {name} is a number, not {type(value).__name__}")
    return float(value)


def _snapshot_name(step: int) -> str:
    return f"step-{step:08d}.safetensors"


class Run:
    """A run being recorded (module docstring): :meth:`snapshot` after each epoch or every few steps."""

    def __init__(self, path: str | Path, model: str | None = None, *, input: str, mean: Sequence[float] | float,
                 std: Sequence[float] | float, classes: Sequence[str] | str | Path | None = None,
                 probe: torch.Tensor | None = None, resize: int | None = None, title: str | None = None) -> None:
        from deepvis.checkpoints import read_classes
        from deepvis.models_file import Description
        from deepvis.networks import parse_input

        self.path = Path(path)
        channels, size = parse_input(input)
        description = Description(model=_absolute_model(model) if model else "", input=f"{channels}x{size}x{size}",
                                  mean=mean, std=std, resize=resize, title=title)
        for what in ("mean", "std"):
            if len(getattr(description, what)) != channels:
                raise RunError(f"{what} has one value per input channel ({channels}), not "
                               f"{len(getattr(description, what))}")
        if isinstance(classes, (str, Path)):
            names = list(read_classes(Path(classes)))
        else:
            names = [str(c) for c in classes] if classes is not None else []
        self._described = {k: getattr(description, k) for k in DESCRIBED}
        self._described.update(mean=list(description.mean), std=list(description.std), classes=names)
        if probe is not None:
            if not isinstance(probe, torch.Tensor) or probe.dim() != 4 or tuple(probe.shape[1:]) != (
                    channels, size, size):
                shape = tuple(probe.shape) if isinstance(probe, torch.Tensor) else type(probe).__name__
                raise RunError(f"probe is a batch (N, {channels}, {size}, {size}) of normalized inputs, not {shape}")
        self._probe = None if probe is None else probe.detach().to("cpu", torch.float32, copy=True).contiguous()
        self._lock = threading.Lock()
        self._manifest: dict[str, Any] | None = None
        existing = self.path / MANIFEST
        if existing.exists():
            self._manifest = read_manifest(self.path)
            old = {k: self._manifest["description"].get(k) for k in self._described}
            if self._described["model"] == "":
                self._described["model"] = old["model"]
            if old != self._described:
                changed = next(k for k in self._described if old[k] != self._described[k])
                raise RunError(f"{self.path} is a run of another network ({changed} was {old[changed]!r}); "
                               "record into a new folder")

    @classmethod
    def adopt(cls, folder: str | Path, model: str, *, input: str, mean: Sequence[float] | float,
              std: Sequence[float] | float, classes: Sequence[str] | str | Path | None = None,
              probe: torch.Tensor | None = None, resize: int | None = None, title: str | None = None) -> RunView:
        """A run made of the state dicts a script saved into ``folder`` itself, named by step; its manifest is
        written into ``folder``.  Files saved later appear on the next read."""
        folder = Path(folder)
        if not folder.is_dir():
            raise RunError(f"no folder {folder}")
        steps = adopted_files(folder)
        if not steps:
            raise RunError(f"{folder} holds no state dicts named by step ({', '.join(WEIGHT_SUFFIXES)}, e.g. "
                           "epoch_3.pt)")
        run = cls(folder, model, input=input, mean=mean, std=std, classes=classes, probe=probe, resize=resize,
                  title=title)
        with run._lock:
            manifest = run._manifest or run._begin(None)
            manifest["adopted"] = True
            run._save(manifest)
        return open_run(folder)

    def _begin(self, state: Mapping[str, torch.Tensor] | None) -> dict[str, Any]:
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / SNAPSHOTS).mkdir(exist_ok=True)
        if self._described["classes"]:
            write_atomic(self.path / "classes.txt", ("\n".join(self._described["classes"]) + "\n").encode())
        if self._probe is not None:
            from safetensors.torch import save

            write_atomic(self.path / "probe.safetensors", save({"probe": self._probe}))
        shapes = {k: list(v.shape) for k, v in state.items()} if state is not None else {}
        return {"format": FORMAT, "version": VERSION, "description": self._described,
                "probe": self._probe is not None, "shapes": shapes, "adopted": False, "snapshots": []}

    def _save(self, manifest: dict[str, Any]) -> None:
        write_atomic(self.path / MANIFEST, json.dumps(manifest, indent=1).encode())
        self._manifest = manifest

    def snapshot(self, model: nn.Module | Mapping[str, torch.Tensor], step: int, **scalars: Any) -> None:
        """Keep ``model``'s weights at ``step`` (increasing) with the given scalars (``loss=…``, ``accuracy=…``)."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise RunError(f"step is a whole number from 0, not {step!r}")
        values = {name: _scalar(name, value) for name, value in scalars.items()}
        state = _state_of(model)
        with self._lock:
            if self._described["model"] == "":
                if not isinstance(model, nn.Module):
                    raise RunError("name the network (Run(..., model='file.py:NAME')) to snapshot a state dict")
                self._described["model"] = _own_class(getattr(model, "_orig_mod", model))
            manifest = self._manifest or self._begin(state)
            if manifest.get("adopted"):
                raise RunError(f"{self.path} is an adopted folder of checkpoints; save them there yourself")
            if not manifest["shapes"]:
                manifest["shapes"] = {k: list(v.shape) for k, v in state.items()}
            problem = shape_problem({k: list(v.shape) for k, v in state.items()}, manifest["shapes"])
            if problem is not None:
                raise RunError(f"this snapshot {problem}; "
                               "a changed network needs a new run folder")
            taken = [s["step"] for s in manifest["snapshots"]]
            if taken and step <= taken[-1]:
                raise RunError(f"step {step} is not after the last snapshot's step {taken[-1]}")
            name = _snapshot_name(step)
            write_atomic(self.path / SNAPSHOTS / name, state)
            entry = {"step": step, "file": f"{SNAPSHOTS}/{name}", "scalars": values, "time": time.time()}
            self._save({**manifest, "snapshots": [*manifest["snapshots"], entry]})
