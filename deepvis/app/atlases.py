"""Atlases the app reads (:mod:`deepvis.atlas`): a unit's top images and optimized image at once, precomputed.

Conventions
-----------
* The server's atlases: ``streamlit run streamlit_app.py -- --atlas DIR`` (repeatable), else
  ``DEEPVIS_ATLAS=DIR[:DIR…]``, then those that ship in the package (:func:`deepvis.atlas_bundle.shipped`).  One is used for a model when the hash of its weights is the model's
  (:func:`deepvis.atlas.check_model`); others are left out silently (they belong to other networks), and a
  folder that is not a finished atlas is reported once, in one line, in the unit column.
* The unit column offers "An atlas" as a source of top images when one covers the layer: its crops come from
  the bundle (no photo is read); its optimized image is shown when the atlas was made under the preset the
  column asks for, from seed 0 (at the atlas's size).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st
from PIL import Image

from deepvis import atlas, atlas_bundle, patterns, units
from deepvis import collection as coll
from deepvis.app import script_paths
from deepvis.atlas_pictures import CROP, crops_path, field_only, load_optimized
from deepvis.errors import one_line
from deepvis.index import Hit
from deepvis.models import LoadedModel
from deepvis.patterns import Pattern
from deepvis.settings import Settings
from deepvis.targets import Target

PREFIX = "atlas:"


def folders() -> list[str]:
    """``--atlas`` folders, else ``DEEPVIS_ATLAS``'s; then the shipped ones."""
    return script_paths("--atlas", "DEEPVIS_ATLAS") + [str(p) for p in atlas_bundle.shipped()]


@st.cache_data(show_spinner=False, ttl=30)
def _matching(model_key: str, given: tuple[str, ...]) -> tuple[tuple[tuple[str, dict], ...], tuple[str, ...]]:
    found, problems = [], []
    for folder in given:
        try:
            made = atlas.manifest(folder)
        except atlas.AtlasError as exc:
            problems.append(f"--atlas {folder}: {one_line(exc)}")
            continue
        if made["model"]["key"] == model_key:
            found.append((str(Path(folder).expanduser()), made))
    return tuple(found), tuple(problems)


def for_layer(loaded: LoadedModel, layer: str, report: bool = True) -> list[tuple[str, dict]]:
    """The server's atlases of this model that cover ``layer``: ``(folder, manifest)``; ``report``: say in one
    line each which given folders are not atlases."""
    found, problems = _matching(coll.model_key(loaded), tuple(folders()))
    for problem in problems if report else ():
        st.caption(problem)
    return [(folder, made) for folder, made in found if layer in made["layers"]]


def with_crops(loaded: LoadedModel, layer: str) -> list[tuple[str, dict]]:
    """:func:`for_layer`'s atlases that keep their top images' crops (a source of top images)."""
    return [(folder, made) for folder, made in for_layer(loaded, layer) if made.get("crops", True)]


def top_crops(folder: str, layer: str, unit: int, k: int) -> tuple[list[Hit], list[np.ndarray]]:
    """The unit's best ``k`` hits in the atlas and their crops from its bundle (no photo is read)."""
    hits = atlas.top(folder, layer, unit, k)
    try:
        strip = np.asarray(Image.open(crops_path(Path(folder), layer, unit)).convert("RGB"))
        crops = [strip[:, i * CROP:(i + 1) * CROP] for i in range(len(hits))]
    except OSError:
        crops = [np.full((CROP, CROP, 3), 128, np.uint8) for _ in hits]
    return hits, crops


def _made_under(loaded: LoadedModel, layer: str, settings: Settings) -> list[tuple[str, dict, str]]:
    """The atlases of ``layer`` whose optimized images were made under ``settings`` from seed 0: ``(folder,
    manifest, its name for a caption)``."""
    found = []
    for folder, made in for_layer(loaded, layer, report=False):
        plan = made.get("optimize")
        if plan and plan["settings"] == settings.to_dict() and plan["seed"] == 0:
            where = ("the atlas shipped with deepvis" if Path(folder).parent == atlas_bundle.SHIPPED
                     else f"the atlas at {folder}")
            found.append((folder, made, where))
    return found


def optimized(loaded: LoadedModel, layer: str, unit: int, settings: Settings) -> tuple[Pattern, str] | None:
    """The unit's optimized image from an atlas made under ``settings`` from seed 0 (at its own size), and a
    caption naming the atlas (and saying so when it kept only the part the unit sees)."""
    for folder, _, where in _made_under(loaded, layer, settings):
        found = load_optimized(folder, layer, unit)
        if found is not None:
            kept = "; it keeps only the part the unit sees (grey around it)" if field_only(folder, layer, unit) else ""
            return found, f"Precomputed: from {where}{kept}."
    return None


def thumbnails(loaded: LoadedModel, layer: str, settings: Settings) -> tuple[list[np.ndarray | None], str]:
    """Pattern mode's thumbnail of every unit of ``layer`` from an atlas made under ``settings`` from seed 0 (None
    for a unit it lacks), and the atlas's name for a caption ("" when none matches)."""
    for folder, made, where in _made_under(loaded, layer, settings):
        box = patterns.field_of(loaded, Target(layer, 0), int(made["optimize"]["size"]))
        return list(_thumbnails(folder, layer, made["layers"][layer][0], box)), where
    return [None] * loaded.layer(layer).shape[0], ""


@st.cache_data(show_spinner="Reading the atlas's images…", max_entries=8, ttl=120)  # an atlas being built grows
def _thumbnails(folder: str, layer: str, channels: int, box: tuple[int, int, int, int]
                ) -> tuple[np.ndarray | None, ...]:
    found = (load_optimized(folder, layer, unit) for unit in range(channels))
    return tuple(None if f is None else patterns.thumbnail(f, box) for f in found)


def show_top(folder: str, made: dict, layer: str, unit: int) -> None:
    """The unit's top images from the atlas: crops in a 3-column grid with rank, value and file."""
    k = min(9, made["k"])
    hits, crops = top_crops(folder, layer, unit, k)
    st.caption(f"Top {len(hits)} of {made['collection']['images']} images ({made['collection']['source']}), "
               f"from the atlas at {folder}: the part each photo's strongest position sees")
    for row in range(0, len(hits), 3):
        cells = st.columns(3, gap="small")
        for cell, crop, hit, rank in zip(cells, crops[row:row + 3], hits[row:row + 3], range(row, row + 3)):
            cell.image(crop, caption=units.hit_label(rank + 1, hit), output_format="PNG", width="stretch")
