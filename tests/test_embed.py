"""The map of a layer's representation: augmented copies of a photo land next to each other; CLI output."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from deepvis import embed
from deepvis.cli import main as cli_main
from deepvis.index import IndexingError, build, index_path

LAYER = "_blocks.15._swish_1"  # a late ReLU6: what the photo shows, not where


def augmented(photo: np.ndarray) -> list[Image.Image]:
    image = Image.fromarray(photo)
    w, h = image.size
    return [image, image.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
            image.crop((w // 10, h // 10, w - w // 10, h - h // 10)),
            ImageEnhance.Brightness(image).enhance(1.3), ImageEnhance.Contrast(image).enhance(0.7),
            image.rotate(8, resample=Image.Resampling.BILINEAR, expand=False)]


def test_copies_of_a_photo_are_each_others_nearest_neighbours(lite0, photos, tmp_path, capsys, monkeypatch):
    from skimage import data

    monkeypatch.setenv("DEEPVIS_CACHE", str(tmp_path / "cache"))
    sources = {**photos, "rocket": data.rocket()}
    folder = tmp_path / "photos"
    folder.mkdir()
    groups = {}
    for name, photo in sources.items():
        for k, image in enumerate(augmented(photo)):
            path = folder / f"{name}_{k}.jpg"
            image.save(path, quality=90)
            groups[str(path.resolve())] = name
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    out, table = tmp_path / "map.html", tmp_path / "map.csv"
    argv = ["embed", str(folder), "--layer", LAYER, "--out", str(out), "--csv", str(table), "--device", "cpu"]
    assert cli_main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 24 and result["skipped"] == [str((folder / "broken.jpg").resolve())]
    rows = list(csv.DictReader(open(table)))
    assert len(rows) == 24 and {r["path"] for r in rows} == set(groups)
    xy = np.array([[float(r["x"]), float(r["y"])] for r in rows])
    purity = embed.neighbour_purity(xy, [groups[r["path"]] for r in rows], k=3)
    assert purity >= 0.8, purity  # measured 1.0 here: every image's 3 nearest are copies of its photo
    html = out.read_text()
    assert html.count("data:image/jpeg;base64,") == 24 and "plotly_hover" in html
    # the API gives the same map for the same seed, and the predicted classes from the logits
    loaded_map = embed.embed(index_path(lite0, str(folder)), LAYER, lite0.logits_layer, tuple(lite0.class_names))
    np.testing.assert_allclose(loaded_map.xy, xy, rtol=1e-4, atol=1e-4)
    labels = {groups[p]: loaded_map.label(i) for i, p in enumerate(loaded_map.paths) if p.endswith("_0.jpg")}
    assert "cat" in labels["chelsea"] and labels["coffee"] == "espresso"
    assert len(embed.figure(loaded_map).data) == len(set(loaded_map.classes.tolist()))


def test_too_few_or_unindexed_images_are_one_line_errors(lite0, photos, tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPVIS_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "two"
    folder.mkdir()
    for name in ("chelsea", "coffee"):
        Image.fromarray(photos[name]).save(folder / f"{name}.png")
    work = build(lite0, str(folder), [LAYER])
    for _ in work:
        pass
    with pytest.raises(IndexingError, match="at least 5 indexed images"):
        embed.embed(index_path(lite0, str(folder)), LAYER, lite0.logits_layer)
    with pytest.raises(IndexingError, match="is not indexed"):
        embed.embed(index_path(lite0, str(folder)), "_blocks.3._swish_1", lite0.logits_layer)
