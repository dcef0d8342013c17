"""An atlas's folder: its files, written whole or not at all, and read back.

Conventions
-----------
* ``manifest.json``: what made the atlas (model name, weights and the hash of every parameter and buffer,
  :func:`deepvis.collection.model_key`; input spec; layers and their shapes; ``k``; the listing's hash; the
  shard size; the tool version; ``"optimize"``: preset, θ, seed, size) and what it holds (images, broken files
  with their reasons, seconds); ``collection.tsv``: the listing, ``path, size, mtime_ns`` per line, line *i*
  being image number *i* (for the default collection, ``samples``, the file's name alone, found again in the
  reading machine's own copy: a shipped atlas names no folder of the machine that built it; the manifest's
  ``sha256`` is that of the file as written); ``atlas.sqlite``: ``layers(name, channels, height, width)``,
  ``top(layer, channel, rank, image, value, y, x)`` and ``units(layer, channel, mean, zero, dead, max)``.
* **Why SQLite** for the table: a reader (the app's unit view, ``deepvis top``) asks for one unit at a time,
  which is one indexed lookup; it is in Python's standard library, so a shared bundle opens anywhere with no
  extra package; and it is what :mod:`deepvis.index` uses.  Parquet would compress a whole-column scan better,
  which no reader here does.  The table is O(units × k), whatever the collection's size.
* **Shipped atlases** live in the package, ``deepvis/atlases/<model>/`` (:func:`shipped`): the embedded model's
  optimized images of its default layer, so a first click on a unit shows them at once.
* Every file is written to a temporary name and renamed (:func:`write_atomic`): a full disk or a crash leaves
  the previous file, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np

from deepvis import collection as coll
from deepvis.errors import DeepvisError
from deepvis.index import Hit
from deepvis.models import LoadedModel
from deepvis.topk import LayerTop

FORMAT = "deepvis-atlas-1"
MANIFEST, LISTING, TABLE, WORK = "manifest.json", "collection.tsv", "atlas.sqlite", "work"
SHIPPED = Path(__file__).resolve().parent / "atlases"


def shipped() -> list[Path]:
    """The atlases that ship in the package (module docstring)."""
    return sorted(p for p in SHIPPED.glob("*") if (p / MANIFEST).is_file()) if SHIPPED.is_dir() else []


class AtlasError(DeepvisError):
    """An atlas that cannot be built or read as asked; the message is one line."""


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all (a full disk leaves no half-written file), making its
    folder if needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".part")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    except OSError:
        temporary.unlink(missing_ok=True)
        raise


def write_bundle(loaded: LoadedModel, out: Path, listing: list[coll.Entry], names: list[str],
                  merged: dict[str, LayerTop], k: int, shard: int, key: str,
                  skipped: list[tuple[str, str]], source, seconds: float, run_key: str, planned: dict | None
                  ) -> None:
    from importlib.metadata import PackageNotFoundError, version

    # New records (other photos, layers or k) make the old crops wrong; optimized images do not depend on them.
    shutil.rmtree(out / "crops", ignore_errors=True)

    try:
        tool_version = version("deepvis")
    except PackageNotFoundError:
        tool_version = "unknown"
    portable = source is None or str(source) == coll.DEFAULT_NAME
    written = "".join(f"{Path(e.path).name if portable else e.path}\t{e.size}\t{e.mtime_ns}\n" for e in listing)
    write_atomic(out / LISTING, written.encode())
    listing_hash = hashlib.sha256(written.encode()).hexdigest()
    shapes = {name: loaded.layer(name).shape for name in names}
    temporary = out / (TABLE + ".part")
    temporary.unlink(missing_ok=True)
    try:
        with closing(sqlite3.connect(temporary)) as db, db:
            db.executescript("""
                CREATE TABLE layers (name TEXT PRIMARY KEY, channels INTEGER, height INTEGER, width INTEGER);
                CREATE TABLE top (layer TEXT, channel INTEGER, rank INTEGER, image INTEGER, value REAL, y INTEGER,
                                  x INTEGER, PRIMARY KEY (layer, channel, rank));
                CREATE TABLE units (layer TEXT, channel INTEGER, mean REAL, zero REAL, dead INTEGER, max REAL,
                                    PRIMARY KEY (layer, channel));""")
            for name in names:
                top, shape = merged[name], shapes[name]
                height, width = (shape[1], shape[2]) if len(shape) == 3 else (1, 1)
                db.execute("INSERT INTO layers VALUES (?, ?, ?, ?)", (name, top.channels, height, width))
                db.executemany("INSERT INTO top VALUES (?, ?, ?, ?, ?, ?, ?)", [
                    (name, c, rank, image, value, position // width, position % width)
                    for c in range(top.channels) for rank, (value, image, position) in enumerate(top.unit(c))])
                best = [top.unit(c, 1) for c in range(top.channels)]
                db.executemany("INSERT INTO units VALUES (?, ?, ?, ?, ?, ?)", [
                    (name, c, float(top.mean[c]), float(top.zero[c]), int(top.dead[c]),
                     best[c][0][0] if best[c] else None) for c in range(top.channels)])
        os.replace(temporary, out / TABLE)
    except (OSError, sqlite3.OperationalError) as error:
        temporary.unlink(missing_ok=True)
        raise AtlasError(f"cannot write {out / TABLE}: {error}; the finished shards are kept, run the same "
                         f"command again") from None
    manifest = {
        "format": FORMAT, "tool": {"name": "deepvis", "version": tool_version},
        "model": {"name": loaded.spec.name, "weights": loaded.weights, "seed": loaded.seed, "key": key,
                  "input": {"channels": loaded.spec.channels, "size": loaded.spec.input_size,
                            "mean": list(loaded.spec.normalization.mean), "std": list(loaded.spec.normalization.std)}},
        "layers": {name: list(shapes[name]) for name in names}, "k": k, "shard": shard,
        "collection": {"source": str(source) if source is not None else coll.DEFAULT_NAME, "images": len(listing),
                       "listing": LISTING, "sha256": listing_hash},
        "skipped": {path: reason for path, reason in sorted(skipped)},
        "seconds": round(seconds, 2), "run": run_key,
    }
    if planned is not None:
        manifest["optimize"] = planned
    write_atomic(out / MANIFEST, json.dumps(manifest, indent=2).encode())


# ------------------------------------------------- reading an atlas ------------------------------------------

def is_atlas(path: str | Path) -> bool:
    """Whether ``path`` is a finished atlas folder."""
    return (Path(path) / MANIFEST).is_file() and (Path(path) / TABLE).is_file()


def manifest(path: str | Path) -> dict:
    """The atlas's manifest; a one-line :class:`AtlasError` when ``path`` is not a finished atlas."""
    path = Path(path).expanduser()
    if not is_atlas(path):
        raise AtlasError(f"{path} is not a finished atlas (no {MANIFEST} and {TABLE}); build it with "
                         f"`deepvis atlas`")
    try:
        made = json.loads((path / MANIFEST).read_text())
    except ValueError:
        raise AtlasError(f"{path / MANIFEST} is not valid JSON") from None
    if made.get("format") != FORMAT:
        raise AtlasError(f"{path} is an atlas of format {made.get('format')!r}, not {FORMAT}")
    return made


