"""Many sessions on one shared model (library level, CPU).

The app keeps one model object for every browser session; each session's work runs in
its own thread. Here 8 threads at once mix activation capture, backward images
(saliency, deconvnet, guided backprop) and short image optimizations on one model,
started together behind a barrier, twice, with the work shuffled between threads.
Every result must equal the same call made alone, bit for bit, and the model must be
left exactly as it was: no hooks, no ``.grad``, eval mode, unchanged weights.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from deepvis import backprop, optimize
from deepvis.settings import Settings
from deepvis.targets import Target
from deepvis.activations import LayerError, capture
from deepvis.hooks import hook_count
from deepvis.images import decode_image, preprocess, sample_bytes
from tests import corpus


THREADS = 8


def model_fingerprint(loaded) -> dict[str, object]:
    module = loaded.module
    return {
        "hooks": hook_count(module),
        "grads": sum(p.grad is not None for p in module.parameters()),
        "requires_grad": sum(p.requires_grad for p in module.parameters()),
        "training": sum(m.training for m in module.modules()),
        "weights": float(sum(p.double().sum() for p in module.state_dict().values() if p.is_floating_point())),
        "modules": [(n, type(m).__name__) for n, m in module.named_modules()],
    }


def as_arrays(result: object) -> list[np.ndarray]:
    """Every tensor/array in a result, in a fixed order, as numpy (for exact comparison)."""
    if isinstance(result, torch.Tensor):
        return [result.detach().cpu().numpy()]
    if isinstance(result, np.ndarray):
        return [result]
    if isinstance(result, dict):
        return [a for key in sorted(result) for a in as_arrays(result[key])]
    if isinstance(result, (list, tuple)):
        return [a for item in result for a in as_arrays(item)]
    raise TypeError(type(result))


@pytest.fixture(scope="module")
def inputs(lite0) -> dict[str, torch.Tensor]:
    photos = {name: sample_bytes(name) for name in ("chelsea", "coffee", "astronaut", "rocket")}
    photos["quadrants"] = corpus.photo_bytes()
    return {name: preprocess(decode_image(data), lite0.spec) for name, data in photos.items()}


def make_jobs(lite0, inputs) -> dict[str, Callable[[], object]]:
    model = lite0.module
    pair = torch.cat([inputs["coffee"], inputs["rocket"]])

    def run_optimization(target, settings, seed: int, size: int) -> list[np.ndarray]:
        record = optimize.run(lite0, target, settings, seed=seed, size=size)
        return [np.stack([row.objectives for row in record.rows]), record.last_images, record.best_images]

    espresso = lite0.class_names.index("espresso")
    return {
        "capture chelsea": lambda: capture(model, inputs["chelsea"], ["_conv_stem", "_blocks.5", "_fc"]),
        "capture pair": lambda: capture(model, pair, ["_blocks.2", "_blocks.9", "_conv_head"]),
        "capture astronaut": lambda: capture(model, inputs["astronaut"], ["_blocks.15"]),
        "guided chelsea": lambda: backprop.guided_backprop(model, inputs["chelsea"], "_blocks.9", 5),
        "deconv quadrants": lambda: backprop.deconvnet(model, inputs["quadrants"], "_blocks.4", (3, 7, 7)),
        "saliency coffee": lambda: backprop.saliency(model, inputs["coffee"], "_fc", espresso),
        "optimize flamingo": lambda: run_optimization(
            Target("_fc", lite0.class_names.index("flamingo")),
            Settings(steps=4, blur_every=2, blur_radius=0.5, decay=1e-3), seed=1, size=64),
        "optimize channel": lambda: run_optimization(
            Target("_blocks.6", 11, "channel"),
            Settings(steps=3, lr_policy="progress", norm_pct=10, contrib_pct=20), seed=2, size=48),
    }


def test_eight_threads_mixing_work_match_sequential_bit_for_bit(lite0, inputs) -> None:
    before = model_fingerprint(lite0)
    jobs = make_jobs(lite0, inputs)
    assert len(jobs) == THREADS
    expected = {name: as_arrays(job()) for name, job in jobs.items()}
    assert model_fingerprint(lite0) == before

    for round_number in range(2):
        names = list(jobs)
        random.Random(round_number).shuffle(names)
        barrier = threading.Barrier(THREADS)

        def work(name: str) -> tuple[str, list[np.ndarray]]:
            barrier.wait(timeout=60)
            return name, as_arrays(jobs[name]())

        with ThreadPoolExecutor(THREADS) as pool:
            results = dict(pool.map(work, names))
        for name in names:
            assert len(results[name]) == len(expected[name]), name
            for got, want in zip(results[name], expected[name]):
                assert got.shape == want.shape and got.dtype == want.dtype, name
                assert np.array_equal(got, want), (
                    f"{name} (round {round_number}): differs from the sequential result, "
                    f"max |diff| {np.abs(got.astype(np.float64) - want.astype(np.float64)).max()}")
        assert model_fingerprint(lite0) == before


def test_failing_and_abandoned_work_beside_good_work_leaves_model_clean(lite0, inputs) -> None:
    """Errors raised inside the forward pass and generators dropped half-way (a session that
    leaves, a Stop click) must not leave hooks behind or disturb the other threads."""
    before = model_fingerprint(lite0)
    model = lite0.module
    expected = capture(model, inputs["coffee"], ["_blocks.7"])["_blocks.7"]
    barrier = threading.Barrier(6)

    def good() -> torch.Tensor:
        barrier.wait(timeout=60)
        return capture(model, inputs["coffee"], ["_blocks.7"])["_blocks.7"]

    def raises_inside_forward() -> str:
        barrier.wait(timeout=60)
        try:
            # Four colour channels: the first convolution raises in the middle of the graph's forward pass.
            capture(model, torch.zeros(1, 4, 64, 64), ["_blocks.1._swish", "_blocks.3"])
        except RuntimeError:
            pass
        else:
            return "no error"
        try:
            capture(model, inputs["chelsea"], ["_blocks.1._swish", "_blocks.99"])
        except LayerError as exc:
            return str(exc)
        return "no error"

    def abandoned_optimization() -> int:
        barrier.wait(timeout=60)
        generator = optimize.optimize(lite0, Target("_fc", 1), Settings(steps=50), size=32, every=1)
        seen = [next(generator).iteration for _ in range(3)]
        generator.close()
        return len(seen)

    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(good), pool.submit(good), pool.submit(raises_inside_forward),
                   pool.submit(raises_inside_forward), pool.submit(abandoned_optimization),
                   pool.submit(abandoned_optimization)]
        outcomes = [f.result(timeout=120) for f in futures]
    assert torch.equal(outcomes[0], expected) and torch.equal(outcomes[1], expected)
    assert "no layer '_blocks.99'" in outcomes[2] and "no layer '_blocks.99'" in outcomes[3]
    assert outcomes[4] == outcomes[5] == 3
    assert model_fingerprint(lite0) == before


def test_tracing_a_new_model_never_disturbs_forward_passes_in_other_threads(lite0, inputs) -> None:
    """torch.fx traces by patching nn.Module.__call__ for the whole process: a forward pass in another thread
    during a trace would be recorded into it and fail.  Traces of fresh models (as loading a model or a user's
    own network does) run while 4 threads keep capturing from the shared model; all must succeed, unchanged."""
    import torchvision

    expected = capture(lite0.module, inputs["coffee"], ["_blocks.6.add"])["_blocks.6.add"]
    stop, errors, results = threading.Event(), [], []

    def capturing() -> None:
        try:
            while not stop.is_set():
                results.append(torch.equal(capture(lite0.module, inputs["coffee"], ["_blocks.6.add"])["_blocks.6.add"],
                                           expected))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=capturing) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(8):  # each new object is traced anew (a ResNet-18: ~60 modules, a trace of ~50 ms)
            net = torchvision.models.resnet18(weights=None).eval()
            assert capture(net, torch.zeros(1, 3, 32, 32), ["layer1.0.relu"])["layer1.0.relu"].shape == (1, 64, 8, 8)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert not errors and results and all(results)
    assert hook_count(lite0.module) == 0
