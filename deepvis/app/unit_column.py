"""Streamlit widgets of the unit view: the clickable grid, unit stepping, links, collections and indexing,
the unit's optimized image, top images and weights, the photo's occlusion map, and the collection's map.

The third module that touches Streamlit (with :mod:`deepvis.ui` and :mod:`deepvis.ui_runs`): the
Activations page's dashboard widgets, apart so each stays readable.  (About 570 lines: every widget of the
unit's column and the panels under the grid, which share its session keys and background jobs.)

Conventions
-----------
* **Links.**  The URL's query parameters ``model``, ``weights``, ``layer`` and ``unit``
  say which unit is shown.  :func:`open_link` reads them once per session, before any
  widget is drawn, and puts them into the widgets' state; :func:`write_link` keeps the
  URL in step afterwards.  A parameter that names nothing (an unknown model, a layer
  the model lacks, a unit out of range) is dropped with one ``st.warning`` line.
* **Indexing runs on a background worker**: one thread per (index file, layers),
  shared by every session that asks for the same index, so the page stays responsive;
  the page polls its progress in a small fragment and reruns when it ends.  An
  interrupted or failed job keeps what it committed (:mod:`deepvis.index`).
* **Uploaded photos** are written once to ``<cache>/uploads/<sha1 of their names and
  bytes>/`` and indexed as a folder.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import streamlit as st
from streamlit_image_coordinates import streamlit_image_coordinates

from deepvis import collection as coll
from deepvis import index
from deepvis.models import REGISTRY, LoadedModel
from deepvis.render import GridLayout
from deepvis.targets import Target

COLLECTIONS = ("Bundled photos", "A folder on this machine", "Upload photos")


# ------------------------------------------------------------------------------------------------ links

def open_link(page: str) -> None:
    """Put the URL's model, weights, layer and unit into the widgets' state, once per session."""
    if st.session_state.get(f"{page}_link_read"):
        return
    st.session_state[f"{page}_link_read"] = True
    params = st.query_params
    model = params.get("model")
    if model is not None and model not in REGISTRY:
        st.warning(f"The link names an unknown model {model!r}; showing the default one.")
        return
    if model:
        st.session_state["model_name"] = model
    if params.get("weights") in ("default", "random"):
        st.session_state["model_weights"] = params["weights"]
    if params.get("layer"):
        st.session_state[f"{page}_link_layer"] = params["layer"]
    if params.get("unit", "").isdigit():
        st.session_state[f"{page}_link_unit"] = int(params["unit"])


def linked_layer(loaded: LoadedModel, page: str, layer_key: str) -> None:
    """Apply a linked layer (after the model is known); one warning if the model has no such layer."""
    wanted = st.session_state.pop(f"{page}_link_layer", None)
    if wanted is None:
        return
    try:
        st.session_state[layer_key] = loaded.layer(wanted).name
    except ValueError:
        st.warning(f"The link's layer {wanted!r} is not a layer of {loaded.spec.title}; showing the default one.")


def linked_unit(page: str, unit_key: str, channels: int) -> None:
    wanted = st.session_state.pop(f"{page}_link_unit", None)
    if wanted is None:
        return
    if wanted < channels:
        st.session_state[unit_key] = wanted
    else:
        st.warning(f"The link's unit {wanted} does not exist here (units 0-{channels - 1}); showing unit 0.")


def write_link(loaded: LoadedModel, layer: str, unit: int) -> None:
    """Keep the URL on the unit shown (so it can be bookmarked, shared and reopened)."""
    wanted = {"model": loaded.spec.name, "weights": loaded.weights, "layer": layer, "unit": str(unit)}
    if {k: st.query_params.get(k) for k in wanted} != wanted:
        st.query_params.update(wanted)


# ------------------------------------------------------------------------------------------------ units

def _step(unit_key: str, delta: int, channels: int) -> None:
    st.session_state[unit_key] = (int(st.session_state.get(unit_key, 0)) + delta) % channels


def unit_stepper(unit_key: str, channels: int, label: str = "Unit (channel)") -> int:
    """◀ / number / ▶: the unit, stepping round the layer's channels."""
    if st.session_state.get(unit_key, 0) >= channels:
        st.session_state[unit_key] = 0
    back, number, forward = st.columns([1, 3, 1], vertical_alignment="bottom")
    back.button("◀", key=f"{unit_key}_prev", on_click=_step, args=(unit_key, -1, channels), help="Previous unit",
                width="stretch")
    forward.button("▶", key=f"{unit_key}_next", on_click=_step, args=(unit_key, 1, channels), help="Next unit",
                   width="stretch")
    return int(number.number_input(label, 0, channels - 1, key=unit_key))


