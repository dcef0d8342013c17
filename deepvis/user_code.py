"""Where a network's code comes from: a Python file, an importable module, or timm.

Conventions
-----------
* ``file.py:NAME`` / ``package.module:NAME`` name a callable that returns an ``nn.Module``
  (a class, a function) or an ``nn.Module`` instance; ``NAME`` may be dotted.  A relative
  file is relative to ``base`` (a models file's folder), else to the working directory.
* A ``.py`` file is imported once per (path, mtime) under a private module name, with its
  folder on ``sys.path`` while it runs (so it can import its neighbours).
* A module is built fresh under ``torch.manual_seed(seed)``, the caller's RNG untouched; an
  instance is deep-copied (``random``: each part's ``reset_parameters()`` under the seed).
* timm's pretrained weights come from the local Hugging Face cache only (the hub is put
  offline while timm builds); ``pretrained=False`` for random weights.
* Anything the user's code raises becomes a :class:`~deepvis.models.ModelError` in one
  line naming what raised it.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import importlib.util
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from deepvis.errors import one_line
from deepvis.models import ModelError, WeightsUnavailableError

_IMPORTED: dict[tuple[str, int], ModuleType] = {}
_IMPORT_LOCK = threading.Lock()


def import_file(path: Path) -> ModuleType:
    """The Python file ``path`` as a module, imported once per (path, mtime)."""
    path = path.resolve()
    if not path.is_file():
        raise ModelError(f"no file {path}")
    key = (str(path), path.stat().st_mtime_ns)
    with _IMPORT_LOCK:
        if key not in _IMPORTED:
            name = f"deepvis_user_{hashlib.sha1(str(path).encode()).hexdigest()[:12]}"
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # dataclasses and pickling look a class's module up there
            sys.path.insert(0, str(path.parent))
            try:
                spec.loader.exec_module(module)
            except Exception as exc:  # the user's code: anything it raises is their mistake to see
                sys.modules.pop(name, None)
                raise ModelError(f"importing {path} raised {type(exc).__name__}: {one_line(exc)}") from None
            finally:
                sys.path.remove(str(path.parent))
            _IMPORTED[key] = module
        return _IMPORTED[key]


def resolve(reference: str, base: str = "") -> Any:
    """The object ``file.py:NAME`` or ``package.module:NAME`` names."""
    where, _, attribute = reference.rpartition(":")
    if not where or not attribute:
        raise ModelError(f"name your network as file.py:NAME, package.module:NAME or timm:NAME, not {reference!r}")
    if where.endswith(".py") or "/" in where or os.sep in where:
        path = Path(where).expanduser()
        module = import_file(path if path.is_absolute() or not base else Path(base) / path)
    else:
        try:
            module = importlib.import_module(where)
        except ModuleNotFoundError as exc:
            if exc.name and (where == exc.name or where.startswith(exc.name + ".")):
                raise ModelError(f"no module {where} (not installed, nor on the Python path)") from None
            raise ModelError(f"importing {where} raised ModuleNotFoundError: {one_line(exc)}") from None
        except Exception as exc:  # the user's code
            raise ModelError(f"importing {where} raised {type(exc).__name__}: {one_line(exc)}") from None
    found: Any = module
    for part in attribute.split("."):
        if not hasattr(found, part):
            names = [n for n, v in vars(module).items() if not n.startswith("_") and callable(v)][:8]
            raise ModelError(f"{where} has no {attribute}; it defines {', '.join(names) or 'nothing callable'}")
        found = getattr(found, part)
    return found


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def own_module(reference: str, base: str, seed: int, random: bool) -> nn.Module:
    """A fresh module from the user's code (see the module docstring for ``random``)."""
    with torch.random.fork_rng(devices=[]):  # importing runs the user's code too
        found = resolve(reference, base)
    with _seeded(seed):
        if isinstance(found, nn.Module):
            module = copy.deepcopy(found)
            for part in module.modules() if random else ():
                if callable(getattr(part, "reset_parameters", None)):
                    part.reset_parameters()
        elif callable(found):
            try:
                module = found()
            except Exception as exc:  # the user's code
                raise ModelError(f"{reference}() raised {type(exc).__name__}: {one_line(exc)}") from None
            if not isinstance(module, nn.Module):
                raise ModelError(f"{reference}() returned a {type(module).__name__}, not a torch.nn.Module")
        else:
            raise ModelError(f"{reference} is a {type(found).__name__}, not an nn.Module nor a callable that "
                             "returns one")
    return module


@contextmanager
def _hf_offline() -> Iterator[None]:
    from huggingface_hub import constants

    before = os.environ.get("HF_HUB_OFFLINE"), constants.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"], constants.HF_HUB_OFFLINE = "1", True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before[1]
        if before[0] is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = before[0]


def timm_module(arch: str, pretrained: bool, channels: int | None, seed: int) -> tuple[nn.Module, dict[str, Any]]:
    """timm's ``arch`` (pretrained from the local cache only, or seeded random) and its pretrained_cfg."""
    try:
        import timm
    except ImportError:
        raise ModelError("timm:NAME needs timm: pip install timm") from None
    if not timm.is_model(arch):
        raise ModelError(f"timm has no model {arch!r}; timm.list_models('{arch.split('.')[0][:5]}*') lists names")
    cfg = timm.models.get_pretrained_cfg(arch)
    if pretrained and not _timm_cached(cfg):
        from huggingface_hub import constants

        hub = getattr(cfg, "hf_hub_id", None) or arch
        raise WeightsUnavailableError(
            f"timm:{arch}'s pretrained weights are not in the local Hugging Face cache ({constants.HF_HUB_CACHE}); "
            f"on a machine with internet access run `huggingface-cli download {hub}` and copy the cache here, or "
            "use --weights random")
    kwargs = {"in_chans": channels} if channels else {}
    with _seeded(seed), _hf_offline():
        try:
            module = timm.create_model(arch, pretrained=pretrained, **kwargs)
        except Exception as exc:  # timm's and the hub's failures
            kind = WeightsUnavailableError if pretrained else ModelError
            raise kind(f"timm could not build {arch} ({type(exc).__name__}: {one_line(exc)})") from None
    return module, dict(getattr(module, "pretrained_cfg", None) or {})


def _timm_cached(cfg: Any) -> bool:
    from huggingface_hub import try_to_load_from_cache

    hub = getattr(cfg, "hf_hub_id", None)
    if hub:
        files = (getattr(cfg, "hf_hub_filename", None), "model.safetensors", "pytorch_model.bin")
        return any(isinstance(try_to_load_from_cache(hub, f), str) for f in files if f)
    file = getattr(cfg, "file", None)
    return bool(file) and Path(file).is_file()
