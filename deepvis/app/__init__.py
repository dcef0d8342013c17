"""The app wing: every module that imports Streamlit (and streamlit-webrtc), one concept each.

The library (``deepvis.*`` outside this package) never imports Streamlit; the pages
(``app_pages/``) call into these modules and stay a table of contents.

Conventions
-----------
* Widget groups take a ``key`` prefix and keep their values in ``st.session_state``
  under ``{key}_…``; they return plain values or small typed objects, so the pages
  never read session keys themselves.
* Every failure a person can cause (:class:`deepvis.errors.DeepvisError`, and
  ``OSError`` for files and devices) becomes one ``st.error`` line, written with
  :func:`deepvis.errors.one_line` where the message is not ours; anything else is a
  bug and shows as one.
* Long work runs through :func:`deepvis.progress.drain`: on the page under a bar, or
  on a background thread (:mod:`deepvis.app.jobs`), whose progress one polling
  fragment shows.
* The model is shared by every session (:mod:`deepvis.app.model`); nothing here
  modifies it.

Modules: ``model`` (shared model, sidebar), ``inputs`` (photo sources), ``pickers``
(layer, unit, target), ``links`` (URL), ``grid`` (layer grid, unit stepper),
``photo_sets`` (collections, indexing), ``jobs`` (background work, polling),
``unit_column``, ``panels`` (backprop, weights, occlusion), ``layer_map`` (t-SNE),
``theta`` (θ editor), ``runs`` (live runs), ``forms`` (the optimization pages' forms),
``live`` (live video), ``atlases`` (precomputed unit views).
"""

from __future__ import annotations

import argparse
import os
import sys


def script_paths(flag: str, env: str | None = None, argv: list[str] | None = None) -> list[str]:
    """The paths the script's arguments give with ``flag`` (``streamlit run streamlit_app.py -- --runs DIR``,
    repeatable), else those of the environment variable ``env`` (separated by ``os.pathsep``)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument(flag, action="append", default=[], dest="paths")
    given = parser.parse_known_args(sys.argv[1:] if argv is None else argv)[0].paths
    if given or env is None:
        return given
    return [p for p in os.environ.get(env, "").split(os.pathsep) if p]
