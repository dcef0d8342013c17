"""The atlas: every unit of chosen layers, its top-k images over a collection of any size and its statistics,
computed in shards (in one process or on Ray) and kept as a folder a user can zip and share.

(Over 300 lines: planning shards, resuming them and running the picture phases share one build's state.)

Conventions
-----------
* **The bundle** ``ATLAS/`` (:mod:`deepvis.atlas_bundle`): ``manifest.json``, ``collection.tsv`` and
  ``atlas.sqlite`` (the records and statistics), the pictures (:mod:`deepvis.atlas_pictures`), the viewer
  (:mod:`deepvis.atlas_viewer`), and while it is built ``work/<key>.npz``, the records merged so far and which
  shards they hold.
* **Shards.**  The listing (sorted by path) is cut into runs of ``shard`` images; a shard's records are
  computed by a worker (:func:`shard_records`) and handed back (units × k records, not the images); this
  process merges each into the running records as it ends and writes them to disk (a temporary file, then
  renamed), so memory and disk stay O(units × k) whatever the collection's size.  A rerun of the same command
  (same model, layers, k, listing and shard size: the ``<key>``) reads them back and computes only the shards
  they lack; Ctrl-C loses at most the shards in flight.  Merging is exact (:mod:`deepvis.topk`), so the atlas
  equals one pass, whatever the order in which shards end.
* **Executors.**  In this process (``ray=None``), or on Ray (:mod:`deepvis.atlas_ray`): actors that each build
  the model once (from a picklable ``loader``) and are restarted, their shard retried, if they die.
* A broken file is skipped and listed with its one-line reason; it is not an error.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from deepvis import collection as coll
from deepvis.activations import capture
from deepvis.images import to_batch
from deepvis.index import read_view
from deepvis.models import REGISTRY, LoadedModel, load_model
from deepvis.progress import Progress
from deepvis.settings import Settings
from deepvis.atlas_bundle import (FORMAT, LISTING, MANIFEST, TABLE, WORK, AtlasError, check_model, is_atlas,
                                  manifest, top, unit_stats, write_atomic, write_bundle)
from deepvis.topk import LayerTop

__all__ = ["AtlasError", "Summary", "build", "check_model", "default_loader", "is_atlas", "manifest",
           "shard_records", "top", "unit_stats"]

SHARD = 256  # images per shard
BATCH = 16  # images per forward pass inside a shard


@dataclass
class Summary:
    """What :func:`build` returns."""

    path: str
    layers: tuple[str, ...]
    units: int
    images: int
    shards: int
    computed: int  # shards computed by this run (the others were read back)
    skipped: tuple[tuple[str, str], ...]
    seconds: float
    executor: str
    crops: int = 0  # strips of top-k crops written by this run
    optimized: int = 0  # units optimized by this run
    began: float = 0.0

    def to_dict(self) -> dict:
        return {"atlas": self.path, "layers": list(self.layers), "units": self.units, "images": self.images,
                "shards": self.shards, "computed": self.computed, "skipped": [p for p, _ in self.skipped],
                "reasons": {p: r for p, r in self.skipped}, "crops": self.crops, "optimized": self.optimized,
                "seconds": round(self.seconds, 2), "executor": self.executor,
                "viewer": str(Path(self.path) / "index.html")}


def default_loader(loaded: LoadedModel) -> Callable[[], LoadedModel] | None:
    """A picklable way to build ``loaded`` again in another process: a registered model by name and weights
    (on the worker's best device); None for a network of one's own (the caller passes its own loader)."""
    if loaded.spec.name in REGISTRY:
        return partial(load_model, loaded.spec.name, loaded.weights, None, loaded.seed)
    return None


def shard_records(loaded: LoadedModel, entries: Sequence[tuple[int, str]], names: Sequence[str], k: int,
                  batch: int = BATCH) -> bytes:
    """One shard's records: ``entries`` are ``(image number, path)``; returns the bytes a shard file holds
    (:func:`_pack`), each layer's :class:`LayerTop` and the broken files' reasons."""
    tops: dict[str, LayerTop] = {}
    broken: list[tuple[str, str]] = []
    for start in range(0, len(entries), batch):
        part = entries[start:start + batch]
        views = [read_view(path, loaded) for _, path in part]
        broken += [(path, view) for (_, path), view in zip(part, views) if isinstance(view, str)]
        good = [(number, view) for (number, _), view in zip(part, views) if not isinstance(view, str)]
        if not good:
            continue
        inputs = to_batch([v for _, v in good], loaded.spec.normalization, loaded.device)
        acts = capture(loaded.module, inputs, list(names))
        numbers = np.array([n for n, _ in good], np.int64)
        for name in names:
            records = LayerTop.of_batch(acts[name], numbers, k)
            tops[name] = tops[name].merge(records) if name in tops else records
    for name in names:
        if name not in tops:  # a shard of broken files only
            tops[name] = LayerTop.empty(k, loaded.layer(name).shape[0])
    return _pack(tops, broken)


def _pack(tops: dict[str, LayerTop], broken: list[tuple[str, str]], done: Sequence[int] = ()) -> bytes:
    """Records as bytes (``.npz``, no pickle): each layer's arrays and a JSON line of names, broken, done."""
    names = list(tops)
    arrays = {"meta": np.array(json.dumps({"layers": names, "broken": broken, "done": sorted(done)}))}
    for i, name in enumerate(names):
        top = tops[name]
        arrays.update({f"{i}.values": top.values, f"{i}.images": top.images, f"{i}.positions": top.positions,
                       f"{i}.count": np.int64(top.count), f"{i}.sums": top.sums, f"{i}.silent": top.silent})
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _unpack(data: bytes) -> tuple[dict[str, LayerTop], list[tuple[str, str]], list[int]]:
    with np.load(io.BytesIO(data), allow_pickle=False) as f:
        meta = json.loads(str(f["meta"]))
        tops = {name: LayerTop(f[f"{i}.values"], f[f"{i}.images"], f[f"{i}.positions"], int(f[f"{i}.count"]),
                               f[f"{i}.sums"], f[f"{i}.silent"]) for i, name in enumerate(meta["layers"])}
    return tops, [tuple(b) for b in meta["broken"]], list(meta["done"])


def _listing_hash(listing: Sequence[coll.Entry]) -> str:
    digest = hashlib.sha256()
    for e in listing:
        digest.update(f"{e.path}\t{e.size}\t{e.mtime_ns}\n".encode())
    return digest.hexdigest()


def _check_folder(out: Path, model_key: str) -> None:
    """Refuse a folder that holds another model's atlas, or something that is not an atlas."""
    manifest = out / MANIFEST
    if manifest.is_file():
        try:
            made = json.loads(manifest.read_text())["model"]["key"]
        except (ValueError, KeyError, TypeError):
            raise AtlasError(f"{out} holds a manifest.json that is not an atlas's; choose another folder.") from None
        if made != model_key:
            raise AtlasError(f"{out} holds an atlas of {made}, not of {model_key}; choose another folder.")
    elif out.is_dir() and any(p.name not in (WORK, TABLE, LISTING, "crops", "optimized", "layers", "units",
                                             "index.html") for p in out.iterdir()):
        raise AtlasError(f"{out} is a folder with other files in it; choose an empty or new folder.")


def build(loaded: LoadedModel, source: str | Path | None, layers: Sequence[str], out: str | Path, *, k: int = 9,
          shard: int = SHARD, batch: int = BATCH, ray: str | None = None,
          loader: Callable[[], LoadedModel] | None = None, workers: int | None = None,
          optimize: str | Settings | None = None, seed: int = 0, size: int | None = None, unit_batch: int | None = None,
          compact: bool = False, crops: bool = True) -> Generator[Progress, None, Summary]:
    """Build (or finish) the atlas of ``layers`` over ``source`` in folder ``out`` (module docstring); yields
    :class:`Progress`: in images, one step per finished shard; then in units (its ``detail`` says ``"crops"``
    or ``"optimized images"``).  ``ray``: None (this process), ``"auto"`` (a local Ray, or the cluster
    ``ray start`` made here) or a cluster's address; ``loader`` builds the model on a worker (default:
    :func:`default_loader`).  ``optimize``: a preset name (:func:`deepvis.presets.resolve`) or settings under which every
    unit's image is optimized at ``size`` (default: the network's) from ``seed``, ``unit_batch`` units at a
    time (:mod:`deepvis.atlas_pictures`); ``compact``: kept as JPEG pictures only, no float pixels;
    ``crops=False``: the records without their crop strips (a smaller bundle)."""
    if k < 1:
        raise AtlasError(f"k must be at least 1, not {k}")
    if shard < 1 or batch < 1:
        raise AtlasError("the shard and batch sizes must be at least 1")
    names = [loaded.layer(name).name for name in dict.fromkeys(layers)]
    if not names:
        raise AtlasError("an atlas needs at least one layer")
    listing = coll.entries(source)
    if not listing:
        raise AtlasError(f"{source} holds no image files")
    out = Path(out).expanduser()
    key = coll.model_key(loaded)
    _check_folder(out, key)
    planned = None
    if optimize is not None:
        from deepvis import presets
        from deepvis.settings import Settings

        size = int(size or loaded.spec.input_size)
        if isinstance(optimize, Settings):
            settings, preset, name = optimize, "custom", "custom θ"
        else:
            settings, preset, name = presets.resolve(loaded, optimize), str(optimize), presets.name(loaded, optimize)
        planned = {"preset": preset, "name": name, "settings": settings.to_dict(), "seed": int(seed), "size": size,
                   "compact": bool(compact)}
        made = json.loads((out / MANIFEST).read_text()).get("optimize") if (out / MANIFEST).is_file() else None
        if made is not None and made != planned:
            raise AtlasError(f"{out} holds images optimized with preset {made['preset']} (seed {made['seed']}, "
                             f"{made['size']} px); use the same options or another folder")
    if ray is not None:
        loader = loader or default_loader(loaded)
        if loader is None:
            raise AtlasError("a network of one's own needs a loader to run on Ray (the CLI makes one from its "
                             "options); use ray=None to run in this process")
        from deepvis import atlas_ray

        atlas_ray.connect(ray)  # before any work: an unreachable address is one line, now
    records = _records(loaded, listing, names, out, k, shard, batch, ray, loader, workers, key, source, planned)
    return _build(loaded, out, records, names, k, ray, loader, workers, key, planned, unit_batch, crops)


def _build(loaded: LoadedModel, out: Path, records: Generator, names: list[str], k: int, ray: str | None, loader,
           workers: int | None, key: str, planned: dict | None, unit_batch: int | None, crops: bool = True
           ) -> Generator[Progress, None, Summary]:
    from deepvis import atlas_pictures as pictures
    from deepvis.settings import Settings

    summary = yield from records
    units = {name: list(range(loaded.layer(name).shape[0])) for name in names}
    made = json.loads((out / MANIFEST).read_text())
    if made.get("crops", True) != crops:
        write_atomic(out / MANIFEST, json.dumps({**made, "crops": crops}, indent=2).encode())
    if crops:
        summary.crops = yield from pictures.write_crops(loaded, out, units, k, partial(top, out))
    else:
        shutil.rmtree(out / "crops", ignore_errors=True)
    if planned is not None:
        run_jobs = None
        if ray is not None:
            from deepvis import atlas_ray

            run_jobs = partial(atlas_ray.run_jobs, loader, key, address=ray, workers=workers)
        summary.optimized = yield from pictures.write_optimized(
            loaded, out, units, Settings(**planned["settings"]), planned["seed"], planned["size"],
            unit_batch or pictures.BATCH, run_jobs, planned["compact"])
    from deepvis import atlas_viewer

    atlas_viewer.write(out)
    summary.seconds = time.perf_counter() - summary.began
    return summary


def _records(loaded: LoadedModel, listing: list[coll.Entry], names: list[str], out: Path, k: int, shard: int,
             batch: int, ray: str | None, loader, workers: int | None, key: str, source, planned: dict | None
             ) -> Generator[Progress, None, Summary]:
    began = time.perf_counter()
    listing_hash = _listing_hash(listing)
    run_key = hashlib.sha256(json.dumps([FORMAT, key, names, k, listing_hash, shard]).encode()).hexdigest()[:16]
    shards_count = -(-len(listing) // shard)
    if is_atlas(out):
        made = json.loads((out / MANIFEST).read_text())
        if made.get("run") == run_key:  # the records of this very command are there: only pictures may be missing
            if planned is not None and made.get("optimize") != planned:
                made["optimize"] = planned
                write_atomic(out / MANIFEST, json.dumps(made, indent=2).encode())
            yield Progress(len(listing), len(listing), resumed=True)
            return Summary(str(out), tuple(names), sum(made["layers"][n][0] for n in names), len(listing),
                           shards_count, 0, tuple(sorted(made["skipped"].items())), 0.0, "none (already there)",
                           began=began)
    state = out / WORK / f"{run_key}.npz"
    state.parent.mkdir(parents=True, exist_ok=True)
    shards = [[(i, listing[i].path) for i in range(s, min(s + shard, len(listing)))]
              for s in range(0, len(listing), shard)]
    merged: dict[str, LayerTop] = {}
    skipped: list[tuple[str, str]] = []
    done: set[int] = set()
    if state.is_file():
        try:
            merged, skipped, finished = _unpack(state.read_bytes())
            done = set(finished)
        except (OSError, ValueError, KeyError):  # a state from an older format: start again
            merged, skipped, done = {}, [], set()
    todo = [n for n in range(len(shards)) if n not in done]
    done_images = sum(len(shards[n]) for n in done)
    yield Progress(done_images, len(listing), tuple(skipped), resumed=True)
    if ray is None:
        results: Iterator[tuple[int, bytes]] = ((n, shard_records(loaded, shards[n], names, k, batch)) for n in todo)
        executor = "this process"
    else:
        from deepvis import atlas_ray

        results = atlas_ray.run_jobs(loader, key, shard_records, [(n, shards[n], names, k, batch) for n in todo],
                                     ray, workers)
        executor = "ray"
    computed = 0
    try:
        for number, data in results:
            if number in done:  # a retried shard that had already come back: counted once
                continue
            tops, broken, _ = _unpack(data)
            for name, top in tops.items():
                merged[name] = merged[name].merge(top) if name in merged else top
            skipped += broken
            done.add(number)
            computed += 1
            write_atomic(state, _pack(merged, skipped, sorted(done)))
            done_images += len(shards[number])
            yield Progress(done_images, len(listing), tuple(skipped))
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()
    write_bundle(loaded, out, listing, names, merged, k, shard, key, skipped, source,
                  time.perf_counter() - began, run_key, planned)
    state.unlink()
    if not any(state.parent.iterdir()):
        state.parent.rmdir()
    return Summary(str(out), tuple(names), sum(merged[n].channels for n in names), len(listing), len(shards),
                   computed, tuple(sorted(skipped)), time.perf_counter() - began, executor, began=began)
