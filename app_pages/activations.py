"""Activations: a photo through the network, every channel of a layer, one unit up close."""

import streamlit as st

from deepvis import charts, ui
from deepvis.activations import analyze
from deepvis.backprop import SEEDS, backprop
from deepvis.images import to_batch
from deepvis.render import (
    BACKPROP_FILTERS,
    SCALINGS,
    backprop_image,
    backprop_overlay,
    channel_grid,
    heat_colors,
    overlay,
    png_bytes,
    to_uint8,
    upscale,
    weight_tiles,
)

loaded = ui.model_sidebar()
st.title("Activations")
st.caption("Give the network a photo and see what every channel of a layer responds to.")

source = ui.image_input("act")
image = ui.decoded_image(source[0]) if source else None
if image is None:
    st.stop()

layer = ui.layer_picker(loaded, "act", loaded.default_layer)
with st.spinner("Running the network…"):
    result = analyze(loaded, image, layer)

left, right = st.columns([1, 2])
with left:
    ui.show_png(result.view, caption="What the network sees (centre crop)")
with right:
    st.plotly_chart(charts.predictions_figure(result.predictions), key="act_predictions")

channels = result.activation.shape[0]
unit = ui.unit_picker("act", channels, chart_key="act_overview")

st.subheader(f"All {channels} channels of {layer}")
scaling = st.radio("Scaling", SCALINGS, horizontal=True, key="act_scaling",
                   format_func={"channel": "per channel", "layer": "shared across the layer"}.get)
grid, _ = channel_grid(result.activation, scaling, highlight=unit)
grid_png = png_bytes(grid)
st.image(grid_png, output_format="PNG", caption="Each tile is one channel, numbered; the framed tile is the chosen unit.")
st.download_button("Download the grid (PNG)", grid_png, f"{loaded.spec.name}_{layer}.png", "image/png")

st.plotly_chart(charts.channel_max_figure(result.stats), key="act_overview", on_select="rerun",
                selection_mode="points")

st.subheader(f"Unit {unit} up close")
record = result.stats.as_records()[unit]
a, b, c = st.columns(3)
a.metric("max", f"{record['max']:.3g}")
b.metric("mean", f"{record['mean']:.3g}")
c.metric("argmax (y, x)", str(tuple(record["argmax"])) if result.is_spatial else "—")
if result.is_spatial:
    zoom, blend = st.columns(2)
    with zoom:
        ui.show_png(upscale(heat_colors(to_uint8(result.channel_map(unit))), 336, smooth=False),
                    caption="Activation map (bright = strong)")
    with blend:
        ui.show_png(upscale(overlay(result.view, result.channel_map(unit)), 336), caption="Overlaid on the input")

st.subheader(f"Which pixels drive unit {unit}")
support = ui.backprop_modes(loaded)
if support.reason:
    st.info(support.reason)
mode_col, seed_col, filter_col = st.columns(3)
mode = mode_col.radio("Backward pass", support.modes, horizontal=True, key="act_bp_mode",
                      help="saliency: the plain gradient · deconv: only positive gradients pass each ReLU · "
                           "guided: positive gradients where the ReLU was active")
seed = seed_col.radio("Start from", SEEDS, horizontal=True, key="act_bp_seed",
                      format_func={"map": "the unit's activation map", "point": "its strongest position"}.get)
shown = filter_col.radio("Filter", BACKPROP_FILTERS, horizontal=True, key="act_bp_filter")
try:
    with st.spinner("Backward pass…"):
        batch = to_batch(result.view, loaded.spec.normalization, loaded.device)
        gradient = backprop(loaded.module, batch, layer, unit, mode, seed)[0]
except ValueError as exc:
    st.error(str(exc))
    st.stop()
picture, blend = st.columns(2)
backward_png = png_bytes(upscale(backprop_image(gradient, shown), 336))
picture.image(backward_png, output_format="PNG", caption=f"{mode}, {shown} filter")
with blend:
    ui.show_png(upscale(backprop_overlay(result.view, gradient), 336), caption="Overlaid on the input")
st.download_button("Download the backward image (PNG)", png_bytes(backprop_image(gradient, shown)),
                   f"{loaded.spec.name}_{layer}_{unit}_{mode}.png", "image/png")

with st.expander("First-layer filters as RGB tiles"):
    tiles, _ = weight_tiles(loaded.first_conv.weight)
    ui.show_png(tiles, caption=f"{tuple(loaded.first_conv.weight.shape)} weights, each scaled about zero")
