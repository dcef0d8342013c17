"""The atlas's static viewer: plain HTML pages inside the bundle that work from ``file://``, with no server and
no script.

Conventions
-----------
* ``index.html``: the model, the collection and the layers; ``layers/<layer>.html``: a grid of the layer's
  units (its optimized image's field where there is one, else its best crop), each a link to
  ``units/<layer>/<unit>.html``: the unit's optimized image and the part its centre neuron sees, its top-k crops
  with value, file and position, and its statistics, with links to the previous and next unit.  These per-unit
  addresses are stable: a bundle's page for a unit is always at the same path.
* Pages link only to files inside the bundle (relative paths), so the folder can be zipped, moved and opened
  anywhere.  Rewritten whole by :func:`write` at the end of every build.
"""

from __future__ import annotations

import html
import json
import sqlite3
from contextlib import closing
from pathlib import Path
from urllib.parse import quote

from deepvis.atlas_pictures import has_optimized, picture_suffix

STYLE = """<style>
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
a{color:#1a5fb4;text-decoration:none} a:hover{text-decoration:underline}
.grid{display:flex;flex-wrap:wrap;gap:6px}
.cell{width:84px;text-align:center;font-size:12px}
.cell img{width:80px;height:80px;object-fit:cover;object-position:0 0;image-rendering:pixelated;border:1px solid #ccc}
.cell.dead img{opacity:.35}
.big{display:flex;gap:16px;align-items:flex-start;flex-wrap:wrap}
.big img{width:320px;height:320px;image-rendering:pixelated;border:1px solid #ccc}
.strip img{height:160px;image-rendering:auto;border:1px solid #ccc}
table{border-collapse:collapse;font-size:14px} td,th{padding:2px 10px;border-bottom:1px solid #eee;text-align:left}
.muted{color:#777}
</style>"""


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>{STYLE}"
            f"</head><body>{body}</body></html>\n")


def _href(*parts: str) -> str:
    return "/".join(quote(p) for p in parts)


def write(out: str | Path) -> Path:
    """Write (or rewrite) the viewer of the atlas folder ``out``; returns its ``index.html``."""
    out = Path(out)
    made = json.loads((out / "manifest.json").read_text())
    paths = [line.split("\t")[0] for line in (out / "collection.tsv").read_text().splitlines()]
    with closing(sqlite3.connect(f"file:{out / 'atlas.sqlite'}?mode=ro", uri=True)) as db:
        stats = {(layer, c): (mean, zero, dead, best) for layer, c, mean, zero, dead, best
                 in db.execute("SELECT layer, channel, mean, zero, dead, max FROM units")}
        tops: dict[tuple[str, int], list[tuple[int, float, int, int]]] = {}
        for layer, c, image, value, y, x in db.execute(
                "SELECT layer, channel, image, value, y, x FROM top ORDER BY layer, channel, rank"):
            tops.setdefault((layer, c), []).append((image, value, y, x))
    model, optimize = made["model"], made.get("optimize")
    made_with = (f"optimized images: {html.escape(optimize['name'])}, seed {optimize['seed']}, {optimize['size']} px"
                 if optimize else "no optimized images (built without --optimize)")
    rows = []
    for layer, shape in made["layers"].items():
        channels = shape[0]
        dead = sum(1 for c in range(channels) if stats.get((layer, c), (0, 0, 0, 0))[2])
        rows.append(f"<tr><td><a href='{_href('layers', layer + '.html')}'>{html.escape(layer)}</a></td>"
                    f"<td>{' × '.join(map(str, shape))}</td><td>{channels}</td><td>{dead}</td></tr>")
    (out / "index.html").write_text(_page(f"Atlas of {model['name']}", (
        f"<h1>Atlas of {html.escape(model['name'])}</h1>"
        f"<p>weights {html.escape(model['weights'])} · {html.escape(model['key'])} · input {model['input']['size']} px"
        f"<br>{made['collection']['images']} images from {html.escape(made['collection']['source'])} "
        f"({len(made['skipped'])} skipped) · top {made['k']} per unit · {made_with}"
        f"<br><span class=muted>made by deepvis {html.escape(made['tool']['version'])}</span></p>"
        f"<table><tr><th>layer</th><th>shape</th><th>units</th><th>dead</th></tr>{''.join(rows)}</table>")))
    for layer, shape in made["layers"].items():
        channels = shape[0]
        _layer_page(out, layer, channels, stats, optimize is not None)
        for unit in range(channels):
            _unit_page(out, made, layer, unit, channels, stats.get((layer, unit)), tops.get((layer, unit), []),
                       paths, optimize)
    return out / "index.html"


