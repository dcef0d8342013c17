"""The Activations page through Streamlit's AppTest (the script, not the browser)."""

from __future__ import annotations

import base64
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from deepvis.activations import analyze
from deepvis.backprop import backprop
from deepvis.images import SAMPLE_NAMES, decode_image, model_view, sample_bytes, to_batch
from deepvis.render import backprop_image, upscale
from deepvis.targets import Target
from tests.app_media import record_media
from tests.helpers import jpeg_bytes

APP = str(Path(__file__).resolve().parents[1] / "streamlit_app.py")
CATS = ("tabby", "tiger cat", "Egyptian cat")


def start() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception
    return at


def prediction_labels(at: AppTest) -> list[str]:
    chart = json.loads(at.get("plotly_chart")[0].proto.spec)
    return list(chart["data"][0]["y"])[::-1]  # drawn bottom-up, best last


def grid_shown(at: AppTest) -> bool:
    return any("one tile each in channel order" in c.value for c in at.caption)


def unit_summary(at: AppTest) -> str:
    return next(m.value for m in at.markdown if m.value.startswith("**Unit "))


@pytest.fixture(scope="module")
def app() -> AppTest:
    return start()


def test_sample_photo_shows_predictions_grid_and_unit(app, lite0):
    assert prediction_labels(app)[0] in CATS  # the default sample is chelsea
    assert grid_shown(app)
    layer = app.selectbox(key="act_layer_efficientnet_lite0").value
    assert app.selectbox(key="act_group_efficientnet_lite0").value == lite0.layer(layer).group
    analysis = analyze(lite0, decode_image(sample_bytes("chelsea")), layer)
    # It opens on a rectified mid-network map that is sparse on the default photo, like the paper's conv5.
    assert lite0.layer(layer).rectified and analysis.activation.dim() == 3
    assert (analysis.activation == 0).float().mean() >= 0.5
    assert any(layer in c.value and "ReLU6" in c.value for c in app.caption)  # node name and description shown
    expected = analysis.stats.as_records()
    app.number_input(key="act_unit").set_value(7).run()
    assert not app.exception
    y, x = expected[7]["argmax"]
    assert unit_summary(app) == (f"**Unit 7** · max {expected[7]['max']:.3g} · mean {expected[7]['mean']:.3g} · "
                                 f"strongest at (y {y}, x {x})")


def test_upload_then_bad_file_then_good_file(photos):
    at = start()
    at.radio(key="act_source").set_value("Upload").run()
    at.file_uploader(key="act_upload").upload("coffee.jpg", jpeg_bytes(photos["coffee"]), "image/jpeg").run()
    assert not at.exception and prediction_labels(at)[0] == "espresso" and grid_shown(at)

    at.file_uploader(key="act_upload").upload("notes.jpg", b"this is not a picture\n", "image/jpeg").run()
    assert not at.exception
    assert len(at.error) == 1 and "not an image" in at.error[0].value
    assert "\n" not in at.error[0].value

    at.file_uploader(key="act_upload").upload("cat.jpg", jpeg_bytes(photos["chelsea"]), "image/jpeg").run()
    assert not at.exception and not at.error
    assert prediction_labels(at)[0] in CATS


def test_camera_photo(photos):
    at = start()
    at.radio(key="act_source").set_value("Camera").run()
    assert at.info[0].value == "Take a photo to begin."
    at.camera_input(key="act_camera").upload("photo.jpg", jpeg_bytes(photos["coffee"])).run()
    assert not at.exception and prediction_labels(at)[0] == "espresso" and grid_shown(at)


def test_live_video_waits_for_the_camera_and_a_frozen_frame_is_a_still_photo(photos):
    from deepvis.render import png_bytes

    at = start()
    at.radio(key="act_source").set_value("Live video").run()
    # AppTest has no server for streamlit-webrtc's component (the browser test streams for real): the page
    # says so in one line, draws no grid and keeps working.
    assert not at.exception and not grid_shown(at)
    assert len(at.error) == 1 and at.error[0].value.startswith("Live video is unavailable here (")
    assert len(at.error[0].value.splitlines()) == 1
    # Freeze keeps the newest frame; the page then analyzes it in full, like any photo.
    at.session_state["act_opened"] = (png_bytes(photos["chelsea"]), "frozen live frame")
    at.run()
    assert not at.exception and prediction_labels(at)[0] in CATS and grid_shown(at)
    assert at.button(key="act_close").label == "Back to live video"
    at.button(key="act_close").click().run()
    assert not at.exception and "act_opened" not in at.session_state and not grid_shown(at)


