"""The atlas on this machine's local Ray (2 workers): the same records as one process, and a worker killed
with SIGKILL mid-run is restarted by Ray, its shard retried, every unit there exactly once."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from deepvis import atlas, atlas_ray
from deepvis.progress import drain

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    from deepvis import atlas_ray

    atlas_ray.connect("auto")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def collection(tmp_path_factory, photos) -> Path:
    """Twelve photo crops and one broken file."""
    from PIL import Image

    root = tmp_path_factory.mktemp("ray-collection")
    names = list(photos)
    for i in range(12):
        photo = photos[names[i % len(names)]]
        Image.fromarray(photo[10 * i:10 * i + 280, 15 * i:15 * i + 280]).save(root / f"p{i:02d}.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    return root


def records(path: Path, layer: str, channels: int, k: int):
    return [atlas.top(path, layer, unit, k) for unit in range(channels)]


def assert_same(a, b) -> None:
    for got, want in zip(a, b, strict=True):
        assert [(h.path, h.y, h.x) for h in got] == [(h.path, h.y, h.x) for h in want]
        np.testing.assert_allclose([h.value for h in got], [h.value for h in want], rtol=1e-4, atol=1e-5)


def test_local_ray_gives_the_records_of_one_process_even_when_a_worker_is_killed(lite0, collection, tmp_path,
                                                                                 local_ray):
    layers = [lite0.default_layer, lite0.logits_layer]
    one = drain(atlas.build(lite0, collection, layers, tmp_path / "one", k=5, shard=2))
    on_ray = drain(atlas.build(lite0, collection, layers, tmp_path / "ray", k=5, shard=2, ray="auto", workers=2))
    assert on_ray.executor == "ray" and on_ray.computed == one.computed == 7
    assert on_ray.skipped == one.skipped and len(one.skipped) == 1
    for layer in layers:
        channels = lite0.layer(layer).shape[0]
        assert_same(records(tmp_path / "ray", layer, channels, 5), records(tmp_path / "one", layer, channels, 5))

    # A worker killed after the first shard came back: Ray restarts it and retries its shard.
    work = atlas.build(lite0, collection, layers, tmp_path / "killed", k=5, shard=2, ray="auto", workers=2)
    assert next(work).done == 0
    first = next(work)
    assert first.done >= 1
    victims = atlas_ray.worker_pids()
    assert len(victims) == 2
    os.kill(victims[0], signal.SIGKILL)
    began = time.perf_counter()
    summary = drain(work)
    assert summary.computed == 7 and time.perf_counter() - began < 300
    for layer in layers:
        channels = lite0.layer(layer).shape[0]
        assert_same(records(tmp_path / "killed", layer, channels, 5), records(tmp_path / "one", layer, channels, 5))


def test_optimized_images_on_ray_are_the_ones_made_in_one_process(lite0, collection, tmp_path, local_ray):
    from deepvis import presets
    from deepvis.atlas_pictures import load_optimized

    layer = "_blocks.0._swish"
    short = presets.resolve(lite0, "3").replace(steps=20)
    for where, ray_address in (("one", None), ("ray", "auto")):
        summary = drain(atlas.build(lite0, collection, [layer], tmp_path / where, k=3, optimize=short, size=32,
                                    unit_batch=8, ray=ray_address, workers=2))
        assert summary.optimized == 32
    for unit in range(32):
        one, on_ray = load_optimized(tmp_path / "one", layer, unit), load_optimized(tmp_path / "ray", layer, unit)
        np.testing.assert_allclose(on_ray.x, one.x, atol=1e-2)  # one torch thread per worker: float rounding
