"""The unit column of the Activations page: one unit's numbers and map, its optimized image, and the photos
of a collection that excite it most.

Conventions
-----------
* The column follows the unit chosen on the page (stepper, grid click, chart click,
  link); everything here is drawn from that unit and its layer.
* The optimized image comes from the disk cache of :mod:`deepvis.patterns` under the
  preset chosen here (:func:`chosen_preset`, also the preset of pattern mode's grid,
  :func:`deepvis.app.grid.pattern_grid`); a missing one is optimized on request under a
  progress bar (:func:`deepvis.app.jobs.with_bar`) and kept.
* Top images come from the chosen collection's index (:mod:`deepvis.app.photo_sets`) or an
  atlas (:mod:`deepvis.app.atlases`), whose optimized images are used too;
  their crops and backward images are cached per (model, hits, unit, mode).  A small
  network's pictures (its view, its optimized image, a top image's receptive field) are
  enlarged by a whole factor with no smoothing (:func:`deepvis.app.inputs.enlarged`).
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from deepvis import index, patterns, presets, receptive, units
from deepvis.activations import ImageAnalysis
from deepvis.app import atlases, jobs, photo_sets
from deepvis.app.inputs import ZOOM, enlarged, show_png
from deepvis.app.model import backprop_modes, shared_model
from deepvis.errors import DeepvisError
from deepvis.models import LoadedModel
from deepvis.render import heat_colors, overlay, to_uint8, upscale
from deepvis.settings import Settings
from deepvis.targets import Target


def unit_summary(result: ImageAnalysis, unit: int) -> str:
    """``**Unit 7** · max 1.87 · mean 0.246 · strongest at (y 13, x 5)``."""
    record = result.stats.as_records()[unit]
    where = f" · strongest at (y {record['argmax'][0]}, x {record['argmax'][1]})" if result.is_spatial else ""
    return f"**Unit {unit}** · max {record['max']:.3g} · mean {record['mean']:.3g}{where}"


def unit_maps(result: ImageAnalysis, unit: int) -> None:
    """The unit's numbers, then (for a spatial layer) its activation map and the map over the photo."""
    st.markdown(unit_summary(result, unit))
    if result.is_spatial:
        zoom, blend = st.columns(2)
        with zoom:
            show_png(upscale(heat_colors(to_uint8(result.channel_map(unit))), 224, smooth=False),
                     caption="Activation map (bright = strong)", width="stretch")
        with blend:
            show_png(upscale(overlay(enlarged(result.view), result.channel_map(unit)), 224),
                     caption="Overlaid on the input", width="stretch")


def chosen_preset(loaded: LoadedModel, key: str) -> tuple[str, Settings]:
    """The chosen preset's name and settings (calibrated row 3 by default, else Table 1's)."""
    options = presets.choices(loaded, photo=False)
    if st.session_state.get(f"{key}_preset") not in options:
        st.session_state[f"{key}_preset"] = "3" if "3" in options else "table1:3"
    return st.session_state[f"{key}_preset"], options[st.session_state[f"{key}_preset"]]


def optimized_image(loaded: LoadedModel, layer: str, unit: int, key: str) -> None:
    """The unit's optimized image under the chosen preset: from the disk cache at once, else on request."""
    chosen_preset(loaded, key)  # puts the default into the widget's state
    options = presets.choices(loaded, photo=False)
    choice = st.selectbox("Preset", list(options), key=f"{key}_preset",
                          format_func=lambda c: presets.name(loaded, c),
                          help="Also the preset of pattern mode's grid.")
    settings = options[choice]
    target = Target(layer, unit)
    found = patterns.load(loaded, target, settings)
    from_atlas = atlases.optimized(loaded, layer, unit, settings) if found is None else None
    if from_atlas is not None:
        found, where = from_atlas
        st.caption(where)
    slot = st.empty()
    if found is None and slot.button(f"Optimize unit {unit} ({settings.steps} iterations)", key=f"{key}_optimize",
                                     help="Gradient ascent from seeded noise with this preset; kept on disk, so "
                                          "the next visit shows it at once."):
        try:
            found = jobs.with_bar(patterns.compute_one(loaded, target, settings), "Optimizing…")
            slot.empty()  # done: the image replaces the button
        except DeepvisError as exc:
            st.error(f"Cannot optimize this unit: {exc}")
    if found is not None:
        name = presets.name(loaded, choice)
        box = patterns.field_of(loaded, target, found.x.shape[0])
        whole, part = st.columns(2) if box != (0, 0, *found.x.shape[:2]) else (st.container(), None)
        whole.image(enlarged(patterns.shown(found)), output_format="PNG", width="stretch",
                    caption=f"Optimized ({name}), objective {found.objective:.3g}; scaled about zero")
        if part is not None:
            crop = patterns.shown(found, box)
            part.image(enlarged(crop), output_format="PNG", width="stretch",
                       caption=f"The {box[2] - box[0]} × {box[3] - box[1]} px the unit sees, enlarged")
        if found.objective == 0:
            st.caption("Its objective stayed 0: nothing turned the unit on from this start, not even a gradient let "
                       "through the rectifiers that feed it (it may be dead). The picture shows nothing it wants.")


@st.cache_data(show_spinner="Cropping the top images…", max_entries=64)
def _top_pictures(name: str, weights: str, seed: int, device: str, hits: tuple[index.Hit, ...], layer: str,
                  unit: int, mode: str) -> tuple[list[np.ndarray], list[np.ndarray], str]:
    """The hits' crops and backward images, once per (model, hits, unit, mode): not again on every rerun."""
    loaded = shared_model(name, weights, seed, device)
    size = units.CROP
    if loaded.spec.input_size < ZOOM and hits:  # a small network: its pixels, enlarged with no smoothing
        top, left, bottom, right = receptive.field(loaded, layer, hits[0].y, hits[0].x, clip=False)
        size = min(size, max(bottom - top, right - left))
    backward, used = units.top_backward(loaded, layer, unit, hits, mode, size)
    crops = units.top_crops(loaded, layer, hits, size)
    return [enlarged(c, units.CROP) for c in crops], [enlarged(b, units.CROP) for b in backward], used


def top_images(loaded: LoadedModel, layer: str, unit: int, key: str) -> None:
    """The unit's top-9 crops from the chosen collection and their backward images (a mode the network allows;
    guided backprop by default: on Lite0 the toolbox's deconvnet gives a checkerboard, see docs/pages.md)."""
    found = atlases.with_crops(loaded, layer)
    source = photo_sets.collection_picker(key, tuple(folder for folder, _ in found))
    if source is None:
        return
    if source.startswith(atlases.PREFIX):
        folder = source[len(atlases.PREFIX):]
        atlases.show_top(folder, dict(found)[folder], layer, unit)
        return
    path = photo_sets.indexed(loaded, source, layer)
    if path is None:
        return
    hits = index.top(path, layer, unit, 9)
    if not hits:
        st.info("No readable photo in this collection.")
        return
    modes = backprop_modes(loaded).modes
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