def test_random_weights_and_another_layer():
    at = start()
    at.radio(key="model_weights").set_value("random").run()
    assert not at.exception and "random weights" in at.sidebar.caption[0].value
    at.selectbox(key="act_group_efficientnet_lite0").set_value("head").run()
    assert not at.exception and grid_shown(at)
    assert at.selectbox(key="act_layer_efficientnet_lite0").value == "_swish_1"  # the block's last rectified map
    at.selectbox(key="act_layer_efficientnet_lite0").set_value("_fc").run()
    assert not at.exception and grid_shown(at) and any("All 1000 channels of _fc" in c.value for c in at.caption)


def backward_caption(at: AppTest) -> str | None:
    captions = [c for img in at.get("image") for c in img.captions if "filter" in c]
    return captions[0] if captions else None


def backward_shown(at: AppTest, pixels) -> tuple[str, np.ndarray]:
    """The backward image's caption (``guided, raw filter``) and the pixels the page sent."""
    (image,) = [img for img in at.get("image") if img.captions and img.captions[0].endswith(" filter")]
    return image.captions[0], pixels(image.value[0])


def test_backward_image_follows_unit_mode_and_filter(app, lite0, monkeypatch):
    pixels = record_media(monkeypatch)
    layer, unit = app.selectbox(key="act_layer_efficientnet_lite0").value, 3
    batch = to_batch(model_view(decode_image(sample_bytes("chelsea")), lite0.spec), lite0.spec.normalization)

    def library(mode: str, seed: str, shown: str) -> np.ndarray:  # computed here, not by the page's code
        return upscale(backprop_image(backprop(lite0.module, batch, layer, unit, mode, seed)[0], shown), 224)

    app.number_input(key="act_unit").set_value(unit).run()
    assert backward_caption(app) == "saliency, norm_blur filter"  # the defaults: the filter that shows something
    pictures = {}
    for key, value in [("act_bp_mode", "saliency"), ("act_bp_mode", "deconv"), ("act_bp_mode", "guided"),
                       ("act_bp_filter", "raw"), ("act_bp_seed", "point")]:
        app.radio(key=key).set_value(value).run()
        assert not app.exception and not app.error
        mode, seed, shown = (app.radio(key=k).value for k in ("act_bp_mode", "act_bp_seed", "act_bp_filter"))
        caption, got = backward_shown(app, pixels)
        assert caption == f"{mode}, {shown} filter"
        want = library(mode, seed, shown)
        assert got.shape == want.shape
        assert np.mean(np.abs(got.astype(int) - want.astype(int)) > 2) < 1e-3, caption  # float noise at most
        pictures[(mode, seed, shown)] = got
    assert len({p.tobytes() for p in pictures.values()}) == len(pictures)  # each choice changed the picture


