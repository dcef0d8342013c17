"""The Training page's runs: which runs the server offers, the pickers that choose one, and the link.

Conventions
-----------
* ``streamlit run streamlit_app.py -- --runs DIR`` (repeatable, or ``DEEPVIS_RUNS=DIR``,
  several joined by ``os.pathsep``) lists every run folder under ``DIR``
  (:func:`deepvis.run.find_runs`, re-read every 10 s at most) in the sidebar; any folder on
  the server can be typed in as well.  A root that is not a folder is one ``st.error`` line.
* **The URL** names ``run``, ``step``, ``layer``, ``unit`` (the filter) and, when two
  runs are compared, ``compare``.  It is read once per session (:func:`open_link`) into
  the widgets' state (the step, layer and unit wait in ``train_link_*`` until the run is
  open; :mod:`deepvis.app.training` applies or drops them with one ``st.warning`` line)
  and kept in step afterwards (:func:`write_link`).
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from deepvis.app import script_paths
from deepvis.errors import one_line
from deepvis.run import RunError, find_runs

OTHER = "\x00other"  # the run selectbox's "a folder on the server" entry


def run_roots() -> list[str]:
    """``--runs`` roots, else ``DEEPVIS_RUNS``'s."""
    return script_paths("--runs", "DEEPVIS_RUNS")


@st.cache_data(show_spinner=False, ttl=10)
def _listed(roots: tuple[str, ...]) -> tuple[dict[str, str], tuple[str, ...]]:
    found, errors = {}, []
    for root in roots:
        try:
            runs = find_runs(root)
        except RunError as exc:
            errors.append(f"--runs {root}: {one_line(exc)}")
            continue
        for path in runs:
            relative = path.relative_to(Path(root).expanduser()).as_posix()
            label = relative if len(roots) == 1 else f"{Path(root).name}/{relative}"
            found[label if label != "." else Path(root).name] = str(path)
    return found, tuple(errors)


def listed_runs() -> dict[str, str]:
    """The runs under the server's roots, label -> folder (re-read every 10 s at most)."""
    return _listed(tuple(run_roots()))[0]


def run_picker(key: str, label: str) -> Path | None:
    """A run listed under the roots, or a folder typed in; None while nothing is chosen.  A root that is not a
    folder is one ``st.error`` line (under the first picker)."""
    found, errors = _listed(tuple(run_roots()))
    for error in errors if key == "train_run" else ():
        st.error(error)
    choice = OTHER
    if found:
        if st.session_state.get(f"{key}_choice") not in (*found, OTHER):
            st.session_state.pop(f"{key}_choice", None)
        choice = st.selectbox(label, [*found, OTHER], key=f"{key}_choice",
                              format_func=lambda o: "a folder on the server…" if o == OTHER else o)
    if choice != OTHER:
        return Path(found[choice])
    text = st.text_input(label if not found else "Run folder", key=f"{key}_folder",
                         placeholder="runs/digits",
                         help="A folder on the server holding a run.json (deepvis.Run records one).")
    return Path(text.strip()) if text.strip() else None


def _choose(key: str, value: str) -> None:
    """Make the run pickers under ``key`` show ``value`` (a listed run's label or folder, or any folder)."""
    for label, path in listed_runs().items():
        if value == label or _same(value, path):
            st.session_state[f"{key}_choice"] = label
            return
    st.session_state[f"{key}_choice"] = OTHER
    st.session_state[f"{key}_folder"] = value


def _same(a: str, b: str) -> bool:
    try:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except OSError:
        return False


# --- the link --------------------------------------------------------------------------------------------------

def open_link() -> None:
    """Put the URL's run, compared run, step, layer and unit into the widgets' state, once per session."""
    if st.session_state.get("train_link_read"):
        return
    st.session_state["train_link_read"] = True
    params = st.query_params
    if params.get("run"):
        _choose("train_run", params["run"])
    if params.get("compare"):
        _choose("train_cmp", params["compare"])
        st.session_state["train_compare"] = True
    for name in ("step", "unit"):
        if params.get(name, "").isdigit():
            st.session_state[f"train_link_{name}"] = int(params[name])
    if params.get("layer"):
        st.session_state["train_link_layer"] = params["layer"]


def write_link(run: Path, step: int, layer: str, unit: int, compare: Path | None) -> None:
    """Keep the URL on what is shown (so it can be bookmarked, shared and reopened)."""
    wanted = {"run": str(run), "step": str(step), "layer": layer, "unit": str(unit)}
    if compare is not None:
        wanted["compare"] = str(compare)
    if dict(st.query_params.to_dict()) != wanted:
        st.query_params.from_dict(wanted)
