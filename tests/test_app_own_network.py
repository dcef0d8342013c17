"""Every page on a network of one's own (AppTest): the gray 1x28x28 and the RGB 3x32x32 digits networks of
``tests/nets/digits.py``, trained by the session fixtures ``gray_net`` and ``color_net``, served through a
models file (``DEEPVIS_MODELS``) as a person would configure them.

Each page must run without an exception, name the digits, show the network's small pictures enlarged by a
whole factor with no smoothing, and (with no ImageNet judge for such a network) report robustness alone.
Runs are a few iterations at the network's own size, so each test takes seconds.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from deepvis import display, models_file, presets, receptive, units
from deepvis.experiment import Experiment
from deepvis.images import decode_image, model_view, sample_bytes
from deepvis.occlusion import default_window
from deepvis.presets import table1_at
from deepvis.targets import Target
from tests.app_media import record_media
from tests.helpers import start_run
from deepvis.app.runs import LIVE_SIZE

APP = str(Path(__file__).resolve().parents[1] / "streamlit_app.py")
ZOOM = 224  # the side small pictures are enlarged to


@pytest.fixture(params=["gray", "color"])
def net(request) -> dict:
    return request.getfixturevalue(f"{request.param}_net")


def _name(net: dict) -> str:
    return f"apptest_own_{'gray' if net['channels'] == 1 else 'color'}"  # the model cache outlives a test


def _title(net: dict) -> str:
    return f"Digits {net['input']} (AppTest)"


@pytest.fixture
def served(net, tmp_path, monkeypatch) -> dict:
    """The network in a models file named by DEEPVIS_MODELS, with an empty deepvis cache."""
    listed = lambda values: "[" + ", ".join(map(str, values)) + "]"  # noqa: E731
    (tmp_path / "models.toml").write_text(
        f'[models.{_name(net)}]\ntitle = "{_title(net)}"\nmodel = "{Path(net["file"]).as_posix()}:{net["name"]}"\n'
        f'weights = "{Path(net["weights"]).as_posix()}"\nclasses = "{Path(net["classes"]).as_posix()}"\n'
        f'input = "{net["input"]}"\nmean = {listed(net["mean"])}\nstd = {listed(net["std"])}\n')
    monkeypatch.setenv(models_file.ENV, str(tmp_path / "models.toml"))
    monkeypatch.setenv("DEEPVIS_CACHE", str(tmp_path / "cache"))
    return net


def start(page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180).run()
    assert not at.exception
    if page:
        at.switch_page(f"app_pages/{page}.py").run()
        assert not at.exception
    assert not at.error and not at.warning
    return at


def blocky(pixels: np.ndarray, factor: int) -> bool:
    """Whether ``pixels`` is a picture enlarged ``factor`` times with no smoothing (every block one colour)."""
    small = pixels[::factor, ::factor]
    return factor > 1 and np.array_equal(pixels, small.repeat(factor, axis=0).repeat(factor, axis=1))


def image(at: AppTest, caption_start: str):
    found = [i for i in at.get("image") if i.captions and (i.captions[0] or "").startswith(caption_start)]
    assert len(found) == 1, [i.captions for i in at.get("image")]
    return found[0]


def column_names(net: dict, steps: int) -> list[str]:
    """The headers of Table 1 rows 1 and 2 shortened to ``steps``, named against the network (its input side)."""
    return [f"{letter} · {presets.name(net['loaded'], f'table1:{row}')}, {steps} it"
            for letter, row in (("A", 1), ("B", 2))]


def quality_lines(at: AppTest) -> list:
    return [m for m in at.markdown if m.value.startswith("**Quality**")]


def assert_robustness_only(at: AppTest, count: int) -> None:
    from deepvis.app.runs import ROBUSTNESS_HELP

    lines = quality_lines(at)
    assert len(lines) == count
    for line in lines:
        assert "robustness" in line.value and "judge" not in line.value, line.value
        assert line.proto.help == ROBUSTNESS_HELP  # no ImageNet judge named in the tooltip
    table = at.dataframe[0].value
    assert "robustness" in table.columns and "judge rank" not in table.columns and "judge p" not in table.columns


# --------------------------------------------------------------------------------------------- Activations

def test_activations_page_shows_the_networks_grid_digits_and_unit_panels(served, monkeypatch):
    net, loaded = served, served["loaded"]
    pixels = record_media(monkeypatch)
    at = start()
    picker = at.selectbox(key="model_name")
    assert picker.value == _name(net) and picker.options[0] == _title(net)  # the server's own network first
    assert any(_title(net) in c.value and net["input"] in c.value for c in at.sidebar.caption)

    layer = at.selectbox(key=f"act_layer_{_name(net)}").value
    channels = loaded.layer(layer).shape[0]
    assert any(c.value.startswith(f"All {channels} channels of {layer}, one tile each") for c in at.caption)
    chart = json.loads(at.get("plotly_chart")[0].proto.spec)
    labels = list(chart["data"][0]["y"])
    assert len(labels) == 5 and all(label.startswith("digit ") for label in labels), labels

    # What the network sees: its own size and channels (gray shown as gray), enlarged with no smoothing.
    factor = -(-ZOOM // net["size"])
    view = model_view(decode_image(sample_bytes("chelsea")), loaded.spec)
    shown = pixels(image(at, "What the network sees").value[0])
    assert shown.shape[:2] == (net["size"] * factor,) * 2 and blocky(shown, factor)
    assert np.array_equal(shown.reshape(*shown.shape[:2], -1)[::factor, ::factor, 0], view[..., 0])
    if net["channels"] == 1:
        assert np.array_equal(view[..., 0], view[..., 2])

    # Its backward image, in every mode the network allows, enlarged with no smoothing.
    modes = at.radio(key="act_bp_mode").options
    assert "saliency" in modes
    for mode in modes:
        at.radio(key="act_bp_mode").set_value(mode).run()
        assert not at.exception and not at.error
        backward = pixels(image(at, f"{mode}, norm_blur filter").value[0])
        assert blocky(backward, factor), mode

    # Its weights, the first layer's filters, and the occlusion map at sizes made for the input.
    assert image(at, "Filter 0 of ").captions[0].endswith("scaled about zero: grey = 0")
    kind = "gray" if net["channels"] == 1 else "RGB"
    assert any(e.label == f"First-layer filters as {kind} tiles" for e in at.expander)
    assert image(at, f"({loaded.first_conv.weight.shape[0]}, {net['channels']}, ")
    patch, stride = default_window(net["size"])
    assert (at.select_slider(key="act_occ_patch").value, at.select_slider(key="act_occ_stride").value) == \
        (patch, stride)
    at.button(key="act_occ_go").click().run()
    assert not at.exception and not at.error
    result = at.session_state["act_occ_result"][1]
    assert result.windows > 1 and result.target.startswith("class ") and "(digit " in result.target
    assert any(c.value.startswith(f"{result.target}: ") for c in at.caption)

    # Its top images from the bundled photos (indexed on a background worker, which the page polls): the part
    # of the 28 or 32 px view each one's strongest position sees, enlarged with no smoothing.
    next(b for b in at.button if b.label.startswith("Index ")).click().run()
    for _ in range(240):
        if any(c.value.startswith("Top 9") for c in at.caption):
            break
        time.sleep(0.5)
        at.run()
    assert not at.exception and not at.error
    top, left, bottom, right = receptive.field(loaded, layer, 0, 0, clip=False)
    side = max(bottom - top, right - left)
    first = pixels(image(at, "#1 · ").value[0])
    assert first.shape[0] == side * -(-units.CROP // side) and blocky(first, first.shape[0] // side)

    # Pattern mode offers to optimize the layer's patterns.
    at.toggle(key="act_patterns").set_value(True).run()
    assert not at.exception and not at.error
    assert any(b.label.startswith(f"Optimize the {channels} missing patterns") for b in at.button)
    at.toggle(key="act_patterns").set_value(False).run()

    # Another unit, then the logits layer (not spatial): the column follows, nothing breaks.
    at.number_input(key="act_unit").set_value(channels - 1).run()
    assert not at.exception and not at.error
    assert any(m.value.startswith(f"**Unit {channels - 1}** ") for m in at.markdown)
    at.selectbox(key=f"act_group_{_name(net)}").set_value(loaded.layer(loaded.logits_layer).group).run()
    at.selectbox(key=f"act_layer_{_name(net)}").set_value(loaded.logits_layer).run()
    assert not at.exception and not at.error
    assert at.selectbox(key=f"act_layer_{_name(net)}").value == loaded.logits_layer
    assert any(c.value.startswith(f"All 10 channels of {loaded.logits_layer}") for c in at.caption)


# --------------------------------------------------------------------------------------------- Optimization

def test_optimization_page_runs_at_the_networks_size_and_shows_it_enlarged(served, monkeypatch):
    net, loaded = served, served["loaded"]
    pixels = record_media(monkeypatch)
    at = start("optimization")
    assert at.number_input(key=f"opt_size_{_name(net)}").value == net["size"]
    assert at.selectbox(key="opt_preset").value == "table1:3"  # no calibrated rows: Table 1, scaled to its side
    assert at.number_input(key="opt_blur_radius").value == table1_at(3, net["size"]).blur_radius
    assert at.selectbox(key="opt_class").value == 0 and at.selectbox(key="opt_class").options[0].endswith("digit 0")
    at.number_input(key="opt_steps").set_value(4)
    start_run(at, "opt")
    assert not at.exception and not at.error
    state = at.session_state["opt_run"]
    assert state.status == "finished" and state.names[0].startswith("digit 0")
    assert any(s.value.startswith("digit 0") for s in at.subheader)

    row = state.record.rows[0]
    assert row.best_x.shape == (net["size"], net["size"], net["channels"])
    frame = state.history.at(3)
    want = display.show(frame.pixels[0], frame.mean, "zero")  # (H, W, 3), gray shown as gray
    factor = LIVE_SIZE // net["size"]
    shown = pixels(image(at, "iteration 3 · ").value[0])
    assert shown.shape[:2] == (LIVE_SIZE, LIVE_SIZE) and blocky(shown, factor)
    assert np.array_equal(shown[::factor, ::factor], want)
    lines = quality_lines(at)
    assert len(lines) == 1 and "judge" not in lines[0].value and "robustness" in lines[0].value
    assert len(at.get("download_button")) == 4


# --------------------------------------------------------------------------------------------- Comparison

def test_comparison_page_runs_two_columns_on_the_network(served, monkeypatch):
    net = served
    pixels = record_media(monkeypatch)
    at = start("comparison")
    assert at.number_input(key=f"cmp_size_{_name(net)}").value == net["size"]
    at.number_input(key="cmp_k").set_value(2).run()
    for j in range(2):
        at.number_input(key=f"cmp_s{j}_steps").set_value(3)
    at.run()
    headers = [m.value for m in at.markdown if m.value.startswith('<div style="border-top')]
    assert [h.split(">")[1].split("<")[0] for h in headers] == column_names(net, 3)
    start_run(at, "cmp")
    assert not at.exception and not at.error
    state = at.session_state["cmp_run"]
    assert state.status == "finished" and len(state.record.rows) == 2
    assert state.extra["rows"][0].startswith("digit 0")
    shown = [i for i in at.get("image") if i.captions and i.captions[0].startswith("iteration 2 · ")]
    assert len(shown) == 2
    for picture in shown:
        got = pixels(picture.value[0])
        assert got.shape[:2] == (ZOOM, ZOOM) and blocky(got, ZOOM // net["size"])
    assert_robustness_only(at, 2)


@pytest.mark.parametrize("net", ["gray"], indirect=True)
def test_a_saved_comparison_brings_back_the_servers_network(served):
    """Loaded while another network is shown: the sidebar switches to the saved one, the size comes from it
    (none saved), and each column's θ is named as that network's Table 1 row."""
    net = served
    at = start("comparison")
    at.selectbox(key="model_name").set_value("efficientnet_lite0").run()
    assert not at.exception and not at.error
    rows = (table1_at(1, net["size"]), table1_at(2, net["size"]).replace(steps=3))
    saved = Experiment((Target(net["loaded"].logits_layer, 3),), rows, seed=5, size=None, model=_name(net))
    at.file_uploader(key="cmp_upload").upload("digits.json", saved.to_json().encode(), "application/json").run()
    assert not at.exception and not at.error
    assert at.selectbox(key="model_name").value == _name(net)
    assert at.number_input(key=f"cmp_size_{_name(net)}").value == net["size"]
    assert at.number_input(key="cmp_k").value == 2 and at.number_input(key="cmp_seed").value == 5
    assert at.selectbox(key="cmp_class").value == 3
    # Row 1 as saved is this network's Table 1 row 1 (its blur scaled to 28 px), not custom θ.
    assert at.selectbox(key="cmp_s0_preset").value == "table1:1"
    assert at.selectbox(key="cmp_s1_preset").value == "custom"  # row 2 with other iterations
    headers = [m.value for m in at.markdown if m.value.startswith('<div style="border-top')]
    assert [h.split(">")[1].split("<")[0] for h in headers] == [
        f"A · {presets.name(net['loaded'], 'table1:1')}", column_names(net, 3)[1]]