def clickable_grid(image: np.ndarray, layout: GridLayout, unit_key: str, key: str) -> None:
    """Show the grid; a click on a tile makes its channel the unit (in the click's callback, which runs before
    the next script run draws the unit's widgets)."""
    def chosen() -> None:
        click = st.session_state.get(key)
        if click:
            scale = image.shape[1] / max(1, click["width"])
            channel = layout.channel_at(int(click["y"] * scale), int(click["x"] * scale))
            if channel is not None:
                st.session_state[unit_key] = channel

    streamlit_image_coordinates(image, key=key, width="stretch", on_click=chosen)


# ------------------------------------------------------------------------------------------------ collections

def _save_uploads(files: list) -> Path:
    digest = hashlib.sha1()
    for upload in files:
        digest.update(upload.name.encode())
        digest.update(upload.getvalue())
    folder = coll.cache_dir() / "uploads" / digest.hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    for number, upload in enumerate(files):
        name = Path(upload.name).name or f"upload_{number}"
        target = folder / f"{number:05d}_{name}"
        if not target.exists():
            target.write_bytes(upload.getvalue())
    return folder


def collection_picker(key: str) -> str | None:
    """The collection whose top images are shown: ``"samples"``, a folder path, or None while none is given."""
    kind = st.radio("Top images from", COLLECTIONS, key=f"{key}_collection", horizontal=True)
    if kind == COLLECTIONS[0]:
        return coll.DEFAULT_NAME
    if kind == COLLECTIONS[1]:
        path = st.text_input("Folder (searched with its subfolders)", key=f"{key}_folder",
                             placeholder="/data/my_photos")
        return path.strip() or None
    files = st.file_uploader("Photos", accept_multiple_files=True, key=f"{key}_uploads")
    return str(_save_uploads(files)) if files else None


def chosen_collection(key: str) -> str | None:
    """The collection :func:`collection_picker` (drawn elsewhere on the page) has chosen, as it last returned."""
    return st.session_state.get(f"{key}_chosen_collection")


@dataclass
class Job:
    """Background work (indexing a collection, optimizing a layer's patterns), shared by every session that
    asks for the same thing; ``progress`` has ``done`` and ``total``."""

    thread: threading.Thread | None = None
    progress: index.Progress | object | None = None  # an index.Progress or a patterns.Progress
    summary: index.Summary | None = None
    error: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()


@st.cache_resource(show_spinner=False)
def _jobs() -> dict[tuple, Job]:
    return {}


def _work(job: Job, progress) -> None:
    try:
        while True:
            job.progress = next(progress)
            if job.stop.is_set():
                progress.close()
                job.error = "stopped; what was finished is kept, and the next start goes on from there"
                return
    except StopIteration as stop:
        job.summary = stop.value
    except (ValueError, OSError, RuntimeError) as exc:
        job.error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def indexed(loaded: LoadedModel, source: str, layer: str | tuple[str, ...]) -> Path | None:
    """The collection's index path once it covers ``layer`` (or each of several); meanwhile offer, run and
    show the indexing."""
    layers = (layer,) if isinstance(layer, str) else tuple(layer)
    path = index.index_path(loaded, source)
    job = _jobs().setdefault(("index", str(path), layers), Job())
    if job.running:
        _poll(job, "Indexing…", "photos")
        return None
    _report(job, "Indexing")
    try:
        listing = coll.entries(source)
    except coll.CollectionError as exc:
        st.error(str(exc))
        return None
    states = [index.status(path, listing, name) for name in layers]
    state = max(states, key=lambda st_: st_.to_read)
    if job.summary is not None and job.summary.skipped:
        names = ", ".join(Path(p).name for p, _ in job.summary.skipped[:5])
        more = f" and {len(job.summary.skipped) - 5} more" if len(job.summary.skipped) > 5 else ""
        st.caption(f"Skipped {len(job.summary.skipped)} unreadable file(s): {names}{more}.")
    if all(one.ready for one in states):
        return path
    if not listing:
        st.info("This collection has no images (JPEG, PNG, GIF, WebP, BMP or TIFF files).")
        return None
    what = f"{state.to_read} of {len(listing)} photos" if state.to_read < len(listing) else f"{len(listing)} photos"
    if st.button(f"Index {what} for {' and '.join(layers)}", key=f"index_{path}_{'_'.join(layers)}", type="primary",
                 help="Reads each photo once, on a background worker, and keeps each unit's best images on disk."):
        _start(job, lambda: index.build(loaded, source, list(layers), path=path))
        _poll(job, "Indexing…", "photos")
    return None


