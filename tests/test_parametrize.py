"""The later parametrizations: Fourier, colour decorrelation, MACO, transforms, accentuation, mixed comparisons.

Hand-computed values for the colour matrix and each transform; finite differences for the gradients through
each parametrization on a tiny hand-built network; the embedded model for what a person relies on (the
objective rises, accentuation stays near its photo, a mixed comparison equals its separate runs).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from deepvis import param_ascent
from deepvis import optimize as opt
from deepvis import parametrize as pz
from deepvis import presets
from deepvis.cli import main as cli_main
from deepvis.presets import PARAM_PRESETS
from deepvis.settings import THETA
from deepvis.presets import PRESETS
from deepvis.settings import OptimizeError, Settings
from deepvis.targets import Target, resolve_unit


def test_colour_matrix_is_lucids_normalized_and_invertible():
    # Column norms of Lucid's matrix: sqrt(.26²+.27²+.27²) = 0.46195 is the largest (the others 0.1273, 0.0616).
    largest = math.sqrt(0.26 ** 2 + 0.27 ** 2 + 0.27 ** 2)
    assert largest == pytest.approx(0.461952, abs=1e-6)
    assert pz.DECORRELATION[0, 0] == pytest.approx(0.26 / largest, abs=1e-6)  # 0.56284
    assert pz.DECORRELATION[2, 1] == pytest.approx(-0.09 / largest, abs=1e-6)
    assert abs(np.linalg.det(pz.DECORRELATION.astype(np.float64))) > 1e-3
    t = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    torch.testing.assert_close(pz.recorrelate(pz.decorrelate(t)), t)
    # recorrelate is M applied at each pixel: one pixel by hand
    pixel = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64).view(1, 3, 1, 1)
    expected = pz.DECORRELATION.astype(np.float64) @ np.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(pz.recorrelate(pixel).flatten().numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("height,width", [(16, 16), (12, 15)])
def test_fourier_round_trips_an_image(height, width):
    rgb = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(1)) * 0.9 + 0.05
    scale = pz.spectrum_scale(height, width)
    spectrum = pz.image_to_fourier(rgb, scale)
    assert spectrum.shape == (2, 3, height, width // 2 + 1, 2)
    torch.testing.assert_close(pz.fourier_to_image(spectrum, scale, (height, width)), rgb, atol=2e-5, rtol=0)


def test_spectrum_scale_is_one_over_frequency():
    scale = pz.spectrum_scale(8, 8).numpy()
    assert scale[0, 0] == pytest.approx(8.0)  # DC: 1 / (1/8)
    assert scale[0, 4] == pytest.approx(2.0)  # 0.5 cycles/pixel
    assert scale[2, 1] == pytest.approx(1 / math.hypot(2 / 8, 1 / 8))
    assert pz.spectrum_scale(8, 8, 1.5).numpy()[0, 4] == pytest.approx(2.0 ** 1.5)


def test_each_transform_matches_a_hand_computed_example():
    x = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4)
    padded = pz.pad(x, 1, 0.5)
    assert padded.shape == (1, 1, 6, 6) and padded[0, 0, 0].tolist() == [0.5] * 6 and padded[0, 0, 1, 1] == 0
    assert pz.jitter(x, 2, 1, 0)[0, 0].tolist() == [[4, 5], [8, 9]]  # rows 1-2, columns 0-1
    # bilinear x2 of [0, 1] (half-pixel centres): 0, 0.25, 0.75, 1
    np.testing.assert_allclose(pz.scale(torch.tensor([[[[0.0, 1.0]]]]), 2.0)[0, 0, 0].numpy(), [0, 0.25, 0.75, 1])
    assert pz.scale(x, 1.1).shape[-2:] == (5, 5)  # ceil(4.4)
    dot = torch.zeros(1, 1, 3, 3)
    dot[0, 0, 0, 1] = 1.0  # top middle
    turned = pz.rotate(dot, 90, fill=0.0)[0, 0]
    expected = torch.zeros(3, 3)
    expected[1, 0] = 1.0  # counter-clockwise on screen: top middle -> left middle
    torch.testing.assert_close(turned, expected, atol=1e-5, rtol=0)
    # the corners a rotation uncovers are filled with grey
    assert pz.rotate(torch.zeros(1, 1, 8, 8), 45)[0, 0, 0, 0] == pytest.approx(0.5)
    # crops: boxes stay inside, cover 80-100 % of a side, image-major; a full box returns the image itself
    boxes = pz.crop_boxes([2, 3], 32, torch.Generator().manual_seed(0))
    assert boxes[:, 0].tolist() == [0, 0, 1, 1, 1]
    sides = boxes[:, 3] - boxes[:, 1]
    assert torch.all(sides >= 0.8 * 32 - 1e-4) and torch.all(sides <= 32 + 1e-4)
    assert torch.all(boxes[:, 1:] >= 0) and torch.all(boxes[:, 1:] <= 32 + 1e-4)
    torch.testing.assert_close(sides, boxes[:, 4] - boxes[:, 2])  # square


def test_transforms_are_deterministic_for_a_seed():
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    first = pz.lucid_transforms(x, torch.Generator().manual_seed(7))
    again = pz.lucid_transforms(x, torch.Generator().manual_seed(7))
    other = pz.lucid_transforms(x, torch.Generator().manual_seed(8))
    assert first.shape == x.shape
    assert torch.equal(first, again) and not torch.equal(first, other)
    crops = pz.random_crops(x, [3, 1], torch.Generator().manual_seed(7))
    assert crops.shape == (4, 3, 32, 32)
    assert torch.equal(crops, pz.random_crops(x, [3, 1], torch.Generator().manual_seed(7)))


def _tiny_net() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return net.double().eval().requires_grad_(False)


def _check_gradient(f, p: torch.Tensor, coordinates: int = 6) -> None:
    """autograd's gradient of the scalar ``f(p)`` against central finite differences at a few coordinates."""
    p = p.detach().double().requires_grad_(True)
    (grad,) = torch.autograd.grad(f(p), p)
    flat = grad.flatten()
    picks = torch.randperm(p.numel(), generator=torch.Generator().manual_seed(0))[:coordinates].tolist()
    picks.append(int(flat.abs().argmax()))
    for i in picks:
        step = torch.zeros_like(p).flatten()
        step[i] = 1e-6
        step = step.view_as(p)
        numeric = (f(p + step) - f(p - step)).item() / 2e-6
        assert numeric == pytest.approx(flat[i].item(), rel=1e-4, abs=1e-8)


