"""A map of a layer's representation over a collection: one point per image, near points alike to the layer.

Conventions
-----------
* **Features** are each image's per-channel maximum of the layer (max pooling over the map), read from the
  collection's index (:func:`deepvis.index.features`): what indexing already computed, no new forward pass.
  Use a layer after a nonlinearity (a ReLU/ReLU6 node), as the survey this follows insists.
* Each channel is standardized over the collection (mean 0, std 1; a constant channel stays 0), then embedded
  in 2-D by scikit-learn's t-SNE (``init="pca"``, perplexity ``min(30, (N − 1) / 3)``, ``random_state=seed``),
  so a seed gives the same map.  At least :data:`MIN_IMAGES` images.
* **Colour**: each image's predicted class, the argmax of the logits layer's entry in the same index.
* :func:`figure` is a Plotly scatter (hover: file name and class); :func:`write_html` writes it as one
  standalone HTML file (Plotly's JavaScript inline, nothing fetched) whose hover also shows the image's
  thumbnail (:data:`HOVER_JS`, which the Activations page attaches to its chart too), and :func:`write_csv`
  the coordinates.
"""

from __future__ import annotations

import base64
import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepvis import index

MIN_IMAGES = 5
THUMB = 96


@dataclass(frozen=True)
class Embedding:
    layer: str
    paths: list[str]
    xy: np.ndarray  # (N, 2) float
    classes: np.ndarray  # (N,) int, the predicted class of each image
    class_names: tuple[str, ...]

    def label(self, i: int) -> str:
        c = int(self.classes[i])
        return self.class_names[c] if c < len(self.class_names) else f"class {c}"


def embed(index_file: str | Path, layer: str, logits_layer: str, class_names: tuple[str, ...] = (),
          seed: int = 0) -> Embedding:
    """The t-SNE map of ``layer``'s max-pooled features over the indexed collection (module docstring)."""
    from sklearn.manifold import TSNE

    paths, values = index.features(index_file, layer)
    if len(paths) < MIN_IMAGES:
        raise index.IndexingError(f"A map needs at least {MIN_IMAGES} indexed images; this index has {len(paths)}.")
    logit_paths, logits = index.features(index_file, logits_layer)
    predicted = dict(zip(logit_paths, logits.argmax(axis=1)))
    missing = [p for p in paths if p not in predicted]
    if missing:
        raise index.IndexingError(f"{len(missing)} images have {layer} but not {logits_layer} indexed; index both.")
    std = values.std(axis=0)
    scaled = (values - values.mean(axis=0)) / np.where(std > 1e-12, std, 1.0)
    perplexity = min(30.0, (len(paths) - 1) / 3)
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(scaled)
    return Embedding(layer, paths, xy, np.array([predicted[p] for p in paths]), tuple(class_names))


def neighbour_purity(xy: np.ndarray, groups: list[str], k: int = 3) -> float:
    """The share of each point's ``k`` nearest neighbours (2-D, Euclidean) in its own group, averaged."""
    distances = np.linalg.norm(xy[:, None, :] - xy[None, :, :], axis=2)
    np.fill_diagonal(distances, np.inf)
    nearest = np.argsort(distances, axis=1)[:, :k]
    own = np.array(groups)
    return float(np.mean(own[nearest] == own[:, None]))


def figure(embedding: Embedding):
    """A Plotly scatter, one trace per predicted class (so the legend names them); points carry their index."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for c in sorted(set(embedding.classes.tolist()), key=lambda c: -int((embedding.classes == c).sum())):
        members = np.flatnonzero(embedding.classes == c)
        fig.add_trace(go.Scatter(
            x=embedding.xy[members, 0], y=embedding.xy[members, 1], mode="markers", name=embedding.label(members[0]),
            customdata=members, text=[Path(embedding.paths[i]).name for i in members],
            hovertemplate="%{text}<br>" + embedding.label(members[0]) + "<extra></extra>", marker={"size": 9}))
    fig.update_layout(title=f"{embedding.layer} · t-SNE · colour: predicted class",
                      xaxis={"visible": False}, yaxis={"visible": False}, height=640, legend={"itemsizing": "constant"})
    return fig


def thumbnail(path: str, size: int = THUMB) -> str:
    """A JPEG data URL of the image at ``path`` (longer side ``size``), or ``""`` if it cannot be read."""
    from deepvis.images import ImageDecodeError, decode_image
    from deepvis.render import jpeg_bytes

    try:
        image = decode_image(Path(path).read_bytes(), max_side=2 * size)  # a JPEG decodes at a fraction of its size
    except (OSError, ImageDecodeError):
        return ""
    image.thumbnail((size, size))
    return "data:image/jpeg;base64," + base64.b64encode(jpeg_bytes(np.asarray(image))).decode()


HOVER_JS = """
function deepvisHover(plot, thumbs) {
  plot.deepvisThumbs = thumbs;  // a later call with the same plot only swaps the pictures
  if (plot.deepvisHooked) return;
  plot.deepvisHooked = true;
  plot.on('plotly_hover', function(e) {
    var point = e.points[0], index = Array.isArray(point.customdata) ? point.customdata[0] : point.customdata;
    var src = plot.deepvisThumbs[index];
    if (!src) return;
    var box = plot.deepvisBox;
    if (!box || !box.isConnected) {
      box = plot.deepvisBox = document.createElement('img');
      box.className = 'deepvis-hover';
      box.deepvisPlot = plot;
      box.style.cssText = 'position:fixed;z-index:1000;pointer-events:none;border:1px solid #888;'
        + 'background:#fff;box-shadow:0 2px 8px rgba(0,0,0,.3);';
      document.body.appendChild(box);
    }
    box.src = src;
    box.style.left = (e.event.clientX + 16) + 'px'; box.style.top = (e.event.clientY + 16) + 'px';
  });
  plot.on('plotly_unhover', function() { if (plot.deepvisBox) plot.deepvisBox.remove(); });
}
"""  # each point's customdata is its index into ``thumbs`` (JPEG data URLs); the picture follows the pointer


def thumbnails(paths: list[str], size: int = THUMB) -> Iterator[str]:
    """:func:`thumbnail` of each path in turn (a generator, so a caller can show progress)."""
    for path in paths:
        yield thumbnail(path, size)


def write_html(embedding: Embedding, out: str | Path) -> Path:
    """One standalone HTML file: the scatter, with each image's thumbnail shown on hover."""
    thumbs = list(thumbnails(embedding.paths))
    out = Path(out)
    figure(embedding).write_html(out, include_plotlyjs=True, full_html=True,
                                 post_script=HOVER_JS + f"deepvisHover(document.getElementById('{{plot_id}}'), "
                                                        f"{json.dumps(thumbs)});")
    return out


def write_csv(embedding: Embedding, out: str | Path) -> Path:
    out = Path(out)
    with open(out, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "x", "y", "class", "class_name"])
        for i, path in enumerate(embedding.paths):
            writer.writerow([path, f"{embedding.xy[i, 0]:.6g}", f"{embedding.xy[i, 1]:.6g}",
                             int(embedding.classes[i]), embedding.label(i)])
    return out
