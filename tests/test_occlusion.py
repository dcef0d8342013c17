"""Occlusion maps: equal to Captum's ``Occlusion`` (same patch, stride, baseline) on a seeded random network and
on the embedded one; windows and errors by hand; the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from captum.attr import Occlusion
from PIL import Image
from torch import nn

import deepvis
from deepvis.cli import main as cli_main
from deepvis.images import model_view, to_batch
from deepvis.models import LoadedModel
from deepvis.occlusion import OcclusionError, occlude, occlusion_map, windows

SIZE = 24


@pytest.fixture(scope="module")
def random_net() -> LoadedModel:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 5, 3),
                               nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3))
        module[1].running_mean.normal_()
        module[1].running_var.uniform_(0.5, 2.0)
    module = module.eval().requires_grad_(False)
    return deepvis.wrap(module, input=f"3x{SIZE}x{SIZE}", mean=(0.5, 0.4, 0.3), std=(0.25, 0.5, 1.0),
                        classes=("a", "b", "c"), name="random")


def captum_map(forward, inputs: torch.Tensor, patch: int, stride: int, target) -> np.ndarray:
    attr = Occlusion(forward).attribute(inputs, sliding_window_shapes=(3, patch, patch), strides=(3, stride, stride),
                                        baselines=0, target=target)
    assert torch.equal(attr[0, 0], attr[0, 2])  # a window covers all three colours alike
    return attr[0, 0].numpy()


def test_windows_are_placed_as_captum_places_them():
    assert windows(224, 32, 16) == list(range(0, 193, 16)) and len(windows(224, 32, 16)) == 13
    assert windows(10, 4, 3) == [0, 3, 6]  # the last window ends at 10
    assert windows(24, 5, 4) == [0, 4, 8, 12, 16, 20]  # the last one is cut at the border (Captum's placement)
    for patch, stride, message in ((0, 1, "patch must be"), (11, 1, "patch must be"), (4, 0, "stride must")):
        with pytest.raises(OcclusionError, match=message):
            windows(10, patch, stride)


@pytest.mark.parametrize("patch,stride", [(6, 3), (5, 4)])
def test_equals_captum_on_a_seeded_random_network(random_net, patch, stride):
    view = np.random.default_rng(1).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    inputs = to_batch(view, random_net.spec.normalization)
    result = occlusion_map(random_net, view, patch, stride, batch=7)
    cls = int(random_net.module(inputs)[0].argmax())
    assert result.target.startswith(f"class {cls}")
    want = captum_map(lambda x: torch.softmax(random_net.module(x), dim=1), inputs, patch, stride, cls)
    np.testing.assert_allclose(result.drops, want, rtol=1e-4, atol=1e-6)
    # a unit: its activation summed over its map
    layer = random_net.layers[-4].name  # the second ReLU, (5, 22, 22)
    unit_map = occlusion_map(random_net, view, patch, stride, layer=layer, unit=2)
    from deepvis.activations import capture

    forward = lambda x: capture(random_net.module, x, layer)[layer][:, 2].flatten(1).sum(dim=1)  # noqa: E731
    np.testing.assert_allclose(unit_map.drops, captum_map(forward, inputs, patch, stride, None), rtol=1e-4, atol=1e-5)


class _Untraceable(nn.Module):
    """torch.fx cannot follow its branch on a value: occlusion runs whole copies through module hooks."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) if x.sum() != 1e9 else -self.inner(x)


def test_an_untraceable_network_runs_whole_copies_and_equals_captum(random_net):
    module = _Untraceable(random_net.module).eval()
    norm = random_net.spec.normalization
    loaded = deepvis.wrap(module, input=f"3x{SIZE}x{SIZE}", mean=norm.mean, std=norm.std, classes=("a", "b", "c"),
                          name="untraceable")
    assert loaded.notice is not None  # torch.fx cannot trace it
    view = np.random.default_rng(2).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    inputs = to_batch(view, loaded.spec.normalization)
    result = occlusion_map(loaded, view, 5, 4)
    cls = int(result.target.split()[1])
    want = captum_map(lambda x: torch.softmax(module(x), dim=1), inputs, 5, 4, cls)
    np.testing.assert_allclose(result.drops, want, rtol=1e-4, atol=1e-6)


def test_equals_captum_on_the_embedded_model_with_windows_cut_at_the_border(lite0, photos):
    # 40-px windows every 24 px: 9 × 9, the last row and column cut at the border (192 + 40 > 224)
    view = model_view(Image.fromarray(photos["astronaut"]), lite0.spec)
    result = occlusion_map(lite0, view, 40, 24)
    assert result.windows == 81
    want = captum_map(lambda x: torch.softmax(lite0.module(x), dim=1), to_batch(view, lite0.spec.normalization),
                      40, 24, int(result.target.split()[1]))
    np.testing.assert_allclose(result.drops, want, rtol=1e-3, atol=2e-5)


def test_equals_captum_on_the_embedded_model_and_reports_progress(lite0, photos):
    view = model_view(Image.fromarray(photos["chelsea"]), lite0.spec)
    work = occlude(lite0, view, 56, 56, batch=5)
    progress = []
    while True:
        try:
            progress.append(next(work))
        except StopIteration as done:
            result = done.value
            break
    assert [p.done for p in progress] == [0, 5, 10, 15, 16] and progress[-1].total == 16 == result.windows
    inputs = to_batch(view, lite0.spec.normalization)
    cls = int(result.target.split()[1])
    assert "cat" in result.target
    want = captum_map(lambda x: torch.softmax(lite0.module(x), dim=1), inputs, 56, 56, cls)
    np.testing.assert_allclose(result.drops, want, rtol=1e-3, atol=2e-5)
    assert result.drops.max() > 0.01  # covering some part of the cat costs the class probability


def test_bad_targets_are_one_line_errors(lite0, photos):
    view = model_view(Image.fromarray(photos["coffee"]), lite0.spec)
    with pytest.raises(OcclusionError, match="together"):
        occlude(lite0, view, 32, 16, layer="_blocks.9._swish_1")
    with pytest.raises(OcclusionError, match="does not exist"):
        occlude(lite0, view, 32, 16, layer="_blocks.9._swish_1", unit=999)


def test_cli_writes_the_map_png_and_npy(tmp_path, capsys, photos):
    image = tmp_path / "coffee.png"
    Image.fromarray(photos["coffee"]).save(image)
    argv = ["occlusion", str(image), "--patch", "56", "--stride", "56", "--out", str(tmp_path / "map.png"),
            "--npy", str(tmp_path / "map.npy"), "--device", "cpu"]
    assert cli_main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    drops = np.load(tmp_path / "map.npy")
    assert drops.shape == (224, 224) and drops.dtype == np.float32
    assert result["windows"] == 16 and result["target"].startswith("class 967")  # espresso
    assert Image.open(tmp_path / "map.png").size == (224, 224)
    assert cli_main(argv[:1] + [str(image), "--layer", "_blocks.9._swish_1", "--patch", "56", "--stride", "56",
                                "--out", str(tmp_path / "u.png"), "--device", "cpu"]) == 2
    assert "--layer and --unit" in capsys.readouterr().err
