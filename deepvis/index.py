"""The top images of every unit: a collection indexed once, on disk, in SQLite.

(Over 300 lines: building, resuming, merging and reading one on-disk index share its schema.)

Conventions
-----------
* **What is stored.**  For every image of a collection and every indexed layer, each
  channel's maximum over positions and where it is: ``value`` (float32, the layer's
  own output on the network's view of the image, :func:`deepvis.images.model_view`)
  and ``(y, x)`` in the layer's map (``(0, 0)`` for a vector layer such as logits).
  Ties between positions go to the first in row-major order (``torch.argmax``).
  From these *maxima* a ``top`` table keeps each channel's best :data:`TOP_K`
  images, ordered by value (high first), then path; that is what a query reads.
* **Why SQLite.**  One file in the standard library, with transactions: each batch
  of images is committed as it finishes, so an interrupted indexing keeps its work
  and the next run reads only what is missing; readers see a consistent index while
  a writer works; a unit's top-k is one indexed query.  (A folder of ``.npy`` files
  would need its own locking and bookkeeping to do the same.)
* **Exact under change.**  Keeping every image's maxima (not only the top-k) makes
  three things exact: a changed or deleted file just loses its rows; *merging*
  shards is the union of their maxima, so two shards merged give the same top
  lists as indexing everything at once; and ``top(k)`` for any ``k``.  The cost is
  8 bytes per channel per image per layer (10,000 images of a 1280-channel layer:
  about 100 MB).  Values agree with a one-image forward pass up to the float32
  rounding of batched kernels (about 1e-6 relative).
* **Incremental.**  A file is read when it is new, its fingerprint (size, mtime)
  changed, or it lacks a requested layer; files gone from the collection are
  removed.  A broken file is skipped, listed with its one-line reason, and not read
  again until it changes.
* **Which index.**  ``index_path(model, source)`` is
  ``<cache>/index/<model key>/<collection key>.sqlite``
  (:mod:`deepvis.collection`); the model key holds a hash of the weights, so other
  weights get their own index.  An index file opened with another model's key is
  emptied before use (invalidated).
* Indexing never touches the shared model (forward passes through
  :func:`deepvis.activations.capture`, which hooks nothing).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from deepvis.errors import DeepvisError
from deepvis.progress import Progress
from deepvis import collection as coll
from deepvis.activations import capture
from deepvis.images import ImageDecodeError, decode_image, model_view, to_batch
from deepvis.models import LoadedModel

FORMAT = "deepvis-index-1"
TOP_K = 16  # rows kept per channel in the top table; a larger k is computed from the maxima
BATCH = 16

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, error TEXT);
CREATE TABLE IF NOT EXISTS layers (name TEXT PRIMARY KEY, channels INTEGER, height INTEGER, width INTEGER);
CREATE TABLE IF NOT EXISTS maxima (path TEXT, layer TEXT, value BLOB, position BLOB, PRIMARY KEY (path, layer));
CREATE TABLE IF NOT EXISTS top (layer TEXT, channel INTEGER, rank INTEGER, path TEXT, value REAL, y INTEGER,
                                x INTEGER, PRIMARY KEY (layer, channel, rank));
"""


class IndexingError(DeepvisError):
    """An index that cannot be built or read as asked; the message is one line."""


@dataclass(frozen=True)
class Hit:
    """One of a unit's top images: where it is, how strongly the unit fired, and at which map position."""

    path: str
    value: float
    y: int
    x: int

    def to_dict(self) -> dict:
        return {"path": self.path, "value": self.value, "y": self.y, "x": self.x}


@dataclass(frozen=True)
class Summary:
    """What :func:`build` returns: the collection's size, files read now, broken files, layers, time."""

    images: int
    new: int
    skipped: tuple[tuple[str, str], ...]
    layers: tuple[str, ...]
    seconds: float
    path: str

    def to_dict(self) -> dict:
        return {"images": self.images, "new": self.new, "skipped": [p for p, _ in self.skipped],
                "reasons": {p: r for p, r in self.skipped}, "layers": list(self.layers),
                "seconds": round(self.seconds, 2), "index": self.path}


def index_path(loaded: LoadedModel, source: str | Path | None) -> Path:
    """Where the index of ``source`` (a folder, or None for the default collection) for this model lives."""
    return coll.cache_dir() / "index" / coll.model_key(loaded) / f"{coll.collection_key(source)}.sqlite"


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=60)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(_SCHEMA)
    return db


