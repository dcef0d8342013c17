"""The atlas: streaming top-k merged exactly (hand-computed), equal to brute force over a folder with broken
files, resumed after an interruption or a full disk, and the CLI's one-line refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deepvis import atlas, index
from deepvis.activations import capture
from deepvis.images import model_view, to_batch
from deepvis.progress import drain
from deepvis.topk import LayerTop

REPO = Path(__file__).resolve().parents[1]


# --- streaming top-k on hand-made numbers -----------------------------------------------------------------------

def test_records_of_a_batch_are_each_units_best_images_in_order():
    # 3 images, 2 units, maps of 1 × 2 positions.
    act = torch.tensor([[[[1.0, 3.0]], [[0.0, -1.0]]],
                        [[[5.0, 2.0]], [[0.0, 0.0]]],
                        [[[3.0, 0.5]], [[-2.0, -4.0]]]])
    top = LayerTop.of_batch(act, np.array([10, 11, 12]), k=2)
    # unit 0: maxima 3 (image 10, position 1), 5 (11, 0), 3 (12, 0): 5 first, then the tie 3/3 to image 10.
    assert top.unit(0) == [(5.0, 11, 0), (3.0, 10, 1)]
    # unit 1: maxima 0, 0, -2: the tie at 0 goes to the lower image number; its first position.
    assert top.unit(1) == [(0.0, 10, 0), (0.0, 11, 0)]
    assert top.count == 3
    np.testing.assert_allclose(top.mean, [(2 + 3.5 + 1.75) / 3, (-0.5 + 0 - 3) / 3])
    np.testing.assert_allclose(top.zero, [0, 1])  # unit 1's maximum is <= 0 on every image
    assert top.dead.tolist() == [False, True]


def test_merging_parts_equals_one_pass_in_any_order():
    generator = torch.Generator().manual_seed(0)
    act = torch.randn(40, 5, 3, 3, generator=generator).round(decimals=1)  # many ties
    numbers = np.arange(100, 140)
    whole = LayerTop.of_batch(act, numbers, k=7)
    parts = [LayerTop.of_batch(act[i:i + 6], numbers[i:i + 6], k=7) for i in range(0, 40, 6)]
    for order in (parts, parts[::-1], parts[1::2] + parts[::2]):
        merged = order[0]
        for part in order[1:]:
            merged = merged.merge(part)
        for name in ("values", "images", "positions", "sums", "silent"):
            np.testing.assert_allclose(getattr(merged, name), getattr(whole, name), rtol=1e-12)
        assert merged.count == 40
    # And the records are the brute-force top 7 of each unit.
    flat = act.flatten(2)
    for unit in range(5):
        best = sorted(((-float(flat[i, unit].max()), 100 + i) for i in range(40)))[:7]
        assert [(-v, n) for v, n in best] == [(v, n) for v, n, _ in whole.unit(unit)]


def test_fewer_images_than_k_are_padding_not_records():
    top = LayerTop.of_batch(torch.ones(2, 3), np.array([0, 1]), k=5)
    assert top.unit(2) == [(1.0, 0, 0), (1.0, 1, 0)]
    assert top.merge(LayerTop.empty(5, 3)).unit(2) == top.unit(2)


# --- an atlas over a folder with broken files ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def folder(tmp_path_factory, photos) -> Path:
    """Ten photos (crops of scikit-image's, some in a subfolder) and three broken files."""
    root = tmp_path_factory.mktemp("collection")
    (root / "sub").mkdir()
    rng = np.random.default_rng(0)
    names = list(photos)
    for i in range(10):
        photo = photos[names[i % len(names)]]
        y, x = rng.integers(0, 100, 2)
        crop = Image.fromarray(photo[y:y + 300, x:x + 300])
        (root / ("sub" if i % 3 == 0 else ".") / f"photo{i:02d}.{'png' if i % 2 else 'jpg'}").parent.mkdir(
            exist_ok=True)
        crop.save(root / ("sub" if i % 3 == 0 else ".") / f"photo{i:02d}.{'png' if i % 2 else 'jpg'}")
    (root / "notes.jpg").write_text("not a photo")
    good = (root / "photo01.png").read_bytes()
    (root / "sub" / "cut.png").write_bytes(good[: len(good) // 3])
    (root / "empty.webp").write_bytes(b"")
    return root


def brute_force(loaded, paths: list[str], layer: str) -> dict[int, list[tuple[str, float, int, int]]]:
    """Every unit's images ordered by (value high first, path), each image run alone."""
    per_image = {}
    for path in paths:
        view = index.read_view(path, loaded)
        if isinstance(view, str):
            continue
        act = capture(loaded.module, to_batch([view], loaded.spec.normalization), [layer])[layer][0]
        flat = act.flatten(1) if act.dim() == 3 else act.unsqueeze(1)
        values, where = flat.max(dim=1)
        width = act.shape[2] if act.dim() == 3 else 1
        per_image[path] = [(float(v), int(w) // width, int(w) % width) for v, w in zip(values, where)]
    units = len(next(iter(per_image.values())))
    return {u: sorted(((p, *per_image[p][u]) for p in per_image), key=lambda r: (-r[1], r[0])) for u in range(units)}


def assert_same_records(got, want, k: int) -> None:
    """Same images at the same positions, in the same order; values to float rounding of batched kernels."""
    assert [(h.path, h.y, h.x) for h in got] == [(p, y, x) for p, _, y, x in want[:k]]
    np.testing.assert_allclose([h.value for h in got], [v for _, v, _, _ in want[:k]], rtol=1e-4, atol=1e-5)


def test_an_atlas_equals_brute_force_and_lists_the_broken_files(lite0, folder, tmp_path):
    layers = [lite0.default_layer, lite0.logits_layer]
    summary = drain(atlas.build(lite0, folder, layers, tmp_path / "atlas", k=4, shard=3, batch=2))
    listing = [line.split("\t")[0] for line in (tmp_path / "atlas" / "collection.tsv").read_text().splitlines()]
    assert len(listing) == 13 and summary.images == 13 and summary.shards == 5
    assert sorted(Path(p).name for p, _ in summary.skipped) == ["cut.png", "empty.webp", "notes.jpg"]
    assert all(reason and "\n" not in reason for _, reason in summary.skipped)
    made = atlas.manifest(tmp_path / "atlas")
    assert made["model"]["key"] == atlas.coll.model_key(lite0) and made["k"] == 4
    assert made["layers"][lite0.default_layer] == list(lite0.layer(lite0.default_layer).shape)
    assert len(made["skipped"]) == 3 and made["collection"]["images"] == 13
    for layer in layers:
        want = brute_force(lite0, listing, layer)
        for unit in range(0, len(want), 37):
            assert_same_records(atlas.top(tmp_path / "atlas", layer, unit, 4), want[unit], 4)
        maxima = np.array([[r[1] for r in sorted(want[u], key=lambda r: r[0])] for u in range(len(want))])
        for unit in (0, 5, 17):
            stats = atlas.unit_stats(tmp_path / "atlas", layer, unit)
            assert stats["max"] == pytest.approx(maxima[unit].max(), rel=1e-4)
            assert stats["zero"] == pytest.approx(float((maxima[unit] <= 0).mean()))
            assert stats["dead"] == bool((maxima[unit] <= 0).all())
    # The same answers as an index of the same folder (`deepvis top` reads either).
    built = drain(index.build(lite0, folder, [lite0.default_layer], path=tmp_path / "index.sqlite"))
    assert len(built.skipped) == 3
    for unit in (0, 100, 671):
        got = atlas.top(tmp_path / "atlas", lite0.default_layer, unit, 4)
        want = index.top(tmp_path / "index.sqlite", lite0.default_layer, unit, 4)
        assert [(h.path, h.y, h.x) for h in got] == [(h.path, h.y, h.x) for h in want]
    assert not (tmp_path / "atlas" / "work").exists() or not any((tmp_path / "atlas" / "work").iterdir())


def test_an_interrupted_atlas_resumes_where_it_stopped(lite0, folder, tmp_path):
    layers = [lite0.default_layer]
    whole = drain(atlas.build(lite0, folder, layers, tmp_path / "whole", k=3, shard=4))
    work = atlas.build(lite0, folder, layers, tmp_path / "resumed", k=3, shard=4)
    steps = [next(work), next(work), next(work)]  # read back (nothing), then two shards finished
    work.close()  # Ctrl-C between shards
    assert steps[0].resumed and steps[0].done == 0 and steps[2].done == 8
    assert not atlas.is_atlas(tmp_path / "resumed")
    again = atlas.build(lite0, folder, layers, tmp_path / "resumed", k=3, shard=4)
    first = next(again)
    assert first.resumed and first.done == 8  # the two finished shards are not read again
    summary = drain(again)
    assert summary.computed == 2 and whole.computed == 4
    for unit in range(0, 672, 61):
        a = atlas.top(tmp_path / "whole", layers[0], unit, 3)
        b = atlas.top(tmp_path / "resumed", layers[0], unit, 3)
        assert [(h.path, h.y, h.x) for h in a] == [(h.path, h.y, h.x) for h in b]
        np.testing.assert_allclose([h.value for h in a], [h.value for h in b], rtol=1e-5)


def test_a_full_disk_loses_nothing_finished(lite0, folder, tmp_path, monkeypatch):
    layers = [lite0.default_layer]
    writes = []
    real = atlas.write_atomic

    def fills_up(path, data):
        writes.append(path.name)
        if len(writes) == 3:
            raise OSError(28, "No space left on device")
        real(path, data)

    monkeypatch.setattr(atlas, "write_atomic", fills_up)
    with pytest.raises(OSError, match="No space left"):
        drain(atlas.build(lite0, folder, layers, tmp_path / "atlas", k=3, shard=4))
    monkeypatch.setattr(atlas, "write_atomic", real)
    resumed = atlas.build(lite0, folder, layers, tmp_path / "atlas", k=3, shard=4)
    assert next(resumed).done == 8  # the two shards written before the disk filled up
    summary = drain(resumed)
    assert summary.computed == 2 and atlas.is_atlas(tmp_path / "atlas")
    assert not list((tmp_path / "atlas" / "work").glob("*.part"))


def test_a_text_file_lists_a_collection_and_a_missing_path_is_reported(lite0, folder, tmp_path):
    listing = tmp_path / "photos.txt"
    listing.write_text(f"# a comment\n{folder / 'photo01.png'}\n\n{folder / 'sub' / 'photo00.jpg'}\ngone.jpg\n")
    summary = drain(atlas.build(lite0, listing, [lite0.logits_layer], tmp_path / "atlas", k=2))
    assert summary.images == 3 and [Path(p).name for p, _ in summary.skipped] == ["gone.jpg"]
    assert len(atlas.top(tmp_path / "atlas", lite0.logits_layer, 0, 2)) == 2


def deepvis(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deepvis", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=600)


def test_cli_builds_an_atlas_that_top_reads_and_refuses_bad_input_in_one_line(folder, tmp_path):
    out = tmp_path / "atlas"
    made = deepvis("atlas", str(folder), "--out", str(out), "--k", "3", "--layers", "_blocks.9._swish_1")
    assert made.returncode == 0, made.stderr
    summary = json.loads(made.stdout)
    assert summary["images"] == 13 and len(summary["skipped"]) == 3 and summary["units"] == 672
    assert "image/s" in made.stderr  # the bar: images per second and time left
    top = deepvis("top", str(out), "--layer", "_blocks.9._swish_1", "--unit", "5", "--k", "2")
    assert top.returncode == 0, top.stderr
    hits = json.loads(top.stdout)
    assert [set(h) for h in hits] == [{"path", "value", "y", "x"}] * 2
    for args, says in [
        (("atlas", str(folder), "--out", str(tmp_path / "b"), "--ray", "127.0.0.1:1"), "cannot reach Ray"),
        (("atlas", str(folder), "--out", str(tmp_path / "c"), "--layers", "nope"), "has no layer 'nope'"),
        (("atlas", str(folder), "--out", str(out), "--weights", "random"), "choose another folder"),
        (("top", str(out), "--layer", "_blocks.9._swish_1", "--unit", "5", "--weights", "random"), "not this model"),
        (("top", str(out), "--layer", "_blocks.9._swish_1", "--unit", "5", "--k", "4"), "keeps 3 images"),
    ]:
        result = deepvis(*args)
        assert result.returncode == 2, (args, result.stderr)
        line = result.stderr.strip().splitlines()[-1]
        assert says in line and "Traceback" not in result.stderr, (args, result.stderr)


def test_optimized_images_and_crops_are_the_units_and_a_rerun_redoes_nothing(lite0, folder, tmp_path):
    from deepvis import optimize as opt
    from deepvis import presets
    from deepvis.atlas_pictures import CROP, crops_path, load_optimized
    from deepvis.targets import Target

    layer = "_blocks.0._swish"
    short = presets.resolve(lite0, "3").replace(steps=20)
    out = tmp_path / "atlas"
    summary = drain(atlas.build(lite0, folder, [layer], out, k=3, optimize=short, size=32, unit_batch=12))
    assert summary.optimized == 32 and summary.crops == 32
    # A unit's image in the bundle is its own run's best image (batched with others, equal to running alone).
    alone = opt.run(lite0, [Target(layer, 7)], short, seed=0, size=32).rows[0]
    found = load_optimized(out, layer, 7)
    np.testing.assert_allclose(found.x, alone.best_x, atol=1e-3)
    assert found.objective == pytest.approx(alone.best_objective, rel=1e-4)
    strip = np.asarray(Image.open(crops_path(out, layer, 7)))
    assert strip.shape == (CROP, 3 * CROP, 3) and strip.std() > 0
    made = atlas.manifest(out)
    assert made["optimize"]["settings"] == short.to_dict() and made["optimize"]["size"] == 32
    assert (out / "index.html").is_file() and (out / "units" / layer / "31.html").is_file()
    # The same command again: nothing computed, nothing optimized, nothing cropped.
    again = drain(atlas.build(lite0, folder, [layer], out, k=3, optimize=short, size=32))
    assert (again.computed, again.optimized, again.crops) == (0, 0, 0)
    with pytest.raises(atlas.AtlasError, match="images optimized with preset"):
        atlas.build(lite0, folder, [layer], out, k=3, optimize=short, size=48)


def test_new_photos_make_new_records_and_crops(lite0, folder, tmp_path):
    import shutil

    layer = lite0.default_layer
    copy = tmp_path / "photos"
    shutil.copytree(folder, copy)
    first = drain(atlas.build(lite0, copy, [layer], tmp_path / "atlas", k=2))
    assert first.crops == 672
    strip = (tmp_path / "atlas" / "crops" / layer / "0.jpg").read_bytes()
    best = atlas.top(tmp_path / "atlas", layer, 0, 1)[0]
    # A new photo (the unit's best, mirrored): the records are redone, and every crop with them (crops=672).
    Image.open(best.path).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(copy / "aaa_new.png")
    again = drain(atlas.build(lite0, copy, [layer], tmp_path / "atlas", k=2))
    assert again.images == first.images + 1 and again.computed == again.shards and again.crops == 672
    assert atlas.manifest(tmp_path / "atlas")["collection"]["images"] == 14
    listing = (tmp_path / "atlas" / "collection.tsv").read_text()
    assert "aaa_new.png" in listing and strip  # the first strip existed; the second run wrote every strip again


def test_a_compact_atlas_keeps_the_seen_part_only_and_it_draws_the_same(lite0, folder, tmp_path):
    from deepvis import patterns, presets
    from deepvis.atlas_pictures import field_only, load_optimized
    from deepvis.targets import Target

    layer = "_blocks.0._swish"
    short = presets.resolve(lite0, "3").replace(steps=20)
    for name, compact in (("full", False), ("compact", True)):
        drain(atlas.build(lite0, folder, [layer], tmp_path / name, k=2, optimize=short, size=64, compact=compact,
                          crops=not compact))
    assert not list((tmp_path / "compact" / "optimized").rglob("*.npz"))
    assert sorted(p.name for p in (tmp_path / "compact" / "optimized" / layer).glob("9.*")) == [
        "9.field.jpg", "9.json"]
    assert not (tmp_path / "compact" / "crops").exists() and (tmp_path / "full" / "crops").is_dir()
    assert atlas.manifest(tmp_path / "compact")["crops"] is False
    assert atlas.top(tmp_path / "compact", layer, 9, 2) == atlas.top(tmp_path / "full", layer, 9, 2)
    box = patterns.field_of(lite0, Target(layer, 0), 64)
    top, left, bottom, right = box
    assert 0 < top and bottom < 64  # a field inside the image: the test sees what is dropped around it
    for unit in (0, 9, 31):
        full, small = load_optimized(tmp_path / "full", layer, unit), load_optimized(tmp_path / "compact", layer, unit)
        assert field_only(tmp_path / "compact", layer, unit) and not field_only(tmp_path / "full", layer, unit)
        assert small.objective == pytest.approx(full.objective) and small.mean == pytest.approx(full.mean)
        assert small.x.shape == (64, 64, 3)
        a, b = patterns.shown(full, box).astype(float), small.x[top:bottom, left:right] + 127.5
        # The field's display, as JPEG at quality 90, full colour resolution, on pixel noise (the hardest case).
        assert a.shape == b.shape and np.abs(a - b).mean() < 8
        outside = small.x.copy()
        outside[top:bottom, left:right] = 0
        assert not outside.any() and np.abs(small.x[top:bottom, left:right]).max() > 10
    page = (tmp_path / "compact" / "units" / layer / "9.html").read_text()
    assert "9.jpg" not in page and "9.field.jpg" in page and "only the part its centre neuron sees" in page
    assert "crops" not in page and "<th>rank</th>" in page  # the records are listed, without a strip
    assert "9.jpg" in (tmp_path / "full" / "units" / layer / "9.html").read_text()
