"""Photo collections: which one the top images come from (bundled, a folder, uploads), and its index.

Conventions
-----------
* A collection is named as :mod:`deepvis.collection` names it: ``"samples"`` or a
  folder path.  :func:`collection_picker` keeps its answer in the session, so another
  part of the page (the layer map) can ask for it with :func:`chosen_collection`.
* **Uploaded photos** are written once to ``<cache>/uploads/<sha1 of their names and
  bytes>/`` and indexed as a folder.
* **Indexing runs as a background job** (:mod:`deepvis.app.jobs`): one per (index
  file, layers), shared by every session that asks for the same index, so the page
  stays responsive.  An interrupted or failed job keeps what it committed
  (:mod:`deepvis.index`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import streamlit as st

from deepvis import collection as coll
from deepvis import index
from deepvis.app import jobs
from deepvis.models import LoadedModel

COLLECTIONS = ("Bundled photos", "A folder on this machine", "Upload photos")
ATLAS = "An atlas"  # offered when the server has an atlas of this model covering the layer (deepvis.app.atlases)


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


def _picked(key: str, atlases: tuple[str, ...]) -> str | None:
    options = COLLECTIONS + ((ATLAS,) if atlases else ())
    kind = st.radio("Top images from", options, key=f"{key}_collection", horizontal=True,
                    help="An atlas: precomputed over a large collection by `deepvis atlas`; shown at once.")
    if kind == ATLAS:
        chosen = atlases[0] if len(atlases) == 1 else st.selectbox("Atlas", atlases, key=f"{key}_atlas")
        return f"atlas:{chosen}"
    if kind == COLLECTIONS[0]:
        return coll.DEFAULT_NAME
    if kind == COLLECTIONS[1]:
        path = st.text_input("Folder (searched with its subfolders)", key=f"{key}_folder",
                             placeholder="/data/my_photos")
        return path.strip() or None
    files = st.file_uploader("Photos", accept_multiple_files=True, key=f"{key}_uploads")
    return str(_save_uploads(files)) if files else None


def collection_picker(key: str, atlases: tuple[str, ...] = ()) -> str | None:
    """The collection whose top images are shown: ``"samples"``, a folder path, ``"atlas:<folder>"`` (one of
    ``atlases``, the server's atlases for this model and layer), or None while none is given."""
    source = _picked(key, atlases)
    st.session_state[f"{key}_chosen_collection"] = source
    return source


def chosen_collection(key: str) -> str | None:
    """The photo collection :func:`collection_picker` (drawn elsewhere on the page) has chosen, as it last
    returned (None for an atlas: its photos are not indexed here)."""
    source = st.session_state.get(f"{key}_chosen_collection")
    return None if source is not None and source.startswith("atlas:") else source


def _skipped(summary: index.Summary | None) -> None:
    if summary is not None and summary.skipped:
        names = ", ".join(Path(p).name for p, _ in summary.skipped[:5])
        more = f" and {len(summary.skipped) - 5} more" if len(summary.skipped) > 5 else ""
        st.caption(f"Skipped {len(summary.skipped)} unreadable file(s): {names}{more}.")


def indexed(loaded: LoadedModel, source: str, layer: str | tuple[str, ...]) -> Path | None:
    """The collection's index path once it covers ``layer`` (or each of several); meanwhile offer, run and
    show the indexing."""
    layers = (layer,) if isinstance(layer, str) else tuple(layer)
    path = index.index_path(loaded, source)
    job = jobs.shared("index", str(path), layers)
    if job.running:
        jobs.show(job, "Indexing…", "photos")
        return None
    jobs.report(job, "Indexing")
    try:
        listing = coll.entries(source)
    except coll.CollectionError as exc:
        st.error(str(exc))
        return None
    states = [index.status(path, listing, name) for name in layers]
    state = max(states, key=lambda one: one.to_read)
    _skipped(job.result)
    if all(one.ready for one in states):
        return path
    if not listing:
        st.info("This collection has no images (JPEG, PNG, GIF, WebP, BMP or TIFF files).")
        return None
    what = f"{state.to_read} of {len(listing)} photos" if state.to_read < len(listing) else f"{len(listing)} photos"
    if st.button(f"Index {what} for {' and '.join(layers)}", key=f"index_{path}_{'_'.join(layers)}", type="primary",
                 help="Reads each photo once, on a background worker, and keeps each unit's best images on disk."):
        jobs.start(job, lambda: index.build(loaded, source, list(layers), path=path))
        jobs.show(job, "Indexing…", "photos")
    return None
