"""Activations: a photo through the network, every channel of a layer, and one unit's whole story.

The grid and the unit column are one fragment: choosing a unit (▶, a tile, a bar, the number) reruns only them,
not the photo, its predictions and the layer picker."""

import streamlit as st

from deepvis import charts
from deepvis.app import grid, inputs, layer_map, links, live, model, panels, pickers, unit_column

links.open_link("act")
loaded = model.model_sidebar()
photo, right = st.columns([0.8, 3.4], gap="medium")
COLUMNS = dict(spec=[2.1, 1.3], gap="medium")  # the grid and the unit column, under the layer picker

with photo:
    source = inputs.image_input("act", live=True)
if source is None:
    if inputs.live_streaming("act"):
        with right:
            layer = pickers.layer_picker(loaded, "act", loaded.default_layer)
            grid_col, unit_col = st.columns(**COLUMNS)
        live.stream(loaded, layer, "act", photo, grid_col, unit_col)
    st.stop()
with right:
    links.linked_layer(loaded, "act", pickers.layer_key(loaded, "act"))
    layer = pickers.layer_picker(loaded, "act", loaded.default_layer)
with photo:
    result = inputs.analysis(loaded, source[0], layer, "act")  # kept while photo and layer stay: a new unit is free
if result is None:  # not a photo: one line, shown above
    st.stop()
channels = result.activation.shape[0]
links.linked_unit("act", "act_unit", channels)

with photo:
    inputs.show_png(inputs.enlarged(result.view), caption="What the network sees (centre crop)")
    st.plotly_chart(charts.predictions_figure(result.predictions, height=230), key="act_predictions")


@st.fragment
def unit_view() -> None:
    inputs.follow_opened("act")  # a point of the map opened its photo: the whole page shows it
    pickers.chart_click("act_unit", "act_overview")
    grid_col, unit_col = st.columns(**COLUMNS)
    with unit_col:
        unit = grid.unit_stepper("act_unit", channels)
        links.write_link(loaded, layer, unit)
        unit_column.unit_maps(result, unit)
    with grid_col:
        grid.layer_grid(loaded, result, layer, unit, "act")
    with unit_col:
        st.subheader("What it wants to see")
        unit_column.optimized_image(loaded, layer, unit, "act")
        st.subheader("What excites it most")
        unit_column.top_images(loaded, layer, unit, "act")
        st.subheader("Which pixels of this photo drive it")
        panels.backprop_panel(loaded, result.view, layer, unit, "act")
        st.subheader("Where this layer finds a class")
        panels.gradcam_panel(loaded, result.view, layer, result.predictions, "act")
    with unit_col, st.expander("Its weights"):
        panels.weights_panel(loaded, layer, unit)
    with unit_col:
        st.subheader("What covering parts of it does")
        panels.occlusion_panel(loaded, result.view, layer, unit, "act")
    with grid_col:
        layer_map.map_expander(loaded, layer, "act")
    with grid_col, st.expander("Max activation per channel"):
        st.plotly_chart(charts.channel_max_figure(result.stats), key="act_overview", on_select="rerun",
                        selection_mode="points")


with right:
    unit_view()
with photo, st.expander(panels.first_layer_title(loaded)):
    panels.first_layer_filters(loaded)
