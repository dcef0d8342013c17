"""deepvis: look inside a convolutional network (after Yosinski et al. 2015)."""

# Imported once at start-up: Plotly imports pandas lazily, and sessions drawing their
# first chart at the same moment would otherwise race on that import.
import pandas  # noqa: F401
import plotly.express  # noqa: F401
import plotly.graph_objects  # noqa: F401
import streamlit as st

st.set_page_config(page_title="deepvis", page_icon=":material/visibility:", layout="wide")

pages = [
    st.Page("pages/activations.py", title="Activations", icon=":material/grid_view:", default=True),
]
for path, title, icon in (("pages/optimization.py", "Optimization", ":material/auto_awesome:"),
                          ("pages/comparison.py", "Comparison", ":material/compare:")):
    from pathlib import Path

    if (Path(__file__).parent / path).exists():
        pages.append(st.Page(path, title=title, icon=icon))

page = st.navigation(pages)
page.run()
