"""Plotly figures for the pages (pure: numbers in, ``go.Figure`` out; no Streamlit), and the light picture of
the curves a running run shows (:func:`curves_picture`: a PNG-ready array, cheap for the server and the browser
to redraw every second or two, where an interactive figure costs the browser far more).

Conventions
-----------
* Colours: column ``i`` of a comparison uses ``PALETTE[i]`` for its header and
  its line, so a reader can match them.
* Probabilities are shown as percentages; iterations are 0-based.
* An objective curve is drawn faint, with its trailing mean over :data:`SMOOTH` iterations
  in full colour over it: under jitter (and a large step) the objective swings from one
  iteration to the next, and the trend is what a reader looks for.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from PIL import Image, ImageDraw, ImageFont

from deepvis.activations import ChannelStats, Prediction
from deepvis.records import RunRecord

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")  # comparison columns, in order
_MARGIN = dict(l=10, r=10, t=40, b=10)
SMOOTH = 20  # iterations in the trailing mean drawn over each objective curve


def trailing_mean(values: np.ndarray, window: int = SMOOTH) -> np.ndarray:
    """Each value's mean with the ``window - 1`` values before it (fewer at the start): same length."""
    values = np.asarray(values, dtype=np.float64)
    sums = np.concatenate([[0.0], np.cumsum(values)])
    end = np.arange(1, len(values) + 1)
    start = np.maximum(0, end - window)
    return (sums[end] - sums[start]) / (end - start)


FAINT = 0.35  # the opacity of an objective's per-iteration line under its trailing mean


def _rgb(color: str) -> tuple[int, int, int]:
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


def _faint(color: str) -> str:
    """``#rrggbb`` at :data:`FAINT` opacity."""
    return "rgba({}, {}, {}, {})".format(*_rgb(color), FAINT)


def predictions_figure(predictions: Sequence[Prediction], height: int = 280) -> go.Figure:
    """Horizontal bars of class probabilities, the best on top."""
    shown = list(predictions)[::-1]
    figure = go.Figure(go.Bar(x=[p.prob for p in shown], y=[p.label for p in shown], orientation="h",
                              text=[f"{p.prob:.1%}" for p in shown], textposition="auto"))
    figure.update_layout(title=f"Top-{len(shown)} predictions", height=height, margin=_MARGIN,
                         xaxis=dict(range=[0, 1], tickformat=".0%"))
    return figure


def channel_max_figure(stats: ChannelStats, height: int = 260) -> go.Figure:
    """Each channel's maximum activation as a bar; clicking a bar selects that channel."""
    figure = go.Figure(go.Bar(x=list(range(len(stats.max))), y=stats.max.tolist()))
    figure.update_layout(title="Max activation per channel (click a bar to choose that unit)", height=height,
                         margin=_MARGIN, xaxis_title="channel", yaxis_title="max",
                         bargap=0 if len(stats.max) > 64 else None)  # many bars: no gaps, so a point is on a bar
    return figure


def curves_figure(record: RunRecord, names: Sequence[str], colors: Sequence[str] | None = None,
                  marker: int | None = None, norms: bool = False, height: int = 320) -> go.Figure:
    """Objective per iteration, one line per row (optionally the image norm's trailing mean on a second axis, dotted);
    ``marker`` draws a vertical line (and a dot on each curve it crosses) at that iteration."""
    colors = colors or PALETTE
    figure = go.Figure()
    for b, (row, name) in enumerate(zip(record.rows, names)):
        color = colors[b % len(colors)]
        figure.add_scatter(y=row.objectives.tolist(), mode="lines", name=f"{name} (each iteration)",
                           line=dict(color=_faint(color), width=1), showlegend=False)
        figure.add_scatter(y=trailing_mean(row.objectives).tolist(), mode="lines", name=name,
                           line=dict(color=color, width=2), hovertemplate=f"%{{y:.4g}} (mean of {SMOOTH})")
        if norms:
            figure.add_scatter(y=trailing_mean(row.norms).tolist(), mode="lines", yaxis="y2",
                               name=f"{name}: image norm" if len(names) > 1 else "image norm",
                               line=dict(color=color, dash="dot", width=1))
    if marker is not None:
        figure.add_vline(x=marker, line=dict(color="grey", dash="dash", width=1))
        for b, row in enumerate(record.rows):
            if marker < row.steps_done:
                figure.add_scatter(x=[marker], y=[float(row.objectives[marker])], mode="markers", showlegend=False,
                                   marker=dict(color=colors[b % len(colors)], size=9), name="shown")
    figure.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10), xaxis_title="iteration",
                         yaxis_title="objective", legend=dict(orientation="h", y=-0.25),
                         uirevision="keep")
    if norms:
        figure.update_layout(yaxis2=dict(title="image norm", overlaying="y", side="right", showgrid=False))
    return figure


def curves_picture(record: RunRecord, names: Sequence[str], width: int = 560, height: int = 300,
                   colors: Sequence[str] | None = None) -> np.ndarray:
    """Each row's objective per iteration as a line (its colour as in :func:`curves_figure`), with the range of
    both axes written at their ends and the names as a legend: ``(height, width, 3)`` uint8."""
    colors = colors or PALETTE
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    left, right, top, bottom = 64, width - 12, 10, height - 40
    curves = [row.objectives[:row.steps_done] for row in record.rows]
    values = np.concatenate([c for c in curves if len(c)]) if any(len(c) for c in curves) else np.zeros(1)
    low, high = float(values.min()), float(values.max())
    span = high - low or 1.0
    total = max(2, max(len(c) for c in curves))
    draw.rectangle([left, top, right, bottom], outline=(200, 200, 200))
    for b, curve in enumerate(curves):
        if len(curve) < 2:
            continue
        xs = (left + np.arange(len(curve)) * (right - left) / (total - 1)).tolist()
        rgb = _rgb(colors[b % len(colors)])
        faint = tuple(int(255 - FAINT * (255 - c)) for c in rgb)  # the faint line's colour on white
        for values, fill, width in ((curve, faint, 1), (trailing_mean(curve), rgb, 2)):
            ys = (bottom - (values - low) * (bottom - top) / span).tolist()
            draw.line(list(zip(xs, ys)), fill=fill, width=width)
    grey = (90, 90, 90)
    draw.text((4, top), f"{high:.4g}", fill=grey, font=font)
    draw.text((4, bottom - 10), f"{low:.4g}", fill=grey, font=font)
    draw.text((left, bottom + 4), "0", fill=grey, font=font)
    draw.text((right - 40, bottom + 4), f"{total - 1}", fill=grey, font=font)
    draw.text(((left + right) // 2 - 60, bottom + 4), "objective per iteration", fill=grey, font=font)
    x = left
    for b, name in enumerate(names):
        draw.rectangle([x, height - 16, x + 10, height - 8], fill=colors[b % len(colors)])
        draw.text((x + 14, height - 18), name, fill=grey, font=font)
        x += 24 + int(draw.textlength(name, font=font))
    return np.asarray(image)
