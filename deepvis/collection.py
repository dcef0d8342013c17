"""Image collections: which photos a collection holds, and where deepvis keeps what it computes.

Conventions
-----------
* **A collection** is a list of image files, each named by its absolute path.
  ``folder(DIR)`` is every file under ``DIR`` (subfolders included, symbolic links
  not followed) whose suffix is one of :data:`SUFFIXES`; other files (notes, CSVs)
  are not images and are left out, not reported.  ``default_collection()`` is
  scikit-image's photos (:data:`SKIMAGE_PHOTOS`, 17 images that are on every machine
  deepvis runs on; they include the four bundled samples, which stand in for them
  if scikit-image is missing).  A text file (``.txt``) lists a collection of any size,
  one path per line (blank lines and lines starting with ``#`` skipped, relative paths
  taken from the file's folder); a listed path that is not there is kept, to be
  reported broken when it is read.
* **A file's fingerprint** is ``(size in bytes, mtime in ns)``; a file whose
  fingerprint changed since it was read is read again.
* Whether a listed file really is an image is decided when it is read
  (:func:`deepvis.images.decode_image`): a broken one is skipped and listed with
  its one-line reason, never fatal.
* **The cache folder** is ``$DEEPVIS_CACHE``, else ``~/.cache/deepvis``.  What deepvis
  keeps there (indexes, optimized images) is named by the model's *fingerprint*
  (:func:`model_key`): model name, weights, seed and a hash of every parameter
  and buffer, so other weights never reuse an old result.
"""

from __future__ import annotations

import hashlib
import os
import weakref
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from torch import nn

from deepvis.errors import DeepvisError
from deepvis.images import SAMPLE_NAMES
from deepvis.models import LoadedModel

SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff")
# scikit-image's bundled photographs (grey ones are read as RGB); diagrams, masks and text pages left out.
SKIMAGE_PHOTOS = ("astronaut.png", "brick.png", "camera.png", "coffee.png", "chelsea.png", "coins.png",
                  "grass.png", "gravel.png", "horse.png", "hubble_deep_field.jpg", "ihc.png", "moon.png",
                  "motorcycle_left.png", "retina.jpg", "rocket.jpg", "clock_motion.png", "microaneurysms.png")
DEFAULT_NAME = "samples"


class CollectionError(DeepvisError):
    """A collection that cannot be listed (no such folder, say); the message is one line."""


@dataclass(frozen=True)
class Entry:
    """One file of a collection: its absolute path and fingerprint."""

    path: str
    size: int
    mtime_ns: int


def _entry(path: Path) -> Entry:
    stat = path.stat()
    return Entry(str(path), stat.st_size, stat.st_mtime_ns)


def folder(directory: str | Path) -> list[Entry]:
    """Every image-suffixed file under ``directory``, sorted by path (module docstring)."""
    root = Path(directory).expanduser()
    if not root.exists():
        raise CollectionError(f"There is no folder {str(directory)!r} on this machine.")
    if not root.is_dir():
        raise CollectionError(f"{str(directory)!r} is a file, not a folder.")
    root = root.resolve()
    found = []
    for parent, dirs, names in os.walk(root, onerror=None, followlinks=False):
        dirs.sort()
        for name in sorted(names):
            path = Path(parent) / name
            if path.suffix.lower() in SUFFIXES and path.is_file() and not path.is_symlink():
                try:
                    found.append(_entry(path))
                except OSError:
                    continue  # vanished or unreadable between listing and stat: read as broken next time
    return sorted(found, key=lambda e: e.path)


def default_collection() -> list[Entry]:
    """scikit-image's photos, or the bundled samples without it (module docstring)."""
    try:
        import skimage.data

        data = Path(skimage.data.__file__).parent
        paths = [data / name for name in SKIMAGE_PHOTOS if (data / name).is_file()]
    except ImportError:  # scikit-image is a dependency, but the samples alone still make a collection
        paths = [Path(str(files("deepvis") / "samples" / f"{name}.jpg")) for name in SAMPLE_NAMES]
    return sorted((_entry(p.resolve()) for p in paths), key=lambda e: e.path)


def listed(listing: str | Path) -> list[Entry]:
    """The files a text file lists, sorted by path, each once (module docstring)."""
    file = Path(listing).expanduser()
    try:
        lines = file.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as error:
        raise CollectionError(f"The listing {str(listing)!r} cannot be read ({error.strerror or error}).") from None
    found: dict[str, Entry] = {}
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        path = Path(line).expanduser()
        path = (path if path.is_absolute() else file.parent / path).resolve()
        try:
            found[str(path)] = _entry(path)
        except OSError:
            found[str(path)] = Entry(str(path), -1, 0)  # read (and reported broken) when its turn comes
    return sorted(found.values(), key=lambda e: e.path)


def entries(source: str | Path | None) -> list[Entry]:
    """A collection by name: ``None`` or ``"samples"`` is the default collection, a ``.txt`` file a listing,
    anything else a folder."""
    if source is None or str(source) == DEFAULT_NAME:
        return default_collection()
    if Path(source).suffix.lower() == ".txt" and Path(source).expanduser().is_file():
        return listed(source)
    return folder(source)


def collection_key(source: str | Path | None) -> str:
    """A stable name for a collection, used to name its index file."""
    if source is None or str(source) == DEFAULT_NAME:
        return DEFAULT_NAME
    resolved = str(Path(source).expanduser().resolve())
    return f"{Path(resolved).name or 'root'}-{hashlib.sha1(resolved.encode()).hexdigest()[:12]}"


def cache_dir() -> Path:
    """Where deepvis keeps indexes and optimized images (module docstring)."""
    return Path(os.environ.get("DEEPVIS_CACHE") or Path.home() / ".cache" / "deepvis")


_FINGERPRINTS: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()


def model_key(loaded: LoadedModel) -> str:
    """``<model>-<weights>-<hash>``: changes whenever any parameter or buffer of the model does.

    The hash (sha1 of every tensor's bytes, about 30 ms for Lite0) is computed once per module.
    """
    cached = _FINGERPRINTS.get(loaded.module)
    if cached is None:
        digest = hashlib.sha1()
        for name, tensor in loaded.module.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().to("cpu", copy=True).contiguous().numpy().tobytes())
        cached = _FINGERPRINTS[loaded.module] = digest.hexdigest()[:16]
    weights = loaded.weights if loaded.weights != "random" else f"random{loaded.seed}"
    return f"{loaded.spec.name}-{weights}-{cached}"