def _report(job: Job, what: str) -> None:
    """One line on how the job's last run ended, if it did not finish."""
    if job.error and job.error.startswith("stopped"):
        st.info(f"{what} {job.error}.")
    elif job.error:
        st.error(f"{what} stopped: {job.error}")


def _start(job: Job, work) -> None:
    """Run the generator ``work()`` makes on a background thread, unless the job runs already."""
    with job.lock:
        if not job.running:
            job.error, job.summary, job.progress = None, None, None
            job.stop.clear()
            job.thread = threading.Thread(target=_work, args=(job, work()), daemon=True, name="deepvis-job")
            job.thread.start()


def _poll(job: Job, doing: str, noun: str) -> None:
    @st.fragment(run_every=0.5)
    def show() -> None:
        step = job.progress
        done, total = (step.done, step.total) if step else (0, 1)
        bar, stop = st.columns([5, 1], vertical_alignment="bottom")
        bar.progress(done / max(1, total), text=f"{doing} {done} of {total} {noun}")
        if stop.button("Stop", key=f"stop_{id(job)}", help="Stops after the step in progress; finished work is kept."):
            job.stop.set()
        if not job.running:
            st.rerun()

    show()


def pattern_grid(loaded: LoadedModel, layer: str, unit: int, key: str) -> tuple[np.ndarray, GridLayout]:
    """Pattern mode (the toolbox's ``s`` key): each channel's optimized image under the chosen preset, from the
    disk cache; the missing ones are optimized on request, in batches, on a background worker."""
    from deepvis import patterns
    from deepvis.render import image_grid

    choice, settings = _preset(loaded, key)
    targets = [Target(layer, c) for c in range(loaded.layer(layer).shape[0])]
    thumbs = patterns.thumbnails(loaded, targets, settings)
    missing = sum(t is None for t in thumbs)
    job = _jobs().setdefault(("patterns", coll.model_key(loaded), layer, choice, settings), Job())
    if job.running:
        _poll(job, "Optimizing…", "channels")
    elif missing:
        _report(job, "Optimizing")
        if st.button(f"Optimize the {missing} missing patterns ({settings.steps} iterations each)", key=f"{key}_fill",
                     type="primary", help="In batches of 8 on a background worker; each batch is kept on disk as it "
                     "ends, so an interruption loses at most one batch."):
            _start(job, lambda: patterns.compute(loaded, targets, settings))
            _poll(job, "Optimizing…", "channels")
    return image_grid(thumbs, patterns.THUMB, highlight=unit)


def _preset(loaded: LoadedModel, key: str) -> tuple[str, object]:
    """The chosen preset's name and settings (the unit column's choice; calibrated row 3 by default)."""
    from deepvis import presets

    options = presets.choices(loaded.spec.name, photo=False)
    if st.session_state.get(f"{key}_preset") not in options:  # the model's calibrated row 3, else Table 1's
        st.session_state[f"{key}_preset"] = "3" if "3" in options else "table1:3"
    return st.session_state[f"{key}_preset"], options[st.session_state[f"{key}_preset"]]


def _with_bar(work, text: str, noun: str = ""):
    """Run a generator to its end under a progress bar; it yields a fraction done, or a step with ``done`` and
    ``total``.  Returns its value; the bar is gone afterwards, also when it raises."""
    bar = st.progress(0.0, text=text)
    try:
        while True:
            try:
                step = next(work)
            except StopIteration as done:
                return done.value
            if isinstance(step, float):
                bar.progress(step, text=text)
            else:
                bar.progress(step.done / max(step.total, 1), text=f"{text} {step.done} of {step.total} {noun}")
    finally:
        bar.empty()


# ------------------------------------------------------------------------------------------------ unit column

def unit_summary(result, unit: int) -> str:
    """``**Unit 7** · max 1.87 · mean 0.246 · strongest at (y 13, x 5)`` for an :class:`ImageAnalysis`."""
    record = result.stats.as_records()[unit]
    where = f" · strongest at (y {record['argmax'][0]}, x {record['argmax'][1]})" if result.is_spatial else ""
    return f"**Unit {unit}** · max {record['max']:.3g} · mean {record['mean']:.3g}{where}"