def _layer_page(out: Path, layer: str, channels: int, stats: dict, optimized: bool) -> None:
    cells = []
    for unit in range(channels):
        suffix = picture_suffix(out, layer, unit)
        field = out / "optimized" / layer / f"{unit}.field{suffix}"
        picture = (_href("..", "optimized", layer, f"{unit}.field{suffix}") if optimized and field.is_file()
                   else _href("..", "crops", layer, f"{unit}.jpg")
                   if (out / "crops" / layer / f"{unit}.jpg").is_file() else None)
        dead = " dead" if stats.get((layer, unit), (0, 0, 0, 0))[2] else ""
        image = f"<img src='{picture}' alt='unit {unit}'><br>" if picture else ""
        cells.append(f"<div class='cell{dead}'><a href='{_href('..', 'units', layer, f'{unit}.html')}'>"
                     f"{image}{unit}</a></div>")
    page = (f"<p><a href='../index.html'>atlas</a> › {html.escape(layer)}</p><h1>{html.escape(layer)}</h1>"
            f"<p>{channels} units; {'each unit’s optimized image (the part it sees)' if optimized else 'each unit’s best crop'}"
            f"; faded: dead (zero on every image). Click a unit.</p><div class=grid>{''.join(cells)}</div>")
    path = out / "layers" / f"{layer}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_page(f"{layer} · atlas", page))


def _unit_page(out: Path, made: dict, layer: str, unit: int, channels: int, stat, hits: list, paths: list[str],
               optimize: dict | None) -> None:
    up = ("..", "..")
    nav = (f"<p><a href='{_href(*up, 'index.html')}'>atlas</a> › "
           f"<a href='{_href(*up, 'layers', layer + '.html')}'>{html.escape(layer)}</a> › unit {unit} · "
           + (f"<a href='{unit - 1}.html'>◀ {unit - 1}</a> " if unit > 0 else "")
           + (f"<a href='{unit + 1}.html'>{unit + 1} ▶</a>" if unit + 1 < channels else "") + "</p>")
    parts = [nav, f"<h1>{html.escape(layer)}, unit {unit}</h1>"]
    if stat is not None:
        mean, zero, dead, best = stat
        parts.append(f"<p>max {best if best is not None else float('nan'):.4g} · mean {mean:.4g} · zero on "
                     f"{100 * zero:.1f}% of the images · {'dead' if dead else 'alive'}</p>")
    suffix = picture_suffix(out, layer, unit)
    if optimize is not None and has_optimized(out, layer, unit):
        whole = (out / "optimized" / layer / f"{unit}{suffix}").is_file()
        kept = "" if whole else "; only the part its centre neuron sees was kept"
        parts.append(f"<h2>What it wants to see</h2><p class=muted>{html.escape(optimize['name'])}, seed "
                     f"{optimize['seed']}, {optimize['size']} px; scaled about zero{kept}</p><div class=big>"
                     + (f"<img src='{_href('..', '..', 'optimized', layer, f'{unit}{suffix}')}' alt='optimized image'>"
                        if whole else "")
                     + f"<img src='{_href('..', '..', 'optimized', layer, f'{unit}.field{suffix}')}' "
                     f"alt='the part it sees'></div>")
    crops = (out / "crops" / layer / f"{unit}.jpg").is_file()
    if hits:
        rows = "".join(f"<tr><td>#{rank + 1}</td><td>{value:.4g}</td><td title='{html.escape(paths[image])}'>"
                       f"{html.escape(Path(paths[image]).name)}</td><td>(y {y}, x {x})</td></tr>"
                       for rank, (image, value, y, x) in enumerate(hits))
        strip = (f"<p class=strip><img src='{_href('..', '..', 'crops', layer, f'{unit}.jpg')}' "
                 f"alt='top {len(hits)} crops'></p>" if crops else "")
        parts.append(f"<h2>What excites it most</h2>{strip}<table><tr><th>rank</th><th>value</th><th>file</th>"
                     f"<th>position</th></tr>{rows}</table>")
    path = out / "units" / layer / f"{unit}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_page(f"{layer} unit {unit} · atlas", "".join(parts)))
