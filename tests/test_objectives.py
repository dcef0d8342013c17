"""Composed objectives: the expression parser, a hand-computed composed value on a tiny network, the terms'
errors, and diversity making a batch's images differ."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

import deepvis as dv
from deepvis.activations import capture
from deepvis.errors import DeepvisError
from deepvis.images import channel_stats
from deepvis.objectives import feature_distance, parse, with_diversity
from deepvis.optimize import initial_image, run
from deepvis.settings import OptimizeError, Settings
from deepvis.targets import Target, Term


@pytest.fixture(scope="module")
def tiny():
    """conv1x1 = identity on 3 channels (layer "0"), then a mean and a linear head: a layer we can compute."""
    conv = nn.Conv2d(3, 3, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
    net = nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2)).eval()
    return dv.wrap(net, input="3x16x16", mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25], classes=["a", "b"])


def test_the_parser_reads_units_weights_signs_classes_and_directions(lite0, tmp_path):
    layer = "_blocks.9._swish_1"
    target = parse(lite0, f"{layer}:5 - 0.5*{layer}:7")
    assert (target.layer, target.unit, target.weight) == (layer, 5, 1.0)
    assert target.terms == (Term(-0.5, layer, "unit", unit=7),)
    assert target.label == f"{layer} unit 5 - 0.5*{layer}:7"
    negative = parse(lite0, "-_fc:flamingo")
    assert (negative.layer, negative.unit, negative.weight, negative.terms) == ("_fc", 130, -1.0, ())
    assert parse(lite0, '_fc:"tiger cat" + 2*_fc:3').terms == (Term(2.0, "_fc", "unit", unit=3),)
    vector = np.arange(672, dtype=np.float32)
    np.save(tmp_path / "d.npy", vector)
    direction = parse(lite0, f"{layer}:@{tmp_path / 'd.npy'} + {layer}:[1, 2]")
    assert direction.weight == 0 and direction.terms[0].direction == tuple(float(v) for v in vector)
    assert direction.terms[1].direction == (1.0, 2.0)
    assert Target.from_dict(target.to_dict()) == target  # records and caches keep it whole


@pytest.mark.parametrize("text, message", [
    ("", "the objective is empty"),
    ("__import__('os').system('true')", "cannot read the objective"),
    ("_fc:3 +", "expected LAYER:UNIT at 'the end'"),
    ("_fc:3 _fc:4", "expected + or - at '_fc:4'"),
    ("2 * 3", "cannot read the objective"),
    ("_fc:1000", "unit 1000 does not exist"),
    ("_no_layer:3", "has no layer '_no_layer'"),
    ("_blocks.9._swish_1:[1, x]", "a direction is numbers separated by commas"),
])
def test_an_expression_that_does_not_parse_is_one_line(lite0, text, message):
    with pytest.raises(DeepvisError, match=re.escape(message)) as caught:
        parse(lite0, text)
    assert "\n" not in str(caught.value)


def test_a_composed_objective_is_its_weighted_sum_computed_by_hand(tiny):
    # Layer "0" is the identity on the network's input x0 / std (std 0.25 · 255 in pixel units), so at the
    # centre (8, 8) of a 16 x 16 image: a_c = x0[c, 8, 8] / 63.75.
    target = parse(tiny, "2*0:0 - 0.5*0:2 + 0:[3, 4, 0]")
    settings = Settings(decay=0.0, blur_radius=0.0, blur_every=0, norm_pct=0, contrib_pct=0, steps=3,
                        lr_policy="constant", lr=1.0)
    record = run(tiny, target, settings, size=16)
    a = initial_image(16, 0, "cpu", 3)[0, :, 8, 8] / 63.75
    want = 2 * a[0] - 0.5 * a[2] + (3 * a[0] + 4 * a[1]) / 5
    row = record.rows[0]
    assert abs(float(want)) > 0.05 and row.objectives[0] == pytest.approx(float(want), abs=1e-5)
    assert row.objectives[-1] > row.objectives[0]  # ascent on the whole sum
    # The negative of a unit: its value's opposite, and ascent lowers the unit.
    low = run(tiny, parse(tiny, "-0:1"), settings, size=16).rows[0]
    assert low.objectives[0] == pytest.approx(-float(a[1]), abs=1e-5) and low.objectives[-1] > low.objectives[0]


def test_terms_that_do_not_fit_are_one_line(tiny, lite0):
    settings = Settings(steps=2)
    with pytest.raises(OptimizeError, match="the direction has 2 values; 0 has 3 channels"):
        run(tiny, parse(tiny, "0:[1, 2]"), settings, size=16)
    with pytest.raises(OptimizeError, match="needs at least 2 images"):
        run(tiny, replace(parse(tiny, "0:1"), terms=(Term(1.0, "0", "diversity"),)), settings, size=16)
    with pytest.raises(OptimizeError, match="at least 2"):
        with_diversity(parse(tiny, "0:1"), 1.0, 1)
    with pytest.raises(OptimizeError, match="weight 0 needs other terms"):
        Target("0", 1, weight=0.0)


def _gram_similarity(loaded, pixels: np.ndarray, layer: str) -> float:
    """The mean pairwise cosine similarity of the images' Gram matrices at ``layer``: what the term lowers."""
    mean, std = channel_stats(loaded.spec.normalization, loaded.device)
    x = torch.as_tensor(pixels).permute(0, 3, 1, 2)
    with torch.no_grad():
        act = capture(loaded.module, ((x + mean).clamp(0, 255) - mean) / std, layer)[layer]
    grams = torch.nn.functional.normalize((act.flatten(2) @ act.flatten(2).transpose(1, 2)).flatten(1), dim=1)
    similarity, n = grams @ grams.T, len(grams)
    return float((similarity.sum() - similarity.diag().sum()) / (n * n - n))