def optimized_image(loaded: LoadedModel, layer: str, unit: int, key: str) -> None:
    """The unit's optimized image under the chosen preset: from the disk cache at once, else on request."""
    from deepvis import patterns, presets
    from deepvis.render import upscale

    _preset(loaded, key)  # puts the default into the widget's state
    options = presets.choices(loaded.spec.name, photo=False)
    choice = st.selectbox("Preset", list(options), key=f"{key}_preset",
                          format_func=lambda c: presets.name(loaded.spec.name, c),
                          help="Also the preset of pattern mode's grid.")
    settings = options[choice]
    target = Target(layer, unit)
    found = patterns.load(loaded, target, settings)
    if found is None and st.button(f"Optimize unit {unit} ({settings.steps} iterations)", key=f"{key}_optimize",
                                   help="Gradient ascent from seeded noise with this preset; kept on disk, so "
                                        "the next visit shows it at once."):
        try:
            found = _with_bar(patterns.compute_one(loaded, target, settings), "Optimizing…")
        except ValueError as exc:
            st.error(f"Cannot optimize this unit: {exc}")
    if found is not None:
        name = presets.name(loaded.spec.name, choice)
        box = patterns.field_of(loaded, target, found.x.shape[0])
        whole, part = st.columns(2) if box != (0, 0, *found.x.shape[:2]) else (st.container(), None)
        whole.image(patterns.shown(found), output_format="PNG", width="stretch",
                    caption=f"Optimized ({name}), objective {found.objective:.3g}; scaled about zero")
        if part is not None:
            crop = patterns.shown(found, box)
            part.image(upscale(crop, 224, smooth=False), output_format="PNG", width="stretch",
                       caption=f"The {box[2] - box[0]} × {box[3] - box[1]} px the unit sees, enlarged")


@st.cache_data(show_spinner="Cropping the top images…", max_entries=64)
def _top_pictures(name: str, weights: str, seed: int, device: str, hits: tuple[index.Hit, ...], layer: str,
                  unit: int, mode: str) -> tuple[list[np.ndarray], list[np.ndarray], str]:
    """The hits' crops and backward images, once per (model, hits, unit, mode): not again on every rerun."""
    from deepvis import units
    from deepvis.ui import shared_model

    loaded = shared_model(name, weights, seed, device)
    backward, used = units.top_backward(loaded, layer, unit, hits, mode)
    return units.top_crops(loaded, layer, hits), backward, used


def top_images(loaded: LoadedModel, layer: str, unit: int, key: str, modes: tuple[str, ...]) -> None:
    """The unit's top-9 crops from the chosen collection and their backward images (a mode of ``modes``;
    guided backprop by default: on Lite0 the toolbox's deconvnet gives a checkerboard, see README)."""
    from deepvis import units

    source = collection_picker(key)
    st.session_state[f"{key}_chosen_collection"] = source
    if source is None:
        return
    path = indexed(loaded, source, layer)
    if path is None:
        return
    hits = index.top(path, layer, unit, 9)
    if not hits:
        st.info("No readable photo in this collection.")
        return
    default = "guided" if "guided" in modes else modes[0]
    if st.session_state.get(f"{key}_top_mode") not in modes:
        st.session_state[f"{key}_top_mode"] = default
    mode = st.radio("Backward images of the top 9", modes, key=f"{key}_top_mode", horizontal=True,
                    help="The toolbox shows deconvnet images here; guided backprop (the default) is clearer on "
                         "networks with stride-2 depthwise convolutions, where deconvnet makes a checkerboard.")
    crops, backward, used = _top_pictures(loaded.spec.name, loaded.weights, loaded.seed, str(loaded.device),
                                          tuple(hits), layer, unit, mode)
    for title, pictures in (("Top 9: the part each photo's strongest position sees", crops),
                            (f"Their {used} images", backward)):
        st.caption(title)
        for row in range(0, len(pictures), 3):
            cells = st.columns(3, gap="small")
            for cell, picture, hit, rank in zip(cells, pictures[row:row + 3], hits[row:row + 3], range(row, row + 3)):
                cell.image(picture, caption=units.hit_label(rank + 1, hit) if pictures is crops else None,
                           output_format="PNG", width="stretch")


