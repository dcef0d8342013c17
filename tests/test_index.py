"""Indexing a collection: top images equal a brute-force max, incremental re-indexing, merging shards,
broken files, invalidation, and the `index` / `top` / `merge` commands."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepvis import index
from deepvis.activations import capture
from deepvis.cli import main
from deepvis.images import decode_image, model_view, to_batch
from deepvis.models import LoadedModel
from tests.helpers import drain as run
from tests.helpers import jpeg_bytes

LAYERS = ("_blocks.9._swish_1", "_fc")


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jpg":
        path.write_bytes(jpeg_bytes(array))
    else:
        Image.fromarray(array).save(path)


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    """Ten photos made from scikit-image's samples in nested subfolders, a broken JPEG and a text file."""
    from skimage import data

    root = tmp_path / "photos"
    chelsea, coffee, astronaut, rocket = data.chelsea(), data.coffee(), data.astronaut(), data.rocket()
    camera = np.repeat(data.camera()[..., None], 3, axis=2)
    made = {"cats/chelsea.jpg": chelsea, "cats/chelsea_flipped.png": chelsea[:, ::-1].copy(),
            "cats/deeper/chelsea_crop.jpg": chelsea[50:250, 100:400].copy(), "food/coffee.jpg": coffee,
            "food/coffee_crop.png": coffee[100:, 150:550].copy(), "people/astronaut.jpg": astronaut,
            "people/astronaut_face.png": astronaut[0:250, 150:350].copy(), "rocket.jpg": rocket,
            "camera.png": camera, "camera_dark.jpg": (camera // 3).astype(np.uint8)}
    for name, array in made.items():
        _save(root / name, array)
    (root / "food" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    (root / "notes.txt").write_text("not an image")
    return root


def brute_force(loaded: LoadedModel, root: Path, layer: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Every readable image's per-channel max and flat argmax, one image at a time."""
    paths, values, positions = [], [], []
    for path in sorted(p for p in root.rglob("*") if p.suffix in (".jpg", ".png")):
        try:
            view = model_view(decode_image(path.read_bytes()), loaded.spec)
        except ValueError:
            continue
        act = capture(loaded.module, to_batch(view, loaded.spec.normalization), layer)[layer][0]
        flat = act.flatten(1) if act.dim() == 3 else act[:, None]
        value, position = flat.max(dim=1)
        paths.append(str(path.resolve()))
        values.append(value.numpy())
        positions.append(position.numpy())
    return paths, np.stack(values), np.stack(positions)


def assert_same_top(got: list[index.Hit], want: list[tuple[str, float, int, int]]) -> None:
    """Same order, values and positions; a swap is allowed only between values within float rounding."""
    assert len(got) == len(want)
    np.testing.assert_allclose([h.value for h in got], [w[1] for w in want], rtol=1e-4, atol=1e-5)
    for i, (hit, (path, value, y, x)) in enumerate(zip(got, want)):
        near = [w for w in want if abs(w[1] - value) <= 1e-4 * max(1.0, abs(value))]
        if len(near) == 1:  # no near tie: the exact image and position
            assert (hit.path, hit.y, hit.x) == (path, y, x), f"rank {i + 1}"
        else:
            assert hit.path in {w[0] for w in near}


def test_top_equals_brute_force_max_over_the_folder(lite0, folder, tmp_path):
    summary, steps = run(index.build(lite0, folder, LAYERS, path=tmp_path / "i.sqlite", batch=4))
    assert (summary.images, summary.new) == (11, 11)  # ten photos and the broken JPEG; the text file is no image
    assert [Path(p).name for p, _ in summary.skipped] == ["broken.jpg"]
    assert "damaged" in summary.skipped[0][1] and "\n" not in summary.skipped[0][1]  # its one-line reason
    assert steps[-1].done == steps[-1].total == 11 and len(steps) == 4  # a start and three batches of 4
    for layer in LAYERS:
        paths, values, positions = brute_force(lite0, folder, layer)
        assert len(paths) == 10
        width = lite0.layer(layer).shape[-1] if len(lite0.layer(layer).shape) == 3 else 1
        for unit in (0, 5, 17, 31) if layer != "_fc" else (281, 504, 417):
            order = sorted(range(len(paths)), key=lambda i: (-values[i, unit], paths[i]))[:9]
            want = [(paths[i], float(values[i, unit]), int(positions[i, unit]) // width,
                     int(positions[i, unit]) % width) for i in order]
            assert_same_top(index.top(tmp_path / "i.sqlite", layer, unit, 9), want)
            assert_same_top(index.top(tmp_path / "i.sqlite", layer, unit, 10),  # k > TOP_K path too
                            [(paths[i], float(values[i, unit]), int(positions[i, unit]) // width,
                              int(positions[i, unit]) % width)
                             for i in sorted(range(len(paths)), key=lambda i: (-values[i, unit], paths[i]))])
    assert "chelsea" in Path(index.top(tmp_path / "i.sqlite", "_fc", 281, 1)[0].path).name  # tabby cat: the cat


def test_reindexing_reads_only_new_changed_or_missing_and_forgets_deleted(lite0, folder, tmp_path, monkeypatch):
    db = tmp_path / "i.sqlite"
    run(index.build(lite0, folder, LAYERS[:1], path=db))
    read: list[str] = []
    real_read = index._read
    monkeypatch.setattr(index, "_read", lambda entry, loaded: read.append(Path(entry.path).name) or
                        real_read(entry, loaded))
    summary, _ = run(index.build(lite0, folder, LAYERS[:1], path=db))
    assert (summary.new, read) == (0, [])  # nothing new: nothing read, the broken file included
    from skimage import data

    _save(folder / "new" / "horse.png", (data.horse()[..., None].repeat(3, axis=2) * 255).astype(np.uint8))
    changed = folder / "rocket.jpg"
    changed.write_bytes(jpeg_bytes(np.ascontiguousarray(data.rocket()[::-1])))
    os.utime(changed, ns=(1, 1))  # a different mtime for sure
    (folder / "camera.png").unlink()
    summary, _ = run(index.build(lite0, folder, LAYERS[:1], path=db))
    assert sorted(read) == ["horse.png", "rocket.jpg"] and summary.new == 2 and summary.images == 11
    top = index.top(db, LAYERS[0], 5, 16)
    assert all(not h.path.endswith("camera.png") for h in top)
    paths, values, _ = brute_force(lite0, folder, LAYERS[0])
    assert sorted(h.path for h in top) == sorted(paths)  # all ten, the new one in, the deleted one out
    read.clear()
    summary, _ = run(index.build(lite0, folder, LAYERS, path=db))  # a new layer: every good file is read again
    assert sorted(read) == sorted(Path(p).name for p in paths) and summary.layers == tuple(sorted(LAYERS))


def test_merging_shards_equals_indexing_everything(lite0, folder, tmp_path):
    (folder / "misc").mkdir()
    for path in list(folder.iterdir()):
        if path.is_file():
            path.rename(folder / "misc" / path.name)
    whole = tmp_path / "whole.sqlite"
    run(index.build(lite0, folder, LAYERS, path=whole, batch=3))
    shards = []
    for number, part in enumerate(("cats", "food", "people", "misc")):  # each with its own batch boundaries
        shards.append(tmp_path / f"{part}.sqlite")
        run(index.build(lite0, folder / part, LAYERS, path=shards[-1], batch=2 + number))
    merged = index.merge(tmp_path / "merged.sqlite", shards)
    for layer in LAYERS:
        channels = lite0.layer(layer).shape[0]
        for unit in range(0, channels, 7):
            want = index.top(whole, layer, unit, 9)
            assert_same_top(index.top(merged, layer, unit, 9), [(h.path, h.value, h.y, h.x) for h in want])
    with sqlite3.connect(merged) as a, sqlite3.connect(whole) as b:
        query = "SELECT path, size, mtime_ns, error FROM images ORDER BY path"
        assert a.execute(query).fetchall() == b.execute(query).fetchall()  # the broken file is listed too
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as db:
        db.executescript(index._SCHEMA)
        db.execute("INSERT INTO meta VALUES ('model', 'another-model')")
    with pytest.raises(index.IndexingError, match="different models"):
        index.merge(tmp_path / "bad.sqlite", [shards[0], other])


def test_an_index_made_with_other_weights_is_not_reused(lite0, folder, tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPVIS_CACHE", str(tmp_path / "cache"))
    from deepvis.models import load_model

    random = load_model("efficientnet_lite0", "random", "cpu", seed=3)
    assert index.index_path(random, folder) != index.index_path(lite0, folder)
    db = tmp_path / "shared.sqlite"
    run(index.build(lite0, folder, LAYERS[:1], path=db))
    summary, _ = run(index.build(random, folder, LAYERS[:1], path=db))  # same file, other weights: emptied
    assert summary.new == 11
    with sqlite3.connect(db) as con:
        assert dict(con.execute("SELECT key, value FROM meta"))["model"].startswith("efficientnet_lite0-random3-")


def test_bad_requests_fail_in_one_line(lite0, folder, tmp_path):
    with pytest.raises(ValueError, match="no folder"):
        index.build(lite0, tmp_path / "missing", LAYERS)
    with pytest.raises(ValueError, match="has no layer"):
        index.build(lite0, folder, ["nope"])
    db = tmp_path / "i.sqlite"
    run(index.build(lite0, folder, LAYERS[:1], path=db))
    with pytest.raises(index.IndexingError, match="not indexed"):
        index.top(db, "_fc", 0)
    with pytest.raises(index.IndexingError, match="channels 0-"):
        index.top(db, LAYERS[0], 10_000)
    with pytest.raises(index.IndexingError, match="no index"):
        index.top(tmp_path / "none.sqlite", LAYERS[0], 0)


def test_cli_index_and_top_print_json_and_write_the_sheet(folder, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DEEPVIS_CACHE", str(tmp_path / "cache"))
    assert main(["index", str(folder), "--layers", "_blocks.9._swish_1", "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"images", "new", "skipped", "layers", "seconds"} and out["new"] == 11
    assert [Path(p).name for p in out["skipped"]] == ["broken.jpg"]
    sheet = tmp_path / "top.png"
    assert main(["top", str(folder), "--layer", "_blocks.9._swish_1", "--unit", "5", "--out", str(sheet),
                 "--device", "cpu"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 9 and all(set(h) == {"path", "value", "y", "x"} for h in hits)
    assert [h["value"] for h in hits] == sorted((h["value"] for h in hits), reverse=True)
    image = np.asarray(Image.open(sheet))
    assert image.shape[0] > 3 * 128 and image.shape[1] > 3 * 128 and image.std() > 10
    assert main(["top", str(folder), "--layer", "_fc", "--unit", "1", "--device", "cpu"]) == 2
    assert "not indexed" in capsys.readouterr().err


def test_an_interrupted_indexing_keeps_its_finished_batches(lite0, folder, tmp_path, monkeypatch):
    db = tmp_path / "i.sqlite"
    work = index.build(lite0, folder, LAYERS[:1], path=db, batch=4)
    assert next(work).done == 0 and next(work).done == 4
    work.close()  # interrupted after the first batch
    read: list[str] = []
    real_read = index._read
    monkeypatch.setattr(index, "_read", lambda entry, loaded: read.append(entry.path) or real_read(entry, loaded))
    summary, _ = run(index.build(lite0, folder, LAYERS[:1], path=db, batch=4))
    assert summary.new == len(read) == 7  # the 4 of the finished batch are not read again
    paths, values, _ = brute_force(lite0, folder, LAYERS[0])
    assert sorted(h.path for h in index.top(db, LAYERS[0], 3, 16)) == sorted(paths)
