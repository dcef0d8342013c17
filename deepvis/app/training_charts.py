"""The Training page's chart: a run's scalars and measures over all its steps (pure: summaries in, a figure out).

Conventions
-----------
* One figure of small panels, three to a row: each scalar the run recorded (loss,
  accuracy, …), then the fraction of dead channels and the sparsity of the rectified
  layers, then the weight noise and norm of each convolution (:mod:`deepvis.health`).
* A layer or convolution keeps its colour in every panel (scalars are dark grey); a second
  run (a comparison) is drawn dashed in the same colours.  At most :data:`MAX_LINES` layers per panel (evenly
  spaced through the network, the chosen layer always among them).
* A grey dashed line marks the chosen step in every panel: :func:`mark` moves it on a built
  figure (milliseconds; building one takes a few hundred).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from deepvis.models import LoadedModel

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
          "#17becf")
MAX_LINES = 8
DASHES = ("solid", "dash")
SCALAR = "#444444"  # a scalar's line (a layer's colours are the layers' own)


def _spread(names: Sequence[str], keep: str | None) -> list[str]:
    names = list(names)
    if len(names) <= MAX_LINES:
        return names
    picked = {names[round(i * (len(names) - 1) / (MAX_LINES - 1))] for i in range(MAX_LINES)}
    if keep in names:
        picked.add(keep)
    return [n for n in names if n in picked]


def health_layers(ref: LoadedModel, measured: Sequence[str], chosen: str) -> list[str]:
    """The layers whose dead units and sparsity are drawn: the rectified ones (else all) the measures have."""
    rectified = [i.name for i in ref.layers if i.rectified and i.name in measured]
    return _spread(rectified or [n for n in measured], chosen)


def timeline_figure(runs: Sequence[tuple[str, dict]], step: int, layers: Sequence[str], height: int = 460
                    ) -> go.Figure:
    """``runs``: (name, :func:`deepvis.timeline.summary`) pairs, the first one's step ``step`` marked."""
    scalars = list(dict.fromkeys(k for _, s in runs for k in s["scalars"]))
    convs = _spread(list(dict.fromkeys(c for _, s in runs for c in s["convs"])), runs[0][1].get("first_conv"))
    panels = [(k, "scalar", k) for k in scalars] + [
        ("dead channels (fraction)", "layers", "dead"), ("sparsity (zeros)", "layers", "sparsity"),
        ("weight noise (high-frequency ratio)", "convs", "noise"), ("weight norm", "convs", "norm")]
    cols = 3
    rows = math.ceil(len(panels) / cols)
    figure = make_subplots(rows=rows, cols=cols, subplot_titles=[p[0] for p in panels], horizontal_spacing=0.06,
                           vertical_spacing=0.5 / rows)
    colours = {name: COLORS[i % len(COLORS)] for i, name in enumerate(list(layers) + convs)}
    shown_legend: set[str] = set()
    for r, (run, found) in enumerate(runs):
        dash = DASHES[r % len(DASHES)]
        steps = found["steps"]
        for p, (_, kind, what) in enumerate(panels):
            row, col = p // cols + 1, p % cols + 1
            if kind == "scalar":
                lines = [(run, found["scalars"].get(what), SCALAR)]
            elif kind == "layers":
                lines = [(n, found["layers"].get(n, {}).get(what), colours[n]) for n in layers]
            else:
                lines = [(n, found["convs"].get(n, {}).get(what), colours[n]) for n in convs]
            for name, values, colour in lines:
                if not values or all(v is None for v in values):
                    continue
                label = name if len(runs) == 1 or kind == "scalar" else f"{name} ({run})"
                figure.add_scatter(x=steps, y=values, mode="lines+markers", name=label, legendgroup=label,
                                   showlegend=label not in shown_legend, line=dict(color=colour, dash=dash, width=1.5),
                                   marker=dict(size=4), row=row, col=col, connectgaps=False)
                shown_legend.add(label)
    figure.add_vline(x=step, line=dict(color="grey", dash="dash", width=1), row="all", col="all")
    figure.layout.meta = {"marker_shapes": [shape.to_plotly_json() for shape in figure.layout.shapes]}
    figure.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10), uirevision="keep",
                         legend=dict(orientation="h", y=-0.12), font=dict(size=11))
    figure.update_annotations(font_size=12)
    figure.update_xaxes(title_text=None)
    return figure


def mark(figure: go.Figure, step: int) -> None:
    """Move the step's line of a :func:`timeline_figure` to ``step``."""
    figure.layout.shapes = [{**shape, "x0": step, "x1": step} for shape in figure.layout.meta["marker_shapes"]]