def _open_for(loaded: LoadedModel, path: Path) -> sqlite3.Connection:
    """The index at ``path``, emptied first if another model or size made it."""
    db = _connect(path)
    want = {"format": FORMAT, "model": coll.model_key(loaded), "size": str(loaded.spec.input_size)}
    have = {k: v for k, v in db.execute("SELECT key, value FROM meta") if k in want}
    if have and have != want:
        with db:
            for table in ("meta", "images", "layers", "maxima", "top"):
                db.execute(f"DELETE FROM {table}")
    with db:
        db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", want.items())
    return db


def read_view(path: str | Path, loaded: LoadedModel) -> np.ndarray | str:
    """The network's ``(S, S, 3)`` uint8 view of one file, or the one-line reason it cannot be read."""
    try:
        return model_view(decode_image(Path(path).read_bytes()), loaded.spec)
    except ImageDecodeError as error:
        return str(error)
    except OSError as error:
        return f"The file cannot be read ({error.strerror or error})."


def _read(entry: coll.Entry, loaded: LoadedModel) -> np.ndarray | str:
    return read_view(entry.path, loaded)


def _maxima(activation: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """``(N, C, H, W)`` or ``(N, C)`` -> each channel's max and its flat position, both ``(N, C)``."""
    flat = activation.flatten(2) if activation.dim() > 2 else activation.unsqueeze(2)
    values, positions = flat.float().max(dim=2)
    return values.cpu().numpy().astype(np.float32), positions.cpu().numpy().astype(np.int32)


def build(loaded: LoadedModel, source: str | Path | None, layers: Sequence[str], *, path: str | Path | None = None,
          batch: int = BATCH) -> Generator[Progress, None, Summary]:
    """Index ``source`` for ``layers`` (incrementally); yield :class:`Progress` per batch (module docstring).

    Bad arguments (no layers, an unknown layer, a missing folder) raise a one-line ``ValueError`` before
    anything is read.
    """
    if not layers:
        raise IndexingError("index at least one layer")
    names = [loaded.layer(name).name for name in dict.fromkeys(layers)]
    listing = coll.entries(source)
    target = Path(path) if path is not None else index_path(loaded, source)
    return _build(loaded, listing, names, target, max(1, int(batch)))


@dataclass(frozen=True)
class Status:
    """How far an index is from its collection: files to read, rows to forget; ready when both are 0."""

    to_read: int
    gone: int

    @property
    def ready(self) -> bool:
        return self.to_read == 0 and self.gone == 0


def _plan(db: sqlite3.Connection, listing: list[coll.Entry], names: Sequence[str]
          ) -> tuple[list[coll.Entry], list[str]]:
    """The files to read (new, changed, or lacking a requested layer) and the paths gone from the collection."""
    known = {p: (s, m, e) for p, s, m, e in db.execute("SELECT path, size, mtime_ns, error FROM images")}
    layered: dict[str, set[str]] = {}
    for p, layer in db.execute("SELECT path, layer FROM maxima"):
        layered.setdefault(p, set()).add(layer)
    present = {e.path for e in listing}
    gone = [p for p in known if p not in present]
    todo = []
    for entry in listing:
        before = known.get(entry.path)
        changed = before is None or before[:2] != (entry.size, entry.mtime_ns)
        if changed or (before[2] is None and not set(names) <= layered.get(entry.path, set())):
            todo.append(entry)
    return todo, gone


def status(path: str | Path, listing: list[coll.Entry], layer: str) -> Status:
    """Whether the index at ``path`` covers ``listing`` for ``layer`` (read only; no file means all to read)."""
    if not Path(path).exists():
        return Status(len(listing), 0)
    with closing(sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True, timeout=60)) as db:
        try:
            todo, gone = _plan(db, listing, [layer])
        except sqlite3.DatabaseError:  # not an index (or another format): it will be rebuilt
            return Status(len(listing), 0)
    return Status(len(todo), len(gone))