# ------------------------------------------------------------------------------------------------ occlusion

PATCHES, STRIDES = (16, 24, 32, 48, 64), (8, 16, 32)


def occlusion_panel(loaded: LoadedModel, view: np.ndarray, layer: str, unit: int, key: str) -> None:
    """Zeiler & Fergus's occlusion map of the shown photo (:mod:`deepvis.occlusion`): patch, stride and target
    chosen here, computed on request with a progress bar, kept for the photo, drawn over it."""
    from deepvis.occlusion import OcclusionError, occlude
    from deepvis.render import heat_colors, overlay, png_bytes, to_uint8, upscale

    pick_patch, pick_stride, pick_target = st.columns(3)
    patch = pick_patch.select_slider("Patch (px)", PATCHES, value=32, key=f"{key}_occ_patch")
    stride = pick_stride.select_slider("Stride (px)", STRIDES, value=16, key=f"{key}_occ_stride")
    target = pick_target.radio("Target", ("top class", f"unit {unit}"), key=f"{key}_occ_target",
                               help="How much covering each part lowers the top class's probability, or this "
                                    "unit's activation summed over its map.")
    aim = (layer, unit) if target != "top class" else (None, None)
    wanted = (hashlib.sha1(view.tobytes()).hexdigest(), loaded.spec.name, loaded.weights, patch, stride, *aim)
    kept = st.session_state.get(f"{key}_occ_result")
    if kept is None or kept[0] != wanted:
        if not st.button("Compute the occlusion map", key=f"{key}_occ_go"):
            st.caption("A grey square (the model's mean colour) slides over the photo; the map shows how much the "
                       "target drops where it covers. About 1.5 s at patch 32, stride 16 on a 2-core CPU.")
            return
        try:
            kept = (wanted, _with_bar(occlude(loaded, view, patch, stride, *aim), "Occluding…", "squares"))
        except (OcclusionError, ValueError) as exc:
            st.error(str(exc))
            return
        st.session_state[f"{key}_occ_result"] = kept
    result = kept[1]
    drops = np.clip(result.drops, 0, None)
    heat, blend = st.columns(2)
    heat.image(png_bytes(upscale(heat_colors(to_uint8(drops)), 224)), caption="Drop (bright = covering hurts most)",
               output_format="PNG", width="stretch")
    blend.image(png_bytes(upscale(overlay(view, drops), 224)), caption="Overlaid on the input", output_format="PNG",
                width="stretch")
    st.caption(f"{result.target}: {result.baseline:.4g} on the whole photo; the largest mean drop is "
               f"{result.drops.max():.4g} ({result.windows} squares).")
    from deepvis.display import npy_bytes

    st.download_button("Download the map (float .npy)", npy_bytes(result.drops), f"occlusion_{patch}_{stride}.npy",
                       "application/octet-stream", on_click="ignore", key=f"{key}_occ_npy")


# ------------------------------------------------------------------------------------------------ weights

def weights_panel(loaded: LoadedModel, layer: str, unit: int) -> None:
    """The raw weights behind ``unit`` (:mod:`deepvis.weights`): its filter's kernels, and their norms."""
    from deepvis.render import png_bytes, upscale
    from deepvis.weights import conv_weights, filter_tiles, kernel_norms

    found = conv_weights(loaded, layer)
    if found is None or unit >= found.weight.shape[0]:
        st.caption(f"{layer} has no single convolution above it (an addition, a pooling or a linear layer).")
        return
    tiles, _ = filter_tiles(found, unit)
    shape = " × ".join(map(str, found.weight.shape[1:]))
    kind = "depthwise: one kernel" if found.depthwise else f"{found.weight.shape[1]} kernels, one per input channel"
    st.image(png_bytes(upscale(tiles, 224, smooth=False)), output_format="PNG", width="stretch",
             caption=f"Filter {unit} of {found.conv} ({shape}; {kind}), scaled about zero: grey = 0")
    if not found.depthwise and found.weight.shape[1] > 1:
        norms = kernel_norms(found)[unit]
        st.bar_chart(norms, height=140, x_label="input channel", y_label="kernel norm")


# ------------------------------------------------------------------------------------------------ map

@st.cache_data(show_spinner=False, max_entries=8)
def _embedding(path: str, modified: float, layer: str, logits: str, names: tuple[str, ...]):
    from deepvis import embed

    return embed.embed(path, layer, logits, names)


