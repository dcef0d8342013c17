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
* **Reading** (:func:`open_run`) gives a :class:`RunView` up to its last complete snapshot:
  a half-written file (an adopted run's last one, still being saved) is left out; a deleted
  snapshot or one whose shapes differ from the manifest is left out with one line in
  :attr:`RunView.problems`.  Everything else a user can get wrong is a :class:`RunError`.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deepvis.errors import DeepvisError, one_line

FORMAT = "deepvis-run"
VERSION = 1
MANIFEST = "run.json"
SNAPSHOTS = "snapshots"
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth")
DESCRIBED = ("model", "input", "mean", "std", "resize", "title")


class RunError(DeepvisError):
    """A run folder or a snapshot that cannot be used; one line says which and why."""


def _write_atomic(path: Path, data: bytes | Mapping[str, torch.Tensor]) -> None:
    """``data`` (bytes, or tensors for a .safetensors file) into ``path`` through a temporary file and a rename."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.partial")
    if isinstance(data, bytes):
        partial.write_bytes(data)
    else:
        from safetensors.torch import save_file

        save_file(dict(data), str(partial))
    partial.replace(path)


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


def step_of(filename: str) -> int | None:
    """The step in a checkpoint's name: its last number (``epoch_3.pt`` -> 3); None without one."""
    found = re.findall(r"\d+", Path(filename).stem)
    return int(found[-1]) if found else None


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
            self._manifest = _read_manifest(self.path)
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
        steps = _adopted_files(folder)
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
            _write_atomic(self.path / "classes.txt", ("\n".join(self._described["classes"]) + "\n").encode())
        if self._probe is not None:
            from safetensors.torch import save

            _write_atomic(self.path / "probe.safetensors", save({"probe": self._probe}))
        shapes = {k: list(v.shape) for k, v in state.items()} if state is not None else {}
        return {"format": FORMAT, "version": VERSION, "description": self._described,
                "probe": self._probe is not None, "shapes": shapes, "adopted": False, "snapshots": []}

    def _save(self, manifest: dict[str, Any]) -> None:
        _write_atomic(self.path / MANIFEST, json.dumps(manifest, indent=1).encode())
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
            problem = _shape_problem({k: list(v.shape) for k, v in state.items()}, manifest["shapes"])
            if problem is not None:
                raise RunError(f"this snapshot {problem}; "
                               "a changed network needs a new run folder")
            taken = [s["step"] for s in manifest["snapshots"]]
            if taken and step <= taken[-1]:
                raise RunError(f"step {step} is not after the last snapshot's step {taken[-1]}")
            name = _snapshot_name(step)
            _write_atomic(self.path / SNAPSHOTS / name, state)
            entry = {"step": step, "file": f"{SNAPSHOTS}/{name}", "scalars": values, "time": time.time()}
            self._save({**manifest, "snapshots": [*manifest["snapshots"], entry]})


def _adopted_files(folder: Path) -> dict[int, Path]:
    found: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in WEIGHT_SUFFIXES and path.name != "probe.safetensors" and \
                not path.name.startswith("."):
            step = step_of(path.name)
            if step is not None:
                found.setdefault(step, path)
    return dict(sorted(found.items()))


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if not folder.is_dir():
        raise RunError(f"no run folder {folder}")
    if not path.is_file():
        raise RunError(f"{folder} is not a deepvis run (no {MANIFEST}); record one with deepvis.Run")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunError(f"{path} cannot be read ({one_line(exc)})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise RunError(f"{path} is not a deepvis run manifest")
    if manifest.get("version") != VERSION:
        raise RunError(f"{path} is a version {manifest.get('version')} run; this deepvis reads version {VERSION}")
    return manifest


@dataclass(frozen=True)
class Snap:
    """One complete snapshot: its step, weights file and the user's scalars."""

    step: int
    path: Path
    scalars: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RunView:
    """A run as read now, up to its last complete snapshot (module docstring)."""

    path: Path
    description: Mapping[str, Any]
    snaps: tuple[Snap, ...]
    shapes: Mapping[str, tuple[int, ...]]
    problems: tuple[str, ...] = ()
    has_probe: bool = False

    @property
    def steps(self) -> list[int]:
        return [s.step for s in self.snaps]

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def classes(self) -> list[str]:
        return list(self.description.get("classes") or [])

    def scalars(self) -> dict[str, list[float]]:
        """Each scalar's value at every step (NaN where a snapshot did not give it)."""
        names = list(dict.fromkeys(k for s in self.snaps for k in s.scalars))
        return {k: [float(s.scalars.get(k, math.nan)) for s in self.snaps] for k in names}

    def snap(self, step: int) -> Snap:
        for found in self.snaps:
            if found.step == step:
                return found
        raise RunError(f"{self.name} has no snapshot at step {step}; its steps are {_steps_text(self.steps)}")

    def state_dict(self, step: int) -> dict[str, torch.Tensor]:
        """The weights at ``step``; a :class:`RunError` when the file went away or cannot be read."""
        from deepvis.checkpoints import read_state_dict
        from deepvis.models import ModelError

        path = self.snap(step).path
        try:
            return read_state_dict(path, path.name)
        except ModelError as exc:
            raise RunError(f"{self.name} step {step}: {exc}") from None

    def load(self, step: int, device: torch.device | str | None = None):
        """The network at ``step`` as a :class:`deepvis.models.LoadedModel` (named ``<run>@<step>``)."""
        from deepvis.models import ModelError
        from deepvis.models_file import Description
        from deepvis.networks import load

        d = self.description
        classes = self.path / "classes.txt" if d.get("classes") else None
        description = Description(model=d["model"], input=d["input"], mean=d["mean"], std=d["std"],
                                  resize=d.get("resize"), title=d.get("title") or d["model"].rsplit(":", 1)[-1],
                                  classes=str(classes) if classes else None, name=f"{self.name}")
        try:
            return load(description, weights=f"step {step}", device=device, state_dict=self.state_dict(step))
        except ModelError as exc:
            raise RunError(f"{self.name} step {step}: {exc}") from None

    def probe(self, loaded=None) -> torch.Tensor:
        """The probe batch ``(N, C, H, W)`` (normalized, CPU); without one, the bundled photos as ``loaded`` sees
        them."""
        if self.has_probe:
            from safetensors.torch import load_file

            try:
                return load_file(str(self.path / "probe.safetensors"))["probe"]
            except Exception as exc:  # a damaged file: any reader error
                raise RunError(f"{self.name}'s probe batch cannot be read ({one_line(exc)})") from None
        if loaded is None:
            raise RunError(f"{self.name} has no probe batch")
        from deepvis.collection import default_collection
        from deepvis.images import model_view, open_photo, to_batch

        views = [model_view(open_photo(entry.path), loaded.spec) for entry in default_collection()]
        return to_batch(views, loaded.spec.normalization).cpu()


def _steps_text(steps: Sequence[int]) -> str:
    return ", ".join(map(str, steps[:8])) + (" …" if len(steps) > 8 else "") if steps else "none yet"


_SHAPES: dict[tuple[str, int, int], dict[str, list[int]]] = {}


class _Incomplete(Exception):
    pass


def _file_shapes(path: Path) -> dict[str, list[int]]:
    """Each tensor's shape in a weights file (a .safetensors header alone; a .pt file is read whole), cached by
    (path, mtime, size); :class:`_Incomplete` when it cannot be read (not yet whole)."""
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key not in _SHAPES:
        try:
            if path.suffix == ".safetensors":
                from safetensors import safe_open

                with safe_open(str(path), framework="pt") as handle:
                    found = {k: list(handle.get_slice(k).get_shape()) for k in handle.keys()}
            else:
                from deepvis.checkpoints import read_state_dict

                found = {k: list(v.shape) for k, v in read_state_dict(path, path.name).items()}
        except Exception as exc:  # any reader error: the file is not (yet) whole
            raise _Incomplete(one_line(exc)) from None
        _SHAPES[key] = found
    return _SHAPES[key]


def _shape_problem(found: Mapping[str, Sequence[int]], shapes: Mapping[str, Sequence[int]]) -> str | None:
    """None when ``found`` has the manifest's shapes; else what differs."""
    for key, shape in shapes.items():
        if key not in found:
            return f"has no {key}"
        if list(found[key]) != list(shape):
            return f"has {key} of shape {tuple(found[key])}, not {tuple(shape)} as the run began"
    extra = sorted(set(found) - set(shapes))
    return f"has {extra[0]}, which the run began without" if extra else None


def open_run(path: str | Path) -> RunView:
    """The run in ``path`` as it is now (module docstring); a :class:`RunError` if it is not one."""
    folder = Path(path).expanduser()
    manifest = _read_manifest(folder)
    description = manifest.get("description") or {}
    if not description.get("model"):
        raise RunError(f"{folder} has no snapshot yet")
    shapes = {k: tuple(v) for k, v in (manifest.get("shapes") or {}).items()}
    problems: list[str] = []
    if manifest.get("adopted"):
        listed = [(step, file, {}) for step, file in _adopted_files(folder).items()]
    else:
        listed = [(s["step"], folder / s["file"], s.get("scalars") or {}) for s in manifest.get("snapshots", [])]
    snaps: list[Snap] = []
    for index, (step, file, scalars) in enumerate(listed):
        try:
            found = _file_shapes(file)
        except FileNotFoundError:
            problems.append(f"step {step}: its snapshot {file.name} was deleted; left out")
            continue
        except _Incomplete as exc:
            if index < len(listed) - 1:
                problems.append(f"step {step}: {file.name} cannot be read ({exc}); left out")
            continue  # the last one: still being written, so the run is read up to the one before
        if not shapes:
            shapes = {k: tuple(v) for k, v in found.items()}
        problem = _shape_problem(found, shapes)
        if problem is not None:
            problems.append(f"step {step}: {file.name} {problem}; left out")
            continue
        snaps.append(Snap(step, file, dict(scalars)))
    return RunView(folder, description, tuple(snaps), shapes, tuple(problems), bool(manifest.get("probe")))


def find_runs(root: str | Path) -> list[Path]:
    """The run folders (holding a ``run.json``) at or below ``root``, sorted by path."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise RunError(f"no folder {root}")
    return sorted(p.parent for p in root.rglob(MANIFEST))