def _build(loaded: LoadedModel, listing: list[coll.Entry], names: list[str], target: Path,
           batch: int) -> Generator[Progress, None, Summary]:
    began = time.perf_counter()
    with closing(_open_for(loaded, target)) as db:
        todo, gone = _plan(db, listing, names)
        with db:
            db.executemany("DELETE FROM images WHERE path = ?", [(p,) for p in gone])
            db.executemany("DELETE FROM maxima WHERE path = ?", [(p,) for p in gone])
            if gone:
                db.execute("INSERT OR REPLACE INTO meta VALUES ('top_stale', '1')")
        skipped: list[tuple[str, str]] = []
        batches = [todo[i:i + batch] for i in range(0, len(todo), batch)]
        yield Progress(0, len(todo))
        with ThreadPoolExecutor(1) as reader:  # the next batch is decoded while this one runs forward
            pending = reader.submit(lambda b: [_read(e, loaded) for e in b], batches[0]) if batches else None
            for number, entries in enumerate(batches):
                views = pending.result()
                if number + 1 < len(batches):
                    pending = reader.submit(lambda b: [_read(e, loaded) for e in b], batches[number + 1])
                _store(db, loaded, entries, views, names, skipped)
                yield Progress(min(len(todo), (number + 1) * batch), len(todo), tuple(skipped))
        if dict(db.execute("SELECT key, value FROM meta")).get("top_stale") == "1":
            _rebuild_top(db)  # also after an interruption that came between the last batch and this
        broken = tuple(db.execute("SELECT path, error FROM images WHERE error IS NOT NULL ORDER BY path"))
        indexed = tuple(r[0] for r in db.execute("SELECT name FROM layers ORDER BY name"))
    return Summary(len(listing), len(todo), broken, indexed, time.perf_counter() - began, str(target))


def _store(db: sqlite3.Connection, loaded: LoadedModel, entries: list[coll.Entry], views: list,
           names: list[str], skipped: list[tuple[str, str]]) -> None:
    """Forward one batch and commit its maxima, and the broken files' reasons, in one transaction."""
    good = [(e, v) for e, v in zip(entries, views) if not isinstance(v, str)]
    bad = [(e, v) for e, v in zip(entries, views) if isinstance(v, str)]
    skipped.extend((e.path, reason) for e, reason in bad)
    rows, shapes = [], {}
    if good:
        inputs = to_batch([v for _, v in good], loaded.spec.normalization, loaded.device)
        acts = capture(loaded.module, inputs, names)
        for name in names:
            act = acts[name]
            shapes[name] = (act.shape[1], *(act.shape[2:] if act.dim() == 4 else (1, 1)))
            values, positions = _maxima(act)
            rows += [(e.path, name, values[i].tobytes(), positions[i].tobytes()) for i, (e, _) in enumerate(good)]
    with db:
        db.executemany("INSERT OR REPLACE INTO layers VALUES (?, ?, ?, ?)", [(n, *s) for n, s in shapes.items()])
        db.executemany("DELETE FROM maxima WHERE path = ?", [(e.path,) for e in entries])
        db.executemany("INSERT INTO maxima VALUES (?, ?, ?, ?)", rows)
        db.executemany("INSERT OR REPLACE INTO images VALUES (?, ?, ?, ?)",
                       [(e.path, e.size, e.mtime_ns, None) for e, _ in good]
                       + [(e.path, e.size, e.mtime_ns, reason) for e, reason in bad])
        db.execute("INSERT OR REPLACE INTO meta VALUES ('top_stale', '1')")


def _layer_maxima(db: sqlite3.Connection, layer: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Every image's maxima for ``layer``: paths (sorted), values ``(N, C)``, flat positions ``(N, C)``."""
    rows = db.execute("SELECT path, value, position FROM maxima WHERE layer = ? ORDER BY path", (layer,)).fetchall()
    if not rows:
        return [], np.zeros((0, 0), np.float32), np.zeros((0, 0), np.int32)
    values = np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows])
    positions = np.stack([np.frombuffer(r[2], dtype=np.int32) for r in rows])
    return [r[0] for r in rows], values, positions


def _ranked(values: np.ndarray, k: int) -> np.ndarray:
    """``(k', C)`` row indices of each channel's best ``k`` images: highest value first, then lowest path index."""
    rows = np.arange(values.shape[0])
    order = np.lexsort((np.broadcast_to(rows[:, None], values.shape), -values), axis=0)
    return order[:k]