def _open_clicked(key: str, paths: list[str]) -> None:
    """The map's click: the point's photo becomes the page's opened photo (:func:`deepvis.ui.image_input`)."""
    state = st.session_state.get(f"{key}_map")
    points = state.selection.points if state and state.selection else []
    if points:
        chosen = points[0]["customdata"]
        path = Path(paths[int(chosen[0] if isinstance(chosen, list) else chosen)])
        try:
            st.session_state[f"{key}_opened"] = (path.read_bytes(), path.name)
        except OSError as exc:  # moved or deleted since it was indexed
            st.session_state[f"{key}_map_error"] = f"Cannot open {path.name}: {exc.strerror or exc}."


_THUMBS: dict[tuple[str, float], list[str]] = {}  # (index file, its modification time) -> data URLs, newest last
_THUMBS_LOCK = threading.Lock()

# Streamlit's Plotly chart has no hover event and its tooltips take no pictures, so a small inline component
# (no frame of its own, nothing fetched) finds the chart by its layout's ``meta`` and runs the same hover script
# as the map's HTML file on it (deepvis.embed.HOVER_JS).
_FIND_CHART_JS = """
export default function(component) {
  const { data } = component;
  const attach = () => {
    for (const plot of document.querySelectorAll('.js-plotly-plot')) {
      if (plot.layout && plot.layout.meta === data.meta && plot.on) deepvisHover(plot, data.thumbs);
    }
    for (const box of document.querySelectorAll('img.deepvis-hover')) {  // a chart that went mid-hover
      if (!box.deepvisPlot.isConnected) box.remove();
    }
  };
  attach();
  const timer = setInterval(attach, 400);  // the chart is drawn after this runs, and again on each rerun
  return () => {
    clearInterval(timer);
    document.querySelectorAll('img.deepvis-hover').forEach((box) => box.remove());
  };
}
"""


@st.cache_resource
def _hover_component():
    from deepvis.embed import HOVER_JS

    return st.components.v2.component("deepvis_map_hover", js=HOVER_JS + _FIND_CHART_JS, isolate_styles=False)


def _thumbnails(paths: list[str], path: Path, modified: float) -> list[str]:
    """Every photo's thumbnail, made once per state of the index (a progress bar meanwhile)."""
    from deepvis import embed

    with _THUMBS_LOCK:
        found = _THUMBS.get((str(path), modified))
    if found is None:
        def work():
            made = []
            for i, thumb in enumerate(embed.thumbnails(paths, 128)):
                made.append(thumb)
                yield (i + 1) / len(paths)
            return made

        found = _with_bar(work(), "Making thumbnails…")
        with _THUMBS_LOCK:
            _THUMBS[(str(path), modified)] = found
            while len(_THUMBS) > 4:
                del _THUMBS[next(iter(_THUMBS))]
    return found


def representation_map(loaded: LoadedModel, layer: str, key: str) -> None:
    """A t-SNE map of ``layer`` over the top images' collection (:mod:`deepvis.embed`), coloured by predicted
    class; pointing at a point shows its thumbnail, clicking it opens its photo on this page."""
    from deepvis import embed

    source = chosen_collection(key)
    if source is None:
        st.caption("Choose a collection under “What excites it most” first.")
        return
    path = indexed(loaded, source, (layer, loaded.logits_layer))
    if path is None:
        return
    try:
        with st.spinner("Embedding (t-SNE)…"):
            wal = path.with_name(path.name + "-wal")  # SQLite's write-ahead log: new rows land there first
            modified = max(path.stat().st_mtime, wal.stat().st_mtime if wal.exists() else 0.0)
            result = _embedding(str(path), modified, layer, loaded.logits_layer, tuple(loaded.class_names))
    except index.IndexingError as exc:
        st.info(str(exc))
        return
    thumbs = _thumbnails(result.paths, path, modified)
    chart = embed.figure(result).update_layout(meta=f"deepvis-map-{key}")
    st.plotly_chart(chart, key=f"{key}_map", on_select=functools.partial(_open_clicked, key, result.paths),
                    selection_mode="points")
    _hover_component()(data={"meta": f"deepvis-map-{key}", "thumbs": thumbs}, key=f"{key}_map_hover")
    st.caption(f"{len(result.paths)} photos, one point each: near points look alike to {layer}. Point at one to "
               "see its photo; click it to make it this page's photo.")
    if error := st.session_state.pop(f"{key}_map_error", None):
        st.warning(error)
