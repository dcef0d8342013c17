"""Every engine view on networks of one's own: a gray 1x28x28 and an RGB 3x32x32 CNN trained in the session
on scikit-learn's digits (tests/nets/digits.py, fixtures in conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from deepvis import backprop, calibrate, presets, quality, receptive
from deepvis import optimize as opt
from deepvis.activations import analyze
from deepvis.images import model_view, preprocess
from deepvis.occlusion import default_window, occlude
from deepvis.progress import drain
from deepvis.render import backprop_image, png_bytes, weight_tiles
from deepvis.targets import Target


def _digit(net: dict, index: int) -> tuple[Image.Image, int]:
    pixels, labels = net["nets"].digit_pixels(net["channels"], net["size"], 40)
    array = pixels[index]
    return Image.fromarray(array[..., 0] if array.shape[2] == 1 else array), int(labels[index])


def _untouched(module: torch.nn.Module) -> None:
    assert not module.training
    for sub in module.modules():
        assert not sub._forward_hooks and not sub._forward_pre_hooks and not sub._backward_hooks
    assert all(p.grad is None and not p.requires_grad for p in module.parameters())


@pytest.mark.parametrize("kind", ["gray_net", "color_net"])
def test_the_trained_networks_learned_their_digits(kind, request):
    net = request.getfixturevalue(kind)
    assert net["accuracy"] > 0.9  # trained for real: a broken fixture would sit near 0.1


@pytest.mark.parametrize("kind", ["gray_net", "color_net"])
def test_photos_become_the_networks_input_and_it_reads_its_own_digits(kind, request):
    net = request.getfixturevalue(kind)
    loaded = net["loaded"]
    assert preprocess(Image.new("RGB", (50, 40), (200, 10, 10)), loaded.spec).shape == (1, net["channels"],
                                                                                           net["size"], net["size"])
    right = 0
    for i in range(20):
        image, label = _digit(net, i)
        seen = analyze(loaded, image, loaded.logits_layer)
        right += seen.predictions[0].index == label
        assert seen.view.shape == (net["size"], net["size"], 3)
    assert right >= 17  # the same accuracy as in training: the view is what the network was trained on


def test_a_gray_network_sees_a_colour_photo_as_its_luminance_and_it_is_shown_gray(gray_net):
    loaded = gray_net["loaded"]
    photo = Image.new("RGB", (28, 28), (255, 0, 0))
    view = model_view(photo, loaded.spec)
    assert (view[..., 0] == view[..., 1]).all() and (view[..., 1] == view[..., 2]).all()
    assert view[0, 0, 0] == 76  # ITU-R 601 luma of pure red: 0.299 * 255
    x = preprocess(photo, loaded.spec)
    assert x.shape == (1, 1, 28, 28)
    assert x[0, 0, 0, 0].item() == pytest.approx((76 / 255 - 0.5) / 0.5)


def test_a_feature_extractor_without_class_names_predicts_nothing(gray_net):
    import deepvis

    loaded = deepvis.wrap(gray_net["module"], input="1x28x28", mean=[0.5], std=[0.5], name="features")
    seen = analyze(loaded, _digit(gray_net, 0)[0], "conv2")
    assert seen.predictions == [] and seen.activation.shape[0] == 16


def test_table1_blur_scales_with_the_networks_side_and_calibrated_rows_do_not(gray_net, color_net, lite0):
    assert presets.resolve(gray_net["loaded"], "table1:3").blur_radius == pytest.approx(1.0 * 28 / 224)
    assert presets.resolve(color_net["loaded"], "3").blur_radius == pytest.approx(1.0 * 32 / 224, abs=1e-3)
    assert presets.resolve(gray_net["loaded"], "table1:2").blur_radius == 0  # no blur stays none
    assert presets.resolve(lite0, "table1:3") == presets.table1_row(3)  # 224 px: verbatim
    assert presets.resolve(gray_net["loaded"], "table1:3").decay == presets.table1_row(3).decay


@pytest.mark.parametrize("kind", ["gray_net", "color_net"])
def test_class_images_default_to_the_networks_size_and_fourier_reaches_the_class(kind, request):
    net = request.getfixturevalue(kind)
    loaded = net["loaded"]
    targets = [Target(loaded.logits_layer, d) for d in (3, 7)]
    record = opt.run(loaded, targets, presets.resolve(loaded, "fourier").replace(steps=96), seed=0)
    for row, target in zip(record.rows, targets):
        assert row.best_x.shape == (net["size"], net["size"], net["channels"])
        shown = row.image()
        assert shown.shape == (net["size"], net["size"], 3)
        if net["channels"] == 1:
            assert (shown[..., 0] == shown[..., 2]).all()  # gray shown as gray
        x = torch.as_tensor(row.best_x).permute(2, 0, 1)[None]
        mean = torch.tensor(loaded.spec.normalization.mean255).view(1, -1, 1, 1)
        std = torch.tensor(loaded.spec.normalization.std255).view(1, -1, 1, 1)
        with torch.no_grad():
            logits = loaded.module(((x + mean).clamp(0, 255) - mean) / std)[0]
        assert int(logits.argmax()) == target.unit  # the image is its class to the network
    _untouched(loaded.module)


def test_pixel_ascent_on_a_gray_network_raises_the_class(gray_net):
    loaded = gray_net["loaded"]
    row = opt.run(loaded, Target(loaded.logits_layer, 5), presets.resolve(loaded, "table1:3").replace(steps=60)).rows[0]
    assert row.best_x.shape == (28, 28, 1)
    assert row.objectives[-1] > row.objectives[0] + 1.0


def test_quality_on_a_network_of_ones_own_is_robustness_alone(gray_net):
    loaded = gray_net["loaded"]
    assert quality.judge_name(loaded) is None and quality.calibration_judge_name(loaded) is None
    record = opt.run(loaded, Target(loaded.logits_layer, 2), presets.resolve(loaded, "fourier").replace(steps=40))
    (verdict,) = quality.assess_record(loaded, record)
    assert verdict.judge is None and verdict.rank is None and verdict.robustness is not None
    assert verdict.own_prob is not None  # a class of its own network: its probability, next to robustness
    assert verdict.label == f"network p {verdict.own_prob:.2f} · robustness {verdict.robustness:.2f}"


def test_saliency_on_a_gray_network_equals_autograd_and_shows(gray_net):
    loaded = gray_net["loaded"]
    image, label = _digit(gray_net, 3)
    gradient = backprop.backward(loaded, image, loaded.logits_layer, label, "saliency", seed="point")  # a one at the class
    x = preprocess(image, loaded.spec).requires_grad_(True)
    module = gray_net["nets"].GrayNet()
    module.load_state_dict(gray_net["module"].state_dict())
    module.eval()
    (expected,) = torch.autograd.grad(module(x)[0, label], x)
    assert gradient.shape == (1, 28, 28)
    torch.testing.assert_close(gradient, expected[0], rtol=1e-4, atol=1e-6)
    for name in ("raw", "gray", "norm", "norm_blur"):
        assert backprop_image(gradient, name).shape[:2] == (28, 28)
        png_bytes(backprop_image(gradient, name))
    for mode in ("deconv", "guided"):
        assert backprop.backward(loaded, image, loaded.logits_layer, label, mode).shape == (1, 28, 28)
    _untouched(gray_net["module"])


def test_occlusion_follows_the_input_size_and_equals_a_hand_occlusion(gray_net):
    loaded = gray_net["loaded"]
    assert default_window(28) == (4, 2) and default_window(224) == (32, 16)
    image, label = _digit(gray_net, 0)
    view = model_view(image, loaded.spec)
    assert drain(occlude(loaded, view, *default_window(28))).drops.shape == (28, 28)
    result = drain(occlude(loaded, view, 4, 4, "fc", label))  # 7 x 7 windows tiling the view exactly
    x = preprocess(image, loaded.spec)
    with torch.no_grad():
        whole = gray_net["module"](x)[0, label]
        for y, left in ((0, 0), (8, 12), (12, 8), (24, 24)):
            covered = x.clone()
            covered[..., y:y + 4, left:left + 4] = 0.0  # the mean gray: 0 in the network's input
            drop = float(whole - gray_net["module"](covered)[0, label])
            assert result.drops[y + 1, left + 2] == pytest.approx(drop, rel=1e-4, abs=1e-5)


def test_first_layer_filters_of_a_gray_network_are_gray_tiles(gray_net, color_net):
    tiles, layout = weight_tiles(gray_net["loaded"].first_conv.weight)
    assert gray_net["loaded"].first_conv.in_channels == 1
    assert tiles.ndim == 2 or (tiles[..., 0] == tiles[..., 1]).all()
    colour, _ = weight_tiles(color_net["loaded"].first_conv.weight)
    assert colour.ndim == 3 and not (colour[..., 0] == colour[..., 1]).all()


def test_receptive_field_of_a_small_network_is_in_its_own_pixels(gray_net):
    loaded = gray_net["loaded"]
    (top, left, bottom, right), shape = receptive.centre_field(loaded, "conv2")
    # conv1 5x5, pool 2, conv2 3x3: conv2's 10 x 10 map; its centre (5, 5) sees input rows and columns 10..19
    assert shape == (10, 10)
    assert 10 <= top < bottom <= 20 and 10 <= left < right <= 20 and bottom - top >= 5
    # another position: the centre's box moved by (9 - 5) positions x 28 / 10 px each (receptive's rule), clipped
    assert receptive.field(loaded, "conv2", 9, 9) == (top + 11, left + 11, min(28, bottom + 11), min(28, right + 11))


def test_index_and_top_images_on_a_gray_network_skip_and_list_a_broken_file(gray_net, tmp_path):
    from deepvis import index

    pixels, labels = gray_net["nets"].digit_pixels(1, 28, 30)
    for i, array in enumerate(pixels):
        Image.fromarray(array[..., 0]).save(tmp_path / f"d{i:02d}_{labels[i]}.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    loaded = gray_net["loaded"]
    summary = drain(index.build(loaded, tmp_path, ["conv2", "fc"], path=tmp_path / "i.sqlite"))
    assert any("broken.png" in str(s) for s in summary.skipped)
    hits = index.top(tmp_path / "i.sqlite", "fc", 7, k=3)
    assert len(hits) == 3 and all(h.path.endswith("_7.png") for h in hits)  # the digits it calls 7


def test_calibrate_on_a_network_of_ones_own_with_robustness_alone_and_with_a_named_judge(gray_net, color_net, tmp_path):
    loaded = gray_net["loaded"]
    assert calibrate.default_classes(loaded) == (tuple(f"digit {d}" for d in range(8)), ("digit 8", "digit 9"))
    found = drain(calibrate.search(loaded, tmp_path / "alone.json", trials=1, steps=(6,), top=0))
    assert found.judge is None and set(found.rows) == {1, 2, 3, 4}
    judged = drain(calibrate.search(loaded, tmp_path / "judged.json", trials=1, steps=(6,), top=1,
                                    judge_with=color_net["loaded"]))
    assert judged.judge == "digits_color" and judged.validation == ("digit 8", "digit 9")
    assert judged.scores != found.scores  # the judge's views count, not robustness alone


def test_a_layer_map_and_live_frames_on_a_gray_network(gray_net, tmp_path):
    from deepvis import embed, index
    from deepvis.live import analyze_frame

    pixels, labels = gray_net["nets"].digit_pixels(1, 28, 40)
    for i, array in enumerate(pixels):
        Image.fromarray(array[..., 0]).save(tmp_path / f"d{i:02d}_{labels[i]}.png")
    loaded = gray_net["loaded"]
    drain(index.build(loaded, tmp_path, ["max_pool2d_1", "fc"], path=tmp_path / "i.sqlite"))
    mapped = embed.embed(tmp_path / "i.sqlite", "max_pool2d_1", loaded.logits_layer, loaded.class_names)
    assert mapped.xy.shape == (40, 2)
    # neighbours share their digit far above chance (about 3 in 39 here)
    assert embed.neighbour_purity(mapped.xy, [p.split("_")[-1] for p in mapped.paths]) > 0.3
    frame = np.zeros((240, 320, 3), np.uint8)
    frame[60:180, 150:170] = 255  # a camera frame with a bright bar: a "1"-like stroke, in colour space
    result = analyze_frame(loaded, frame, "conv2", unit=3)
    assert result.analysis.view.shape == (28, 28, 3) and result.analysis.activation.shape[0] == 16
    assert result.grid.ndim in (2, 3)
