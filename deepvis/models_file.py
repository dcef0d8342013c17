"""What describes a network of one's own, and the models file (TOML) that names several.

Conventions
-----------
* **One table.**  Each field of :class:`Description` carries its label, help text and
  CLI flag (``--NAME``) in its metadata (:class:`Describe`,
  :data:`DESCRIBE`), as :mod:`deepvis.settings` does for θ: the CLI options, the models
  file's allowed fields and the help text all come from it.
* A models file holds ``[models.NAME]`` tables, one per network; ``NAME`` is what
  ``--model`` and the app's sidebar use.  Relative paths in it (``model = "nets/a.py:Net"``,
  ``weights``, ``classes``) are relative to the file; on the command line, to the
  working directory.  An unknown field is refused, naming the allowed ones.
* Files are named by ``--models FILE`` (the CLI, ``streamlit run streamlit_app.py --
  --models FILE``), held by :func:`register`, and by the ``DEEPVIS_MODELS`` environment
  variable (paths separated by ``os.pathsep``), read afresh on each :func:`user_networks`.
* A name cannot be a registry model's name nor be defined twice.
* Building a described network is :mod:`deepvis.networks`.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
import re
import tomllib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepvis.models import REGISTRY, ModelError

ENV = "DEEPVIS_MODELS"
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class ModelsFileError(ModelError):
    """A models file or a description cannot be read; the message says which and why."""


@dataclass(frozen=True)
class Describe:
    """One row of the description table: a :class:`Description` field's label, help and CLI flag."""

    name: str
    label: str
    help: str
    flag: str


def _describe(label: str, help: str, default: Any = None, flag: str = "") -> Any:
    return field(default=default, metadata={"describe": (label, help, flag)})


def _floats(value: Any, name: str) -> tuple[float, ...] | None:
    if value is None:
        return None
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        value = [value]
    if isinstance(value, str) or not isinstance(value, Sequence) or not value or not all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value):
        raise ModelsFileError(f"{name} is a list of numbers, one per input channel, not {value!r}")
    return tuple(float(v) for v in value)


@dataclass(frozen=True)
class Description:
    """A network and what the pages need to feed it; see the module docstring (``None``: not given)."""

    model: str = _describe(
        "Network", "a registry name, a models-file entry, path/to/file.py:NAME or package.module:NAME (NAME builds "
        "an nn.Module or is one), or timm:NAME", "")
    title: str | None = _describe("Title", "the name shown for the network (default: its --model)")
    weights: str = _describe(
        "Weights", "default (pretrained, or as your code builds it), random (a seeded init), or a state-dict file: "
        ".safetensors, .pt or .pth", "default")
    input: str | None = _describe(
        "Input", "CxHxW, C = 1 (gray) or 3 (RGB), square, side at least 16, e.g. 1x28x28 (your network's default: "
        "3x224x224, or the first convolution's channels)")
    mean: tuple[float, ...] | None = _describe(
        "Mean", "one value per input channel in [0, 1] units, comma-separated (your network's default: 0)")
    std: tuple[float, ...] | None = _describe(
        "Std", "one value per input channel in [0, 1] units (your network's default: 1, so it sees pixel / 255)")
    resize: int | None = _describe(
        "Resize", "the shorter side a photo is resized to before the centre crop (default: none, scaled straight "
        "to the input size)")
    classes: str | None = _describe(
        "Classes", "a text file with one class name per line, one per logit (default: the module's `classes` "
        "attribute, else none)")
    name: str = field(default="", metadata={})  # the models file's entry; else made from ``model``
    base: str = field(default="", metadata={})  # the folder relative paths start from ("": the working directory)

    def __post_init__(self) -> None:
        for text in ("model", "weights"):
            if not isinstance(getattr(self, text), str):
                raise ModelsFileError(f"{text} is a string, not {getattr(self, text)!r}")
        for text in ("title", "input", "classes"):
            value = getattr(self, text)
            if value is not None and not isinstance(value, str):
                raise ModelsFileError(f"{text} is a string, not {value!r}")
        object.__setattr__(self, "mean", _floats(self.mean, "mean"))
        object.__setattr__(self, "std", _floats(self.std, "std"))
        if self.resize is not None and (isinstance(self.resize, bool) or not isinstance(self.resize, int)
                                        or self.resize < 1):
            raise ModelsFileError(f"resize is a whole number of pixels, not {self.resize!r}")

    def path(self, text: str) -> Path:
        """``text`` as a path, relative to :attr:`base` unless absolute (``~`` expanded)."""
        path = Path(text).expanduser()
        return path if path.is_absolute() or not self.base else Path(self.base) / path

    def replace(self, **changes: Any) -> Description:
        """A copy with the given fields changed; ``None`` (and ``weights="default"``) leave a field as it is."""
        kept = {k: v for k, v in changes.items() if v is not None and not (k == "weights" and v == "default")}
        return dataclasses.replace(self, **kept) if kept else self