def test_gradcam_panel_shows_the_librarys_map_for_the_chosen_class_and_method(app, lite0, monkeypatch):
    from deepvis.gradcam import gradcam, picture

    pixels = record_media(monkeypatch)
    layer = app.selectbox(key="act_layer_efficientnet_lite0").value
    view = model_view(decode_image(sample_bytes("chelsea")), lite0.spec)

    def shown(caption: str) -> np.ndarray:
        (image,) = [img for img in app.get("image") if img.captions and img.captions[0] == caption]
        return pixels(image.value[0])

    top5 = [p.index for p in analyze(lite0, decode_image(sample_bytes("chelsea")), layer).predictions]
    assert len(app.selectbox(key="act_cam_class").options) == 5
    assert app.selectbox(key="act_cam_class").value == top5[0]  # the top class by default
    for method, caption, unit in (("gradcam", "Over the input", top5[0]), ("gradcam++", "Over the input", top5[3]),
                                  ("guided", "Guided Grad-CAM (grey = 0)", top5[3])):
        app.radio(key="act_cam_method").set_value(method).run()
        app.selectbox(key="act_cam_class").set_value(unit).run()
        assert not app.exception and not app.error
        want = upscale(picture(gradcam(lite0, view, layer, unit, method), view), 224)
        got = shown(caption)
        assert got.shape == want.shape and np.mean(np.abs(got.astype(int) - want.astype(int)) > 2) < 1e-3, method
    assert any(c.startswith("The map at the layer's 14 × 14") for img in app.get("image") for c in img.captions)
    app.selectbox(key="act_group_efficientnet_lite0").set_value("head").run()
    app.selectbox(key="act_layer_efficientnet_lite0").set_value("_fc").run()
    assert not app.exception and any("Grad-CAM needs a layer with spatial maps" in c.value for c in app.caption)


def test_missing_weights_fall_back_then_functional_relus_offer_every_mode(tmp_path, monkeypatch):
    from deepvis import models

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no cached torchvision weights...

    def offline(url, destination, timeout_s):
        raise OSError("network unreachable")

    monkeypatch.setattr(models, "_fetch", offline)  # ...and no network
    at = start()
    at.selectbox(key="model_name").set_value("googlenet").run()
    assert not at.exception
    assert len(at.error) == 1 and "googlenet" in at.error[0].value and str(tmp_path) in at.error[0].value
    assert prediction_labels(at)[0] in CATS  # the page goes on with the embedded model
    at.radio(key="model_weights").set_value("random").run()
    assert not at.exception
    # GoogLeNet's F.relu calls are graph nodes: deconvnet and guided backprop reach them.
    assert at.radio(key="act_bp_mode").options == ["saliency", "deconv", "guided"]
    assert not any("only saliency" in i.value for i in at.info)
    at.radio(key="act_bp_mode").set_value("guided").run()
    assert not at.exception and backward_caption(at) == "guided, norm_blur filter"


# ------------------------------------------------------------- the unit column

def _captions(at: AppTest) -> list[str]:
    return [c for img in at.get("image") for c in img.captions]


def short_rows(lite0, monkeypatch) -> None:
    """The shipped rows run 500-700 iterations (minutes on a CPU); the same rows cut to 20 keep a test short."""
    from deepvis import presets

    shipped = presets.shipped(lite0.spec.name)
    short = dataclasses.replace(shipped, rows={r: s.replace(steps=20) for r, s in shipped.rows.items()})
    monkeypatch.setattr(presets, "shipped", lambda model: short if model == lite0.spec.name else None)