def test_gradient_through_each_parametrization_equals_a_finite_difference():
    net, size = _tiny_net(), 12
    weights = torch.tensor([1.0, -0.5], dtype=torch.float64)
    objective = lambda rgb: (net(rgb * 2 - 1) * weights).sum()  # noqa: E731
    generator = lambda: torch.Generator().manual_seed(3)  # noqa: E731  (the same transform each evaluation)

    scale = pz.spectrum_scale(size, size).double()
    spectrum = pz.random_spectrum(1, size, size, torch.Generator().manual_seed(0)).double() * 30
    _check_gradient(lambda p: objective(pz.lucid_transforms(pz.fourier_to_image(p, scale, (size, size)),
                                                              generator())), spectrum)
    magnitude = pz.magnitude_spectrum([np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)],
                                      size).double()
    phase = torch.randn(1, 3, size, size // 2 + 1, generator=torch.Generator().manual_seed(1)).double()
    _check_gradient(lambda p: objective(pz.random_crops(pz.maco_to_image(p, magnitude, (size, size)), [3],
                                                        generator())), phase)


def test_maco_keeps_the_magnitude_and_optimizes_only_the_phase():
    photos = [np.random.default_rng(s).integers(0, 256, (40, 50, 3), dtype=np.uint8) for s in range(2)]
    size = 16
    magnitude = pz.magnitude_spectrum(photos, size).double()
    # the template is the mean |rfft| of the mean-free, decorrelated squared photos
    one = torch.from_numpy(pz.square_photo(photos[0], size)).permute(2, 0, 1)[None].double()
    expected = torch.fft.rfftn(pz.decorrelate(one - one.mean(dim=(2, 3), keepdim=True)), dim=(-2, -1),
                               norm="ortho").abs()[0]
    torch.testing.assert_close(pz.magnitude_spectrum(photos[:1], size).double(), expected, atol=1e-5, rtol=1e-5)
    # an image MACO draws has that magnitude (up to the standardization's one factor; DC removed)
    phase = torch.randn(1, 3, size, size // 2 + 1, generator=torch.Generator().manual_seed(0)).double()
    rgb = pz.maco_to_image(phase, magnitude, (size, size))
    t = pz.decorrelate(torch.log(rgb / (1 - rgb)))
    drawn = torch.fft.rfftn(t, dim=(-2, -1), norm="ortho").abs()[0]
    inner = (slice(None), slice(None), slice(1, size // 2))  # columns 0 and W/2 are their own mirror images
    ratio = drawn[inner] / magnitude[inner]
    assert float(ratio.std() / ratio.mean()) < 1e-3


def test_theta_table_offers_each_setting_only_where_it_is_used():
    by_name = {t.name: t for t in THETA}
    fourier = PARAM_PRESETS["fourier"].to_dict()
    pixels = PRESETS[3].to_dict()
    assert not by_name["decay"].enabled(fourier) and by_name["decay"].enabled(pixels)
    assert by_name["adam_lr"].enabled(fourier) and not by_name["adam_lr"].enabled(pixels)
    assert not by_name["crops"].enabled(fourier) and by_name["crops"].enabled(PARAM_PRESETS["maco"].to_dict())
    assert by_name["closeness"].enabled(PARAM_PRESETS["accentuate"].to_dict())
    assert by_name["param"].choices == ("pixels", "fourier", "maco", "accentuate")
    with pytest.raises(ValueError, match="param must be one of"):
        Settings(param="lucid")
    assert presets.resolve("efficientnet_lite0", "maco") == PARAM_PRESETS["maco"]


# ---------------------------------------------------------------- the embedded model

SIZE = 96


def _flamingo(lite0) -> Target:
    return Target(lite0.logits_layer, resolve_unit(lite0, lite0.logits_layer, "flamingo"))


@pytest.mark.parametrize("param", ["fourier", "maco"])
def test_each_parametrization_raises_the_class_and_is_deterministic(lite0, param):
    settings = PARAM_PRESETS[param].replace(steps=12, crops=2)
    first = opt.run(lite0, _flamingo(lite0), settings, size=SIZE, seed=4)
    again = opt.run(lite0, _flamingo(lite0), settings, size=SIZE, seed=4)
    row = first.rows[0]
    assert row.best_objective > row.initial + 3  # a flamingo logit 3 higher within 12 steps
    np.testing.assert_array_equal(row.best_x, again.rows[0].best_x)
    np.testing.assert_array_equal(row.objectives, again.rows[0].objectives)
    x = row.last_x + np.array(row.mean)
    assert x.min() >= -1e-3 and x.max() <= 255 + 1e-3  # a sigmoid image: always a valid picture


def test_accentuation_stays_near_its_photo_while_the_unit_rises(lite0, photos):
    target = _flamingo(lite0)
    settings = PARAM_PRESETS["accentuate"].replace(steps=20, crops=2)
    record = opt.run(lite0, target, [settings, settings.replace(closeness=30.0)], size=SIZE, photo=photos["coffee"])
    start = param_ascent.photo_rgb(photos["coffee"], lite0.spec, SIZE)[0].permute(1, 2, 0).numpy() * 255
    loose, tight = record.rows
    for row in (loose, tight):
        assert row.best_objective > row.initial + 2
    distance = [np.abs(r.last_x + np.array(r.mean) - start).mean() for r in (loose, tight)]
    assert distance[0] < 25  # within 25 of 255 grey levels per pixel on average: still the photo
    assert distance[1] < distance[0]  # more closeness, nearer the photo
    noise_start = opt.run(lite0, target, PARAM_PRESETS["fourier"].replace(steps=20), size=SIZE).rows[0]
    assert np.abs(noise_start.last_x + np.array(noise_start.mean) - start).mean() > 2 * distance[0]


def test_accentuation_without_a_photo_is_a_one_line_error(lite0):
    with pytest.raises(OptimizeError, match="starts from a photo"):
        opt.optimize(lite0, _flamingo(lite0), PARAM_PRESETS["accentuate"], size=SIZE)


def test_a_mixed_comparison_equals_its_separate_runs(lite0):
    target = _flamingo(lite0)
    pixel = presets.resolve(lite0.spec.name, "3").replace(steps=6)
    fourier = PARAM_PRESETS["fourier"].replace(steps=8)
    mixed = opt.run(lite0, target, [pixel, fourier, pixel.replace(decay=0.01)], size=SIZE)
    pixels_alone = opt.run(lite0, target, [pixel, pixel.replace(decay=0.01)], size=SIZE)
    fourier_alone = opt.run(lite0, target, fourier, size=SIZE)
    assert [r.settings.param for r in mixed.rows] == ["pixels", "fourier", "pixels"]
    assert [r.steps_done for r in mixed.rows] == [6, 8, 6] and mixed.done
    np.testing.assert_array_equal(mixed.rows[0].best_x, pixels_alone.rows[0].best_x)
    np.testing.assert_array_equal(mixed.rows[2].objectives, pixels_alone.rows[1].objectives)
    np.testing.assert_array_equal(mixed.rows[1].best_x, fourier_alone.rows[0].best_x)
    snapshots = list(opt.optimize(lite0, target, [pixel, fourier], size=SIZE, every=3))
    assert [s.iteration for s in snapshots] == [0, 3, 6, 7] and snapshots[-1].done


def test_cli_params_pair_with_presets_and_report_param_and_quality(lite0, tmp_path, capsys, photos):
    from PIL import Image

    photo = tmp_path / "coffee.png"
    Image.fromarray(photos["coffee"]).save(photo)
    argv = ["compare", "--layer", "_fc", "--unit", "flamingo", "--presets", "3", "--params",
            "pixels,fourier,accentuate", "--from-photo", str(photo), "--steps", "3", "--size", "64",
            "--out", str(tmp_path / "sheet.png"), "--device", "cpu"]
    assert cli_main(argv) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["param"] for r in rows] == ["pixels", "fourier", "accentuate"]
    assert [r["preset"] for r in rows] == ["3", "fourier", "accentuate"]
    assert all(r["quality"]["rank"] >= 1 and "robustness" in r["quality"] for r in rows)
    assert rows[1]["settings"]["adam_lr"] == PARAM_PRESETS["fourier"].adam_lr
    for bad, message in ((["--params", "pixels,lucid"], "--params takes"),
                         (["--presets", "1,2", "--params", "pixels,fourier,maco"], "give one of each"),
                         (["--presets", "3", "--params", "accentuate"], "needs --from-photo")):
        args = ["compare", "--layer", "_fc", "--unit", "1", "--out", str(tmp_path / "x.png"), "--device", "cpu"]
        assert cli_main(args + bad) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err
    argv = ["optimize", "--layer", "_fc", "--unit", "flamingo", "--from-photo", str(photo), "--steps", "2",
            "--size", "64", "--out", str(tmp_path / "a.png"), "--device", "cpu"]
    assert cli_main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["param"] == "accentuate" and result["settings"]["closeness"] == 1.0
    assert cli_main(argv[:-2] + ["--param", "maco", "--device", "cpu"]) == 2
    assert "not --param maco" in capsys.readouterr().err


def test_maco_spectrum_from_a_folder_skips_broken_files_and_drives_a_run(lite0, tmp_path, photos):
    from PIL import Image

    for name in ("chelsea", "coffee"):
        Image.fromarray(photos[name]).save(tmp_path / f"{name}.png")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    magnitude, skipped = param_ascent.collection_magnitude(str(tmp_path), SIZE)
    assert skipped == [str((tmp_path / "broken.jpg").resolve())]
    expected = pz.magnitude_spectrum([photos["chelsea"], photos["coffee"]], SIZE)
    torch.testing.assert_close(magnitude, expected)
    row = opt.run(lite0, _flamingo(lite0), PARAM_PRESETS["maco"].replace(steps=3, crops=1), size=SIZE,
                  magnitude=magnitude).rows[0]
    assert row.steps_done == 3
    with pytest.raises(OptimizeError, match="magnitude spectrum is"):
        opt.optimize(lite0, _flamingo(lite0), PARAM_PRESETS["maco"], size=SIZE + 16, magnitude=magnitude)
