"""deepvis: look inside a convolutional network (after Yosinski et al. 2015).

``streamlit run streamlit_app.py -- --models FILE`` (repeatable, or ``DEEPVIS_MODELS=FILE``) also offers the
networks a models file names, first in the sidebar (:mod:`deepvis.app.model`, :mod:`deepvis.models_file`);
``-- --runs DIR`` (repeatable, or ``DEEPVIS_RUNS=DIR``) lists the training runs under DIR on the Training page
(:mod:`deepvis.app.training`).
"""

import importlib
from pathlib import Path

import streamlit as st

from deepvis.allocator import keep_freed_memory

# Imported once at start-up: Plotly imports pandas lazily, and sessions drawing their
# first chart at the same moment would otherwise race on that import.
for _name in ("pandas", "plotly.express", "plotly.graph_objects"):
    importlib.import_module(_name)

keep_freed_memory()  # the server's forward passes reuse freed memory (deepvis.allocator)

# A bundled icon: a ":material/…" page icon would make the browser fetch it from Google's servers.
st.set_page_config(page_title="deepvis", page_icon=str(Path(__file__).parent / "deepvis" / "icon.png"),
                   layout="wide")
# Less empty space above each page's title, so that a run's picture fits under the controls on a 900-px screen.
st.html("<style>[data-testid='stMainBlockContainer'] { padding-top: 2.5rem; }</style>")
page = st.navigation([
    st.Page("app_pages/activations.py", title="Activations", icon=":material/grid_view:", default=True),
    st.Page("app_pages/optimization.py", title="Optimization", icon=":material/auto_awesome:"),
    st.Page("app_pages/comparison.py", title="Comparison", icon=":material/compare:"),
    st.Page("app_pages/training.py", title="Training", icon=":material/timeline:", url_path="training"),
])
page.run()
