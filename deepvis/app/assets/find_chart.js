// The layer map's hover, found on the page (deepvis.app.layer_map): Streamlit's Plotly chart has no hover event
// and its tooltips take no pictures, so this small inline component (no frame of its own, nothing fetched) finds
// the chart by its layout's `meta` and runs the map's hover script on it (deepvisHover, deepvis.embed.HOVER_JS).
export default function(component) {
  const { data } = component;
  const attach = () => {
    for (const plot of document.querySelectorAll('.js-plotly-plot')) {
      if (plot.layout && plot.layout.meta === data.meta && plot.on) deepvisHover(plot, data.thumbs);
    }
    for (const box of document.querySelectorAll('img.deepvis-hover')) {  // a chart that went mid-hover
      if (!box.deepvisPlot.isConnected) box.remove();
    }
  };
  attach();
  const timer = setInterval(attach, 400);  // the chart is drawn after this runs, and again on each rerun
  return () => {
    clearInterval(timer);
    document.querySelectorAll('img.deepvis-hover').forEach((box) => box.remove());
  };
}
