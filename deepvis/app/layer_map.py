"""The layer's map over a collection: a t-SNE of the top images' collection (:mod:`deepvis.embed`), each photo's
thumbnail on hover, a click opening the photo on the page.

Conventions
-----------
* Drawn only while its expander is open: the t-SNE and every photo's thumbnail cost
  nothing until asked for, and the thumbnails are sent once per session (Streamlit's
  message cache sends later reruns a reference).
* The collection is the one the unit column chose (:func:`deepvis.app.photo_sets.chosen_collection`);
  it is indexed for the layer and the logits first (a background job).
* Streamlit's Plotly chart has no hover event and its tooltips take no pictures, so a
  small inline component (``assets/find_chart.js``: no frame of its own, nothing
  fetched) finds the chart by its layout's ``meta`` and runs the map's hover script
  (:data:`deepvis.embed.HOVER_JS`) on it.
* A clicked photo becomes the page's opened photo (:func:`deepvis.app.inputs.image_input`);
  one moved or deleted since indexing gives one ``st.warning`` line.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path

import streamlit as st

from deepvis import embed, index
from deepvis.app import inputs, jobs, photo_sets
from deepvis.models import LoadedModel

_FIND_CHART_JS = (Path(__file__).parent / "assets" / "find_chart.js").read_text(encoding="utf-8")
_THUMBS: dict[tuple[str, float], list[str]] = {}  # (index file, its modification time) -> data URLs, newest last
_THUMBS_LOCK = threading.Lock()


@st.cache_data(show_spinner=False, max_entries=8)
def _embedding(path: str, modified: float, layer: str, logits: str, names: tuple[str, ...]) -> embed.Embedding:
    return embed.embed(path, layer, logits, names)


def _open_clicked(key: str, paths: list[str]) -> None:
    """The map's click: the point's photo becomes the page's opened photo."""
    state = st.session_state.get(f"{key}_map")
    points = state.selection.points if state and state.selection else []
    if points:
        chosen = points[0]["customdata"]
        path = Path(paths[int(chosen[0] if isinstance(chosen, list) else chosen)])
        try:
            inputs.open_photo(key, path.read_bytes(), path.name)
        except OSError as exc:  # moved or deleted since it was indexed
            st.session_state[f"{key}_map_error"] = f"Cannot open {path.name}: {exc.strerror or exc}."


@st.cache_resource
def _hover_component():
    return st.components.v2.component("deepvis_map_hover", js=embed.HOVER_JS + _FIND_CHART_JS, isolate_styles=False)


def _thumbnails(paths: list[str], path: Path, modified: float) -> list[str]:
    """Every photo's thumbnail, made once per state of the index (a progress bar meanwhile)."""
    with _THUMBS_LOCK:
        found = _THUMBS.get((str(path), modified))
    if found is None:
        def work():
            made = []
            for i, thumb in enumerate(embed.thumbnails(paths, 128)):
                made.append(thumb)
                yield (i + 1) / len(paths)
            return made

        found = jobs.with_bar(work(), "Making thumbnails…")
        with _THUMBS_LOCK:
            _THUMBS[(str(path), modified)] = found
            while len(_THUMBS) > 4:
                del _THUMBS[next(iter(_THUMBS))]
    return found


def representation_map(loaded: LoadedModel, layer: str, key: str) -> None:
    """A t-SNE map of ``layer`` over the top images' collection, coloured by predicted class; pointing at a
    point shows its thumbnail, clicking it opens its photo on this page."""
    source = photo_sets.chosen_collection(key)
    if source is None:
        st.caption("Choose a collection under “What excites it most” first.")
        return
    path = photo_sets.indexed(loaded, source, (layer, loaded.logits_layer))
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


def map_expander(loaded: LoadedModel, layer: str, key: str) -> None:
    """The map in an expander, drawn only while it is open (module docstring)."""
    box = st.expander("Map of this layer over the collection (t-SNE)", key=f"{key}_map_box", on_change="rerun")
    if box.open:
        with box:
            representation_map(loaded, layer, key)