def _rebuild_top(db: sqlite3.Connection) -> None:
    shapes = {n: (c, h, w) for n, c, h, w in db.execute("SELECT name, channels, height, width FROM layers")}
    with db:
        db.execute("DELETE FROM top")
        for layer, (_, _, width) in shapes.items():
            paths, values, positions = _layer_maxima(db, layer)
            if not paths:
                continue
            best = _ranked(values, TOP_K)
            channels = np.arange(values.shape[1])
            db.executemany("INSERT INTO top VALUES (?, ?, ?, ?, ?, ?, ?)", [
                (layer, int(c), rank, paths[best[rank, c]], float(values[best[rank, c], c]),
                 int(positions[best[rank, c], c]) // width, int(positions[best[rank, c], c]) % width)
                for rank in range(best.shape[0]) for c in channels])
        db.execute("INSERT OR REPLACE INTO meta VALUES ('top_stale', '0')")


def top(path: str | Path, layer: str, unit: int, k: int = 9) -> list[Hit]:
    """The unit's ``k`` best images in the index at ``path``, best first (module docstring)."""
    path = Path(path)
    if not path.exists():
        raise IndexingError(f"There is no index at {path}; index the collection first.")
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)) as db:
        shape = db.execute("SELECT channels, width FROM layers WHERE name = ?", (layer,)).fetchone()
        if shape is None:
            indexed = ", ".join(r[0] for r in db.execute("SELECT name FROM layers ORDER BY name")) or "none"
            raise IndexingError(f"Layer {layer!r} is not indexed (indexed: {indexed}).")
        channels, width = shape
        if not isinstance(unit, (int, np.integer)) or not 0 <= unit < channels:
            raise IndexingError(f"{layer} has channels 0-{channels - 1}, not {unit!r}.")
        stale = dict(db.execute("SELECT key, value FROM meta")).get("top_stale") == "1"
        if k <= TOP_K and not stale:
            rows = db.execute("SELECT path, value, y, x FROM top WHERE layer = ? AND channel = ? ORDER BY rank LIMIT ?",
                              (layer, int(unit), int(k))).fetchall()
            return [Hit(p, float(v), int(y), int(x)) for p, v, y, x in rows]
        paths, values, positions = _layer_maxima(db, layer)
    if not paths:
        return []
    best = _ranked(values[:, [unit]], k)[:, 0]
    return [Hit(paths[i], float(values[i, unit]), int(positions[i, unit]) // width, int(positions[i, unit]) % width)
            for i in best]


def features(path: str | Path, layer: str) -> tuple[list[str], np.ndarray]:
    """Every indexed image's per-channel maximum of ``layer`` (its max-pooled features): paths sorted, ``(N, C)``
    float32; a one-line :class:`IndexingError` when the index or the layer is missing."""
    path = Path(path)
    if not path.exists():
        raise IndexingError(f"There is no index at {path}; index the collection first.")
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)) as db:
        if db.execute("SELECT 1 FROM layers WHERE name = ?", (layer,)).fetchone() is None:
            indexed = ", ".join(r[0] for r in db.execute("SELECT name FROM layers ORDER BY name")) or "none"
            raise IndexingError(f"Layer {layer!r} is not indexed (indexed: {indexed}).")
        paths, values, _ = _layer_maxima(db, layer)
    return paths, values


def merge(target: str | Path, shards: Sequence[str | Path]) -> Path:
    """Merge the indexes ``shards`` (same model and size) into ``target``: the union of their images."""
    target = Path(target)
    metas = []
    for shard in shards:
        with closing(sqlite3.connect(f"file:{Path(shard)}?mode=ro", uri=True)) as db:
            metas.append({k: v for k, v in db.execute("SELECT key, value FROM meta") if k != "top_stale"})
    if any(m != metas[0] for m in metas):
        raise IndexingError("These indexes were made by different models, weights or sizes; they cannot be merged.")
    with closing(_connect(target)) as db:
        with db:
            db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", metas[0].items() if metas else [])
        for shard in shards:
            db.execute("ATTACH DATABASE ? AS shard", (str(shard),))  # outside a transaction, as SQLite requires
            with db:
                for table in ("images", "layers", "maxima"):
                    db.execute(f"INSERT OR REPLACE INTO {table} SELECT * FROM shard.{table}")
            db.execute("DETACH DATABASE shard")
        _rebuild_top(db)
    return target