DESCRIBE: tuple[Describe, ...] = tuple(
    Describe(f.name, label, help_text, flag or "--" + f.name)
    for f in dataclasses.fields(Description) if "describe" in f.metadata
    for label, help_text, flag in [f.metadata["describe"]])
FIELDS = tuple(d.name for d in DESCRIBE)


def read(path: str | Path) -> dict[str, Description]:
    """The networks a models file names, by name; a :class:`ModelsFileError` in one line for a bad file."""
    path = Path(path).expanduser()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelsFileError(f"no models file {path}") from None
    except OSError as exc:
        raise ModelsFileError(f"cannot read the models file {path} ({exc.strerror or type(exc).__name__})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ModelsFileError(f"{path} is not a TOML file ({str(exc).splitlines()[0]})") from None
    extra = set(data) - {"models"}
    tables = data.get("models")
    if extra or not isinstance(tables, dict) or not all(isinstance(t, dict) for t in tables.values()):
        raise ModelsFileError(f"{path} holds [models.NAME] tables only (fields: {', '.join(FIELDS)})")
    found = {}
    for name, table in tables.items():
        if not NAME.match(name):
            raise ModelsFileError(f"{path}: {name!r} is not a network name (letters, digits, _ . -)")
        if name in REGISTRY:
            raise ModelsFileError(f"{path}: {name} is a built-in model's name; choose another")
        unknown = sorted(set(table) - set(FIELDS))
        if unknown:
            raise ModelsFileError(f"{path}: [models.{name}] has unknown field {unknown[0]!r}; the fields are "
                                  f"{', '.join(FIELDS)}")
        if not table.get("model"):
            raise ModelsFileError(f"{path}: [models.{name}] needs model = \"file.py:NAME\" (or package.module:NAME, "
                                  "timm:NAME)")
        try:
            found[name] = Description(**table, name=name, base=str(path.parent.resolve()))
        except ModelsFileError as exc:
            raise ModelsFileError(f"{path}: [models.{name}]: {exc}") from None
    return found


_REGISTERED: dict[Path, dict[str, Description]] = {}


def register(paths: str | Path | Iterable[str | Path]) -> dict[str, Description]:
    """Read the models file(s) ``paths`` and keep their networks for :func:`user_networks`; those networks."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    for path in paths:
        _REGISTERED[Path(path).expanduser().resolve()] = read(path)
    return user_networks()


@contextmanager
def registered(paths: Iterable[str | Path]) -> Iterator[None]:
    """:func:`register` ``paths`` for the duration of a ``with`` block (one CLI run), then forget them."""
    before = dict(_REGISTERED)
    try:
        paths = list(paths)
        if paths:
            register(paths)
        yield
    finally:
        _REGISTERED.clear()
        _REGISTERED.update(before)


def env_files() -> list[Path]:
    """The models files ``DEEPVIS_MODELS`` names (``os.pathsep``-separated; empty parts ignored)."""
    return [Path(p).expanduser().resolve() for p in os.environ.get(ENV, "").split(os.pathsep) if p.strip()]


def user_networks() -> dict[str, Description]:
    """Every network the registered files and ``DEEPVIS_MODELS`` name, in their files' order."""
    files = dict(_REGISTERED)
    for path in env_files():
        if path not in files:
            files[path] = read(path)
    found: dict[str, Description] = {}
    where: dict[str, Path] = {}
    for path, networks in files.items():
        for name, description in networks.items():
            if name in found and where[name] != path:
                raise ModelsFileError(f"the network {name} is defined in both {where[name]} and {path}")
            found[name], where[name] = description, path
    return found