def test_diversity_makes_a_batch_of_one_unit_differ(lite0):
    """Two units (one alone is at the mercy of a chaotic 40-step ascent: unit 20's distance rose by 0.2 %)."""
    layer = "_blocks.9._swish_1"
    # Without jitter, as measured below: with row 3's jitter (4), 40 steps are too few for the term to show (Gram
    # similarity 0.888 -> 0.908, unit means); at 100 it fell, 0.905 -> 0.876.
    settings = dv.preset(lite0, "3").replace(steps=40, jitter=0)
    measured = {"plain": [], "diverse": []}
    for unit in (3, 40):
        target = parse(lite0, f"{layer}:{unit}")
        # The same four starts (seeds 0-3) with the term's weight 0, then 1.
        plain = run(lite0, [replace(target, terms=(Term(0.0, layer, "diversity"),))] * 4, settings, size=64)
        diverse = run(lite0, with_diversity(target, 1.0, 4), settings, size=64)
        assert len({r.best_x.tobytes() for r in plain.rows}) == 4  # each row its own start
        assert all(r.best_objective > 0 for r in diverse.rows)  # still the unit's images
        for name, record in (("plain", plain), ("diverse", diverse)):
            pixels = np.stack([r.best_x for r in record.rows])
            measured[name].append((_gram_similarity(lite0, pixels, layer), feature_distance(lite0, pixels, layer)))
    (gram_plain, distance_plain), (gram_diverse, distance_diverse) = (np.mean(measured[k], axis=0)
                                                                      for k in ("plain", "diverse"))
    # Measured: Gram similarity 0.915 -> 0.876 and 0.920 -> 0.894; distance 0.576 -> 0.637 and 0.572 -> 0.588.
    # The Gram similarity is what the term lowers, so its drop is the margin; the distance (what the page reports)
    # moves by a few per cent either way from one CPU to another, so it must only rise (a term with no effect
    # would leave both runs, and so both figures, exactly equal).
    assert gram_diverse < gram_plain - 0.01, measured
    assert distance_diverse > distance_plain, measured


# ------------------------------------------------------------------ inversion

@pytest.fixture(scope="module")
def invertible():
    """A 1x1 convolution by an invertible 3 x 3 matrix (layer "0"): its representation determines the input."""
    conv = nn.Conv2d(3, 3, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, 0.5], [0.2, 0.0, 1.0]]).view(3, 3, 1, 1))
    net = nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2)).eval()
    return dv.wrap(net, input="3x16x16", mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25], classes=["a", "b"])


def test_inverting_an_invertible_layer_recovers_the_photo(invertible):
    from deepvis.inversion import invert, representation_distance

    photo = np.random.default_rng(0).integers(30, 225, (16, 16, 3)).astype(np.uint8)
    plain = Settings(decay=0.0, blur_radius=0.0, blur_every=0, norm_pct=0, contrib_pct=0, steps=200,
                     lr_policy="constant", lr=1e4)
    found = invert(invertible, photo, "0", plain)
    row = found.record.rows[0]
    recovered = np.clip(row.best_x + np.asarray(row.mean), 0, 255)
    assert np.abs(recovered - photo).max() < 0.05  # the photo itself, from N(0, 10) noise
    assert found.distance < 1e-4 and row.objectives[0] < -0.1  # it started far away
    assert row.best_objective == pytest.approx(-found.distance ** 2, abs=1e-6)  # the objective is -distance²
    assert representation_distance(invertible, row.best_x, photo, "0") == found.distance
    assert row.target.label == "match(the photo at 0)"


def test_inversion_on_the_embedded_model_keeps_less_with_depth_and_the_cli_says_so(lite0, tmp_path, capsys):
    from PIL import Image

    from deepvis.cli import main
    from deepvis.images import model_view
    from deepvis.inversion import invert, representation_distance

    cat = Image.open(dv.__path__[0] + "/samples/chelsea.jpg")
    view = model_view(cat, lite0.spec)
    settings = dv.preset(lite0, "fourier").replace(steps=48)
    shallow, deep = (invert(lite0, view, layer, settings, size=96) for layer in ("_blocks.2._swish", "_blocks.14._swish_1"))
    for found in (shallow, deep):
        assert 0 < found.distance < 0.8  # near the photo's representation (noise starts at about 1)
    # What survives in pixels: the shallow layer's image is closer to the photo than the deep layer's.
    photo = np.asarray(Image.fromarray(view).resize((96, 96)), np.float32)

    def pixels_off(found) -> float:
        row = found.record.rows[0]
        return float(np.abs(np.clip(row.best_x + np.asarray(row.mean), 0, 255) - photo).mean())

    assert pixels_off(shallow) < pixels_off(deep)
    path = tmp_path / "cat.png"
    cat.save(path)
    assert main(["invert", str(path), "--layer", "_blocks.2._swish", "--steps", "48", "--size", "96", "--pair",
                 "--out", str(tmp_path / "p.png"), "--npy", str(tmp_path / "x.npy"), "--device", "cpu"]) == 0
    out = __import__("json").loads(capsys.readouterr().out)
    assert out["relative_distance"] == pytest.approx(shallow.distance, rel=1e-5)
    best = np.load(tmp_path / "x.npy")
    assert representation_distance(lite0, best, view, "_blocks.2._swish") == pytest.approx(out["relative_distance"])
    assert Image.open(tmp_path / "p.png").size == (192, 96)  # the photo beside its inversion
