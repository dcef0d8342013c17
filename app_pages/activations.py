"""Activations: a photo through the network, every channel of a layer, and one unit's whole story."""

import streamlit as st

from deepvis import charts, ui, ui_live, ui_units
from deepvis.activations import analyze
from deepvis.backprop import SEEDS, backprop
from deepvis.images import to_batch
from deepvis.render import (BACKPROP_FILTERS, SCALINGS, backprop_image, backprop_overlay, channel_grid, heat_colors,
                            overlay, png_bytes, to_uint8, upscale, weight_tiles)

ui_units.open_link("act")
loaded = ui.model_sidebar()
photo, grid_col, unit_col = st.columns([0.8, 2.1, 1.3], gap="medium")

with photo:
    source = ui.image_input("act", live=True)
    image = ui.decoded_image(source[0]) if source else None
if image is None:
    if ui.live_streaming("act"):
        with grid_col:
            layer = ui.layer_picker(loaded, "act", loaded.default_layer)
        ui_live.stream(loaded, layer, "act", photo, grid_col, unit_col)
    st.stop()
with grid_col:
    ui_units.linked_layer(loaded, "act", ui.layer_key(loaded, "act"))
    layer = ui.layer_picker(loaded, "act", loaded.default_layer)
with st.spinner("Running the network…"):
    result = analyze(loaded, image, layer)
channels = result.activation.shape[0]
ui_units.linked_unit("act", "act_unit", channels)
ui.chart_click("act_unit", "act_overview")

with photo:
    ui.show_png(result.view, caption="What the network sees (centre crop)")
    st.plotly_chart(charts.predictions_figure(result.predictions, height=230), key="act_predictions")
with unit_col:
    unit = ui_units.unit_stepper("act_unit", channels)
    ui_units.write_link(loaded, layer, unit)
    st.markdown(ui_units.unit_summary(result, unit))
    if result.is_spatial:
        zoom, blend = st.columns(2)
        with zoom:
            ui.show_png(upscale(heat_colors(to_uint8(result.channel_map(unit))), 224, smooth=False),
                        caption="Activation map (bright = strong)", width="stretch")
        with blend:
            ui.show_png(upscale(overlay(result.view, result.channel_map(unit)), 224),
                        caption="Overlaid on the input", width="stretch")
with grid_col:
    scale_col, mode_col = st.columns([3, 2], vertical_alignment="bottom")
    scaling = scale_col.radio("Scaling", SCALINGS, horizontal=True, key="act_scaling",
                              format_func={"channel": "per channel", "layer": "shared across the layer"}.get)
    patterned = mode_col.toggle("Pattern mode", key="act_patterns", disabled=not result.is_spatial,
                                help="Show each channel's optimized image (what it wants to see) instead of its "
                                     "activation, as the toolbox's `s` key does.")
    if patterned and result.is_spatial:
        grid, layout = ui_units.pattern_grid(loaded, layer, unit, "act")
    else:
        grid, layout = channel_grid(result.activation, scaling, numbers=False, highlight=unit)
    ui_units.clickable_grid(grid, layout, "act_unit", "act_grid")
    what = "optimized image" if patterned and result.is_spatial else "activation"
    st.caption(f"All {channels} channels of {layer}, one tile each in channel order (row by row), showing its "
               f"{what}. Click a tile to choose its unit; the framed tile is unit {unit}.")
    st.download_button("Download the grid (PNG)", png_bytes(grid), f"{loaded.spec.name}_{layer}.png", "image/png")

with unit_col:
    support = ui.backprop_modes(loaded)
    st.subheader("What it wants to see")
    ui_units.optimized_image(loaded, layer, unit, "act")
    st.subheader("What excites it most")
    ui_units.top_images(loaded, layer, unit, "act", support.modes)

    st.subheader("Which pixels of this photo drive it")
    if support.reason:
        st.info(support.reason)
    mode = st.radio("Backward pass", support.modes, horizontal=True, key="act_bp_mode",
                    help="saliency: the plain gradient · deconv: only positive gradients pass each ReLU · "
                         "guided: positive gradients where the ReLU was active")
    seed = st.radio("Start from", SEEDS, horizontal=True, key="act_bp_seed",
                    format_func={"map": "the unit's activation map", "point": "its strongest position"}.get)
    shown = st.radio("Filter", BACKPROP_FILTERS, horizontal=True, key="act_bp_filter")
    try:
        with st.spinner("Backward pass…"):
            batch = to_batch(result.view, loaded.spec.normalization, loaded.device)
            gradient = backprop(loaded.module, batch, layer, unit, mode, seed)[0]
        picture, blend = st.columns(2)
        picture.image(png_bytes(upscale(backprop_image(gradient, shown), 224)), caption=f"{mode}, {shown} filter",
                      output_format="PNG", width="stretch")
        with blend:
            ui.show_png(upscale(backprop_overlay(result.view, gradient), 224), caption="Overlaid on the input",
                        width="stretch")
        st.download_button("Download the backward image (PNG)", png_bytes(backprop_image(gradient, shown)),
                           f"{loaded.spec.name}_{layer}_{unit}_{mode}.png", "image/png")
    except ValueError as exc:
        st.error(str(exc))

with unit_col, st.expander("Its weights"):
    ui_units.weights_panel(loaded, layer, unit)
with unit_col:
    st.subheader("What covering parts of it does")
    ui_units.occlusion_panel(loaded, result.view, layer, unit, "act")

with grid_col:  # drawn only while open: its t-SNE and every photo's thumbnail cost nothing until asked for
    map_box = st.expander("Map of this layer over the collection (t-SNE)", key="act_map_box", on_change="rerun")
    if map_box.open:
        with map_box:
            ui_units.representation_map(loaded, layer, "act")
with grid_col, st.expander("Max activation per channel"):
    st.plotly_chart(charts.channel_max_figure(result.stats), key="act_overview", on_select="rerun",
                    selection_mode="points")
with photo, st.expander("First-layer filters as RGB tiles"):
    tiles, _ = weight_tiles(loaded.first_conv.weight)
    ui.show_png(tiles, caption=f"{tuple(loaded.first_conv.weight.shape)} weights, each scaled about zero")