def check_model(path: str | Path, loaded: LoadedModel) -> dict:
    """The manifest of the atlas at ``path``, if ``loaded`` made it; else a one-line :class:`AtlasError`."""
    made = manifest(path)
    key = coll.model_key(loaded)
    if made["model"]["key"] != key:
        raise AtlasError(f"the atlas at {path} was made with {made['model']['key']}, not this model ({key})")
    return made


def _paths(path: Path) -> list[str]:
    """Image *i*'s path; a bare name (the default collection's, module docstring) found in this machine's copy."""
    names = [line.split("\t")[0] for line in (path / LISTING).read_text().splitlines()]
    if any(os.sep not in name and "/" not in name for name in names):
        here = {Path(e.path).name: e.path for e in coll.default_collection()}
        names = [here.get(name, name) for name in names]
    return names


def top(path: str | Path, layer: str, unit: int, k: int = 9) -> list[Hit]:
    """The unit's ``k`` best images in the atlas at ``path``, best first, as :func:`deepvis.index.top` gives
    them from an index (at most the atlas's own ``k``)."""
    path = Path(path).expanduser()
    made = manifest(path)
    if layer not in made["layers"]:
        raise AtlasError(f"the atlas has no layer {layer!r} (it has: {', '.join(made['layers'])})")
    channels = made["layers"][layer][0]
    if not isinstance(unit, (int, np.integer)) or not 0 <= unit < channels:
        raise AtlasError(f"{layer} has channels 0-{channels - 1}, not {unit!r}")
    if k > made["k"]:
        raise AtlasError(f"the atlas keeps {made['k']} images per unit, not {k}; build it with a larger --k")
    with closing(sqlite3.connect(f"file:{path / TABLE}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT image, value, y, x FROM top WHERE layer = ? AND channel = ? ORDER BY rank "
                          "LIMIT ?", (layer, int(unit), int(k))).fetchall()
    paths = _paths(path)
    return [Hit(paths[image], float(value), int(y), int(x)) for image, value, y, x in rows]


def unit_stats(path: str | Path, layer: str, unit: int) -> dict:
    """``{"mean", "zero", "dead", "max"}`` of one unit over the atlas's collection (:mod:`deepvis.topk`)."""
    with closing(sqlite3.connect(f"file:{Path(path) / TABLE}?mode=ro", uri=True)) as db:
        row = db.execute("SELECT mean, zero, dead, max FROM units WHERE layer = ? AND channel = ?",
                         (layer, int(unit))).fetchone()
    if row is None:
        raise AtlasError(f"the atlas has no unit {unit} of {layer!r}")
    return {"mean": row[0], "zero": row[1], "dead": bool(row[2]), "max": row[3]}