def test_stepping_units_updates_the_whole_unit_column(lite0, tmp_path, monkeypatch):
    from deepvis import index, patterns, presets

    monkeypatch.setenv("DEEPVIS_CACHE", str(tmp_path))
    short_rows(lite0, monkeypatch)
    at = start()
    layer = at.selectbox(key="act_layer_efficientnet_lite0").value
    index_button = next(b for b in at.button if b.label.startswith("Index 17 photos"))
    index_button.click().run()
    for _ in range(240):  # the index is built on a background worker; the page polls it
        if any(c.value.startswith("Top 9") for c in at.caption):
            break
        time.sleep(0.5)
        at.run()
    assert not at.exception and not at.error
    analysis = analyze(lite0, decode_image(sample_bytes("chelsea")), layer)
    path = index.index_path(lite0, "samples")
    for unit in (1, 2):
        at.button(key="act_unit_next").click().run()
        assert not at.exception and at.number_input(key="act_unit").value == unit
        assert unit_summary(at).startswith(f"**Unit {unit}** · max {analysis.stats.max[unit].item():.3g}")
        hits = index.top(path, layer, unit, 9)
        shown = [c for c in _captions(at) if c.startswith("#")]
        assert shown == [f"#{i + 1} · {h.value:.3g} · {Path(h.path).name}" for i, h in enumerate(hits)]
        assert dict(at.query_params)["unit"] == str(unit)
    assert any(c.value == "Their guided images" for c in at.caption)  # guided backprop by default
    at.radio(key="act_top_mode").set_value("deconv").run()
    assert not at.exception and any(c.value == "Their deconv images" for c in at.caption)
    # The optimized image: on request, then from the disk cache (no button on the next visit).
    choices = presets.choices(lite0.spec.name, photo=False)
    quickest = min(choices, key=lambda c: choices[c].steps)
    assert quickest == "1" and choices[quickest].steps == 20
    at.selectbox(key="act_preset").set_value(quickest).run()
    settings = choices[quickest]
    target = Target(layer, 2)
    assert patterns.load(lite0, target, settings) is None
    optimize = next(b for b in at.button if b.label.startswith("Optimize unit 2"))
    optimize.click().run()
    assert not at.exception and patterns.load(lite0, target, settings) is not None
    assert not any(b.label.startswith("Optimize unit 2") for b in at.button)  # the image replaced the button
    at.button(key="act_unit_prev").click().run()
    at.button(key="act_unit_next").click().run()
    assert not any(b.label.startswith("Optimize unit 2") for b in at.button)
    assert any(c.startswith(f"Optimized ({presets.name(lite0.spec.name, quickest)})") for c in _captions(at))
    dead = patterns.load(lite0, target, settings).objective == 0  # a unit that never turned on is said to be so
    assert any(c.value.startswith("Its objective stayed 0") for c in at.caption) == dead


def test_the_url_names_the_unit_and_a_bad_link_warns_once():
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params.update(model="efficientnet_lite0", weights="default", layer="_blocks.5._swish_1", unit="7")
    at.run()
    assert not at.exception
    assert at.selectbox(key="act_layer_efficientnet_lite0").value == "_blocks.5._swish_1"
    assert at.number_input(key="act_unit").value == 7 and unit_summary(at).startswith("**Unit 7**")
    at.number_input(key="act_unit").set_value(11).run()
    assert dict(at.query_params) == {"model": "efficientnet_lite0", "weights": "default",
                                     "layer": "_blocks.5._swish_1", "unit": "11"}
    bad = AppTest.from_file(APP, default_timeout=120)
    bad.query_params.update(layer="no_such_layer", unit="99999")
    bad.run()
    assert not bad.exception and grid_shown(bad)
    assert [w.value.split(";")[0] for w in bad.warning] == [
        "The link's layer 'no_such_layer' is not a layer of EfficientNet-Lite0 (embedded)",
        "The link's unit 99999 does not exist here (units 0-671)"]


