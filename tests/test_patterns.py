"""Optimized images kept on disk (the unit view's picture, pattern mode's grid) and the pattern grid image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import deepvis
from deepvis import optimize as opt
from deepvis import patterns, render
from deepvis.models import LoadedModel
from deepvis.settings import Settings
from deepvis.targets import Target
from tests.helpers import drain

SIZE = 16
CHANNELS = 5


def tiny_model(seed: int = 0) -> LoadedModel:
    torch.manual_seed(seed)
    module = nn.Sequential(nn.Conv2d(3, CHANNELS, 3, padding=1), nn.ReLU()).eval().requires_grad_(False)
    return deepvis.wrap(module, input=f"3x{SIZE}x{SIZE}", mean=(0.5,) * 3, std=(0.25,) * 3, name="tiny")


SETTINGS = Settings(steps=25, lr=50.0, decay=0.01, blur_radius=0.0, blur_every=0)


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPVIS_CACHE", str(tmp_path))
    return tmp_path


def test_a_kept_image_is_the_run_it_came_from_and_is_served_without_running(cache, monkeypatch):
    model = tiny_model()
    target = Target("1", 2)
    assert patterns.load(model, target, SETTINGS) is None
    found, fractions = drain(patterns.compute_one(model, target, SETTINGS, every=10))
    assert fractions == pytest.approx([1 / 25, 11 / 25, 21 / 25, 1.0])
    record = opt.run(model, target, SETTINGS)
    np.testing.assert_array_equal(found.x, record.rows[0].best_x)
    assert found.objective == pytest.approx(record.rows[0].best_objective)

    def no_run(*args, **kwargs):
        raise AssertionError("a cached image must not be optimized again")

    monkeypatch.setattr(opt, "optimize", no_run)
    again, steps = drain(patterns.compute_one(model, target, SETTINGS))
    assert steps == [] and np.array_equal(again.x, found.x)
    # Anything else in the key is another image: θ, seed, size, unit, objective, and the weights.
    other = Settings(steps=25, lr=60.0, decay=0.01, blur_radius=0.0, blur_every=0)
    assert patterns.load(model, target, other) is None
    assert patterns.load(model, target, SETTINGS, seed=1) is None
    assert patterns.load(model, target, SETTINGS, size=SIZE + 8) is None
    assert patterns.load(model, Target("1", 3), SETTINGS) is None
    assert patterns.load(model, Target("1", 2, "channel"), SETTINGS) is None
    assert patterns.load(tiny_model(seed=1), target, SETTINGS) is None


def test_a_pattern_grid_is_computed_in_batches_and_resumes_after_an_interruption(cache):
    model = tiny_model()
    targets = [Target("1", c) for c in range(CHANNELS)]
    work = patterns.compute(model, targets, SETTINGS, batch=2)
    assert next(work) == patterns.Progress(0, CHANNELS)
    while next(work).done < 2:  # progress within the first batch, every EVERY iterations
        pass
    next(work)  # a progress report inside the second batch
    work.close()  # interrupted in the second batch: channels 0 and 1 are kept, 2 and 3 abandoned
    thumbs = patterns.thumbnails(model, targets, SETTINGS)
    assert [t is not None for t in thumbs] == [True, True, False, False, False]
    assert thumbs[0].shape == (patterns.THUMB, patterns.THUMB, 3)
    found, steps = drain(patterns.compute(model, targets, SETTINGS, batch=2))
    assert sorted(set(s.done for s in steps)) == [2, 4, 5]  # resumes at channel 2
    record = opt.run(model, targets, SETTINGS)  # one batch of all five gives the same images
    for pattern, row in zip(found, record.rows):
        np.testing.assert_allclose(pattern.x, row.best_x, atol=1e-3)
    grid, layout = render.image_grid(patterns.thumbnails(model, targets, SETTINGS), patterns.THUMB, highlight=3)
    assert layout.cols == 3 and grid.shape == (2 * (64 + 2) + 2, 3 * (64 + 2) + 2, 3)
    y, x = layout.origin(4)
    np.testing.assert_array_equal(grid[y:y + 64, x:x + 64], patterns.thumbnails(model, targets[4:], SETTINGS)[0])
    y, x = layout.origin(3)
    assert (grid[y - 2:y, x - 2:x + 66] == 255).all() and (grid[y - 2:y, layout.origin(4)[1]] != 255).all()


def test_bad_targets_fail_before_anything_runs(cache):
    model = tiny_model()
    with pytest.raises(ValueError, match="unit"):
        patterns.compute(model, [Target("1", 99)], SETTINGS)
    with pytest.raises(ValueError):
        patterns.compute_one(model, Target("nope", 0), SETTINGS)


def test_a_thumbnail_shows_the_part_of_the_image_its_neuron_sees(cache):
    from PIL import Image

    model = tiny_model()
    target = Target("0", 2)  # the 3 x 3 convolution itself: the centre neuron (8, 8) sees rows/cols 7-9
    assert patterns.field_of(model, target, SIZE) == (7, 7, 10, 10)
    assert patterns.field_of(model, Target("0", 2, "channel"), SIZE) == (0, 0, SIZE, SIZE)
    found, _ = drain(patterns.compute_one(model, target, SETTINGS))
    (thumb,) = patterns.thumbnails(model, [target], SETTINGS)
    want = Image.fromarray(patterns.shown(found, (7, 7, 10, 10))).resize((patterns.THUMB,) * 2,
                                                                           Image.Resampling.BILINEAR)
    np.testing.assert_array_equal(thumb, np.asarray(want))
    assert patterns.shown(found, (7, 7, 10, 10)).shape == (3, 3, 3)
