"""Reading a training run from disk (what :mod:`deepvis.run` records), up to its last complete snapshot.

Conventions
-----------
* A run folder holds ``run.json`` (format ``deepvis-run`` version 1: the description, the tensors'
  shapes, one entry per snapshot), ``probe.safetensors``, ``classes.txt`` and
  ``snapshots/step-00000012.safetensors``; an adopted folder holds the user's own checkpoints,
  named by step, and a manifest listing none (they are listed afresh on every read).
* :func:`open_run` gives a :class:`RunView` up to the last complete snapshot: a half-written last
  file is left out silently; a deleted snapshot, an unreadable one before the last, or one whose
  shapes differ from the manifest is left out with one line in :attr:`RunView.problems`.
  Anything else wrong with a folder is a :class:`RunError`.
* Files are written through a temporary file and a rename (:func:`write_atomic`), so a reader
  never sees half a file under its final name.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from deepvis.errors import DeepvisError, one_line

FORMAT = "deepvis-run"
VERSION = 1
MANIFEST = "run.json"
SNAPSHOTS = "snapshots"
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth")


class RunError(DeepvisError):
    """A run folder or a snapshot that cannot be used; one line says which and why."""


def write_atomic(path: Path, data: bytes | Mapping[str, torch.Tensor]) -> None:
    """``data`` (bytes, or tensors for a .safetensors file) into ``path`` through a temporary file and a rename."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.partial")
    if isinstance(data, bytes):
        partial.write_bytes(data)
    else:
        from safetensors.torch import save_file

        save_file(dict(data), str(partial))
    partial.replace(path)


def step_of(filename: str) -> int | None:
    """The step in a checkpoint's name: its last number (``epoch_3.pt`` -> 3); None without one."""
    found = re.findall(r"\d+", Path(filename).stem)
    return int(found[-1]) if found else None


def adopted_files(folder: Path) -> dict[int, Path]:
    found: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in WEIGHT_SUFFIXES and path.name != "probe.safetensors" and \
                not path.name.startswith("."):
            step = step_of(path.name)
            if step is not None:
                found.setdefault(step, path)
    return dict(sorted(found.items()))


def read_manifest(folder: Path) -> dict[str, Any]:
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


def shape_problem(found: Mapping[str, Sequence[int]], shapes: Mapping[str, Sequence[int]]) -> str | None:
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
    manifest = read_manifest(folder)
    description = manifest.get("description") or {}
    if not description.get("model"):
        raise RunError(f"{folder} has no snapshot yet")
    shapes = {k: tuple(v) for k, v in (manifest.get("shapes") or {}).items()}
    problems: list[str] = []
    if manifest.get("adopted"):
        listed = [(step, file, {}) for step, file in adopted_files(folder).items()]
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
        problem = shape_problem(found, shapes)
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