def test_pattern_mode_offers_the_missing_patterns_and_stops_on_request(lite0, tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPVIS_CACHE", str(tmp_path))
    short_rows(lite0, monkeypatch)  # not the shipped atlas's preset: every pattern is missing
    at = start()
    at.toggle(key="act_patterns").set_value(True).run()
    assert not at.exception and any("showing its optimized image" in c.value for c in at.caption)
    fill = next(b for b in at.button if b.label.startswith("Optimize the 672 missing patterns"))
    fill.click().run()
    assert not at.exception
    stop = next(b for b in at.button if b.label == "Stop")
    stop.click().run()
    for _ in range(600):  # the worker stops after the batch in progress
        if any("stopped; what was finished is kept" in i.value for i in at.info):
            break
        time.sleep(0.5)
        at.run()
    assert not at.exception and not at.error
    assert any("stopped; what was finished is kept" in i.value for i in at.info)
    assert any(b.label.startswith("Optimize the ") for b in at.button)  # it can be started again


def test_occlusion_map_on_request_equals_the_library(lite0):
    from deepvis.occlusion import occlusion_map

    at = start()
    assert not any(c.value.startswith("class ") for c in at.caption)
    at.select_slider(key="act_occ_patch").set_value(64)
    at.select_slider(key="act_occ_stride").set_value(32).run()
    at.button(key="act_occ_go").click().run()
    assert not at.exception and not at.error
    wanted, result = at.session_state["act_occ_result"]
    view = model_view(decode_image(sample_bytes(SAMPLE_NAMES[0])), lite0.spec)
    want = occlusion_map(lite0, view, 64, 32)
    np.testing.assert_allclose(result.drops, want.drops, rtol=1e-5, atol=1e-6)
    assert result.windows == 36 and result.target == want.target  # 6 x 6 squares: 0, 32, ..., 160
    assert any(c.value.startswith(f"{want.target}: ") for c in at.caption)
    # the unit as target: a new map on request, the class map is not reused
    at.radio(key="act_occ_target").set_value(at.radio(key="act_occ_target").options[1]).run()
    assert not at.exception and not any(c.value.startswith(f"{want.target}: ") for c in at.caption)
    assert any(c.value.startswith("A grey square") for c in at.caption)  # offered again, not computed yet
    at.button(key="act_occ_go").click().run()
    assert not at.exception and at.session_state["act_occ_result"][1].target.endswith("unit 0")


def test_the_units_weights_are_shown(lite0, monkeypatch):
    from deepvis.weights import conv_weights, filter_tiles

    pixels = record_media(monkeypatch)
    at = start()
    at.number_input(key="act_unit").set_value(5).run()
    assert not at.exception
    (image,) = [image for image in at.get("image") if image.captions and image.captions[0].startswith("Filter ")]
    assert image.captions == ["Filter 5 of _blocks.9._depthwise_conv.conv2d (1 × 5 × 5; depthwise: one kernel), "
                              "scaled about zero: grey = 0"]
    found = conv_weights(lite0, at.selectbox(key="act_layer_efficientnet_lite0").value)
    assert np.array_equal(pixels(image.value[0]), upscale(filter_tiles(found, 5)[0], 224, smooth=False))


def test_representation_map_of_the_collection_and_opening_a_photo(lite0, tmp_path, monkeypatch):
    from deepvis.collection import default_collection

    monkeypatch.setenv("DEEPVIS_CACHE", str(tmp_path))
    at = start()
    layer = at.selectbox(key="act_layer_efficientnet_lite0").value
    assert not [b for b in at.button if b.label == f"Index 17 photos for {layer} and _fc"]  # the map is closed
    at.session_state["act_map_box"] = True  # open it
    at.run()
    both = next(b for b in at.button if b.label == f"Index 17 photos for {layer} and _fc")
    both.click().run()
    for _ in range(240):  # indexed on a background worker; the page polls it
        charts = [c for c in at.get("plotly_chart") if "t-SNE" in c.proto.spec]
        if charts:
            break
        time.sleep(0.5)
        at.run()
    assert not at.exception and not at.error and charts
    spec = json.loads(charts[0].proto.spec)
    def points(values) -> int:  # plain lists, or Plotly's base64 typed arrays
        if isinstance(values, dict):
            return len(base64.b64decode(values["bdata"])) // np.dtype(values["dtype"]).itemsize
        return len(values)

    assert sum(points(trace["x"]) for trace in spec["data"]) == 17  # one point per bundled photo
    assert any(c.value.startswith("17 photos, one point each") for c in at.caption)
    # a point's "Open this photo on the page" puts that photo on the page, analyzed like any other
    path = next(e.path for e in default_collection() if e.path.endswith("coffee.png"))
    at.session_state["act_opened"] = (open(path, "rb").read(), "coffee.png")
    at.run()
    assert not at.exception and prediction_labels(at)[0] == "espresso"
    assert any(c.value == "Photo: coffee.png" for c in at.caption)
    at.button(key="act_close").click().run()
    assert not at.exception and "act_opened" not in at.session_state


def test_another_unit_reuses_the_photos_analysis_and_another_layer_does_not(monkeypatch):
    from deepvis.app import inputs

    at = start()
    calls = []
    real = inputs.analyze
    monkeypatch.setattr(inputs, "analyze", lambda *args, **kwargs: calls.append(args[2]) or real(*args, **kwargs))
    at.button(key="act_unit_next").click().run()
    at.button(key="act_unit_next").click().run()
    assert not at.exception and calls == []  # the same photo and layer: no forward pass for the grid again
    layer = at.selectbox(key="act_layer_efficientnet_lite0")
    before = layer.value
    layer.set_value("_blocks.9._expand_conv.conv2d").run()
    assert before != "_blocks.9._expand_conv.conv2d"
    assert not at.exception and calls == ["_blocks.9._expand_conv.conv2d"]  # a new layer: analyzed once


def test_an_atlas_of_the_model_gives_the_unit_its_top_images_and_optimized_image_at_once(lite0, tmp_path,
                                                                                          monkeypatch):
    from deepvis import atlas, presets
    from deepvis.atlas_pictures import load_optimized
    from deepvis.progress import drain
    from deepvis.units import hit_label

    monkeypatch.setenv("DEEPVIS_CACHE", str(tmp_path / "cache"))  # nothing optimized or indexed before
    short_rows(lite0, monkeypatch)
    layer = "_blocks.0._swish"  # 32 units: a quick atlas, optimized at 32 px
    choices = presets.choices(lite0.spec.name, photo=False)
    quickest = min(choices, key=lambda c: choices[c].steps)
    drain(atlas.build(lite0, "samples", [layer], tmp_path / "atlas", k=6, optimize=quickest, size=32))
    other = tmp_path / "not-an-atlas"
    other.mkdir()
    monkeypatch.setenv("DEEPVIS_ATLAS", f"{tmp_path / 'atlas'}:{other}")
    at = start()
    at.selectbox(key="act_group_efficientnet_lite0").set_value("_blocks.0").run()
    at.selectbox(key="act_layer_efficientnet_lite0").set_value(layer).run()
    at.selectbox(key="act_preset").set_value(quickest).run()
    at.number_input(key="act_unit").set_value(5).run()
    assert not at.exception
    # The optimized image comes from the atlas: no button to compute it, the atlas's picture shown.
    assert not any(b.label.startswith("Optimize unit 5") for b in at.button)
    shown = next(img for img in at.get("image") if img.captions and img.captions[0].startswith("Optimized ("))
    assert shown is not None and load_optimized(tmp_path / "atlas", layer, 5) is not None
    assert any(f"--atlas {other}: " in c.value and "not a finished atlas" in c.value for c in at.caption)
    # Pattern mode's grid takes every channel's image from the atlas: nothing left to optimize.
    at.toggle(key="act_patterns").set_value(True).run()
    assert not at.exception
    assert f"32 of the 32 images are precomputed: from the atlas at {tmp_path / 'atlas'}." in [c.value for c in at.caption]
    assert not any(b.label.startswith("Optimize the") for b in at.button)
    at.toggle(key="act_patterns").set_value(False).run()
    at.radio(key="act_collection").set_value("An atlas").run()
    assert not at.exception and not at.error
    hits = atlas.top(tmp_path / "atlas", layer, 5, 6)
    assert [c for c in _captions(at) if c.startswith("#")] == [hit_label(i + 1, h) for i, h in enumerate(hits)]
    assert not any(b.label.startswith("Index ") for b in at.button)  # no photo is read or indexed
    # A compact atlas without crops (as the one shipped): its image is shown and said to be the seen part only;
    # it is no source of top images.
    drain(atlas.build(lite0, "samples", [layer], tmp_path / "compact", k=6, optimize=quickest, size=64,
                      compact=True, crops=False))
    monkeypatch.setenv("DEEPVIS_ATLAS", str(tmp_path / "compact"))
    at = start()
    at.selectbox(key="act_group_efficientnet_lite0").set_value("_blocks.0").run()
    at.selectbox(key="act_layer_efficientnet_lite0").set_value(layer).run()
    at.selectbox(key="act_preset").set_value(quickest).run()
    at.number_input(key="act_unit").set_value(5).run()
    assert not at.exception and not any(b.label.startswith("Optimize unit 5") for b in at.button)
    assert any(c.value.startswith(f"Precomputed: from the atlas at {tmp_path / 'compact'}; it keeps only the part")
               for c in at.caption)
    assert "An atlas" not in at.radio(key="act_collection").options
