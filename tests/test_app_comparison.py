"""The Comparison page through Streamlit's AppTest: side-by-side settings, the units x settings sheet,
saving and loading.  A handful of iterations at 64 px on the embedded model."""

from __future__ import annotations

from tests.helpers import start_run
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from deepvis import charts
from deepvis import optimize as opt
from deepvis import presets, quality
from deepvis.experiment import Experiment
from deepvis.settings import Settings
from deepvis.targets import Target

APP = str(Path(__file__).resolve().parents[1] / "streamlit_app.py")
SIZE = 64
STEPS = (3, 4, 5)  # Lite0's calibrated rows 1, 2, 3 shortened; different lengths, so columns finish at different times


def page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180).run()
    at.switch_page("app_pages/comparison.py").run()
    assert not at.exception and not at.error
    return at


def three_settings(at: AppTest) -> list[Settings]:
    at.number_input(key="cmp_k").set_value(3).run()
    for j, steps in enumerate(STEPS):
        at.number_input(key=f"cmp_s{j}_steps").set_value(steps)
    at.number_input(key="cmp_size_efficientnet_lite0").set_value(SIZE).run()
    assert not at.exception and not at.error
    return [presets.resolve("efficientnet_lite0", j + 1).replace(steps=steps) for j, steps in enumerate(STEPS)]


def column_captions(at: AppTest) -> list[str]:
    return [image.captions[0] for image in at.get("image")]


def headers(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown if m.value.startswith("<div style=\"border-top")]


@pytest.fixture(scope="module")
def compared() -> tuple[AppTest, list[Settings]]:
    at = page()
    settings = three_settings(at)
    start_run(at, "cmp")
    assert not at.exception and not at.error
    return at, settings


def test_three_settings_run_as_one_batch(compared, lite0):
    at, settings = compared
    state = at.session_state["cmp_run"]
    assert at.session_state["cmp_runs"] == 1 and state.status == "finished"
    assert [row.settings for row in state.record.rows] == settings
    assert [row.steps_done for row in state.record.rows] == list(STEPS)
    assert state.history.iterations == list(range(max(STEPS)))

    # Column j is what a single run of settings j gives from the same seed.
    # A batch of 3 and a batch of 1 take different CPU convolution kernels (float differences ~1e-6); a
    # percentile clip (rows 1 and 2) can flip a pixel at its threshold, and row 3's calibrated lr (124) swings
    # the image by hundreds of grey levels a step, so later iterations amplify those differences: every column
    # is compared over its first 3 iterations (each a full forward, backward and step); row 3 over its first 2,
    # since its jitter (4) makes the third iteration's objective differ by ~1e-2 from a 4e-6 difference.
    for j, row in enumerate(state.record.rows):
        single = opt.run(lite0, Target("_fc", 130), settings[j], seed=0, size=SIZE).rows[0]
        n = 2 if j == 2 else 3
        np.testing.assert_allclose(row.objectives[:n], single.objectives[:n], rtol=1e-4, atol=1e-4)

    captions = column_captions(at)
    assert len(captions) == 3
    for caption, row in zip(captions, state.record.rows):
        assert caption == (f"iteration {row.steps_done - 1} · objective {row.final:.4g} · "
                           f"finished after {row.steps_done}")

    table = at.dataframe[0].value
    expected = [f"{c} · Lite0 row {j + 1} (calibrated), {n} it" for j, (c, n) in enumerate(zip("ABC", STEPS))]
    assert list(table["setting"]) == expected
    for (_, line), row in zip(table.iterrows(), state.record.rows):
        assert line["final objective"] == pytest.approx(row.final)
        assert line["best objective"] == pytest.approx(row.objectives.max())
        assert line["best iteration"] == int(row.objectives.argmax())
        assert line["final norm"] == pytest.approx(row.norms[-1]) and line["final std"] == pytest.approx(row.stds[-1])
        hits = np.flatnonzero(row.is_argmax)
        assert (None if hits.size == 0 else int(hits[0])) == (None if pd.isna(line["argmax from"])
                                                               else int(line["argmax from"]))


def test_chart_has_one_line_per_setting_in_the_header_colours(compared):
    at, _ = compared
    state = at.session_state["cmp_run"]
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    lines = [trace for trace in spec["data"] if trace["mode"] == "lines"]
    assert len(lines) == 6  # per setting: every iteration, faint; its trailing mean in the header's colour
    shown = headers(at)[-3:]  # the results' column headers
    for j, (raw, line, row) in enumerate(zip(lines[::2], lines[1::2], state.record.rows)):
        assert line["name"] == state.names[j] and state.names[j] in shown[j]
        assert line["line"]["color"] == charts.PALETTE[j] and charts.PALETTE[j] in shown[j]
        np.testing.assert_allclose(raw["y"], row.objectives)
        np.testing.assert_allclose(line["y"], charts.trailing_mean(row.objectives))
        assert raw["showlegend"] is False and raw["line"]["color"].startswith("rgba(")


def test_every_column_shows_its_quality_and_the_table_agrees(compared, lite0):
    at, _ = compared
    state = at.session_state["cmp_run"]
    want = quality.assess_record(lite0, state.record)
    lines = [m for m in at.markdown if m.value.startswith("**Quality**")]
    assert [m.value for m in lines] == [f"**Quality** of the best image (iteration {row.best_step}) — {q.label} · "
                                        f"{'legible' if q.legible else 'not legible'}"
                                        for row, q in zip(state.record.rows, want)]
    assert all(m.proto.help == quality.JUDGE_HELP for m in lines)  # what the judge is, in each line's tooltip
    columns = json.loads(at.dataframe[0].proto.columns)
    assert "judge network" in columns["judge rank"]["help"] and "probability" in columns["judge p"]["help"]
    table = at.dataframe[0].value
    assert list(table["judge rank"]) == [q.rank for q in want]
    np.testing.assert_allclose(table["robustness"].astype(float), [np.nan if q.robustness is None else q.robustness
                                                                   for q in want])


def test_one_slider_moves_every_column(compared):
    at, _ = compared
    state = at.session_state["cmp_run"]
    final_urls = [image.value[0] for image in at.get("image")]
    at.select_slider(key="cmp_history_1").set_value(1).run()
    assert not at.exception
    assert at.session_state["cmp_runs"] == 1 and at.session_state["cmp_run"] is state
    assert not at.get("progress")
    assert column_captions(at) == [f"iteration 1 · objective {row.objectives[1]:.4g}" for row in state.record.rows]
    assert all(image.value[0] != url for image, url in zip(at.get("image"), final_urls))

    # Iteration 3: column A (3 iterations) is finished and keeps its last image; B and C are still running.
    at.select_slider(key="cmp_history_1").set_value(3).run()
    captions = column_captions(at)
    assert captions[0] == f"iteration 2 · objective {state.record.rows[0].final:.4g} · finished after 3"
    assert at.get("image")[0].value[0] == final_urls[0]
    assert captions[1] == f"iteration 3 · objective {state.record.rows[1].objectives[3]:.4g} · finished after 4"
    assert captions[2] == f"iteration 3 · objective {state.record.rows[2].objectives[3]:.4g}"
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert spec["layout"]["shapes"][0]["x0"] == 3


def test_save_then_load_restores_the_comparison():
    at = page()
    three_settings(at)
    at.number_input(key="cmp_s1_decay").set_value(0.05)
    at.number_input(key="cmp_seed").set_value(7).run()
    assert at.selectbox(key="cmp_s1_preset").value == "custom"
    saved = at.code[0].value
    experiment = Experiment.from_json(saved)
    assert experiment.settings[1].decay == 0.05 and experiment.seed == 7 and experiment.size == SIZE

    at.number_input(key="cmp_k").set_value(2)
    at.selectbox(key="cmp_s0_preset").set_value("table1:4")
    at.number_input(key="cmp_seed").set_value(0).run()
    assert at.code[0].value != saved

    at.file_uploader(key="cmp_upload").upload("comparison.json", saved.encode(), "application/json").run()
    assert not at.exception and not at.error
    assert at.number_input(key="cmp_k").value == 3 and at.number_input(key="cmp_seed").value == 7
    assert at.selectbox(key="cmp_s1_preset").value == "custom" and at.number_input(key="cmp_s1_decay").value == 0.05
    assert at.code[0].value == saved

    at.file_uploader(key="cmp_upload").upload("broken.json", b'{"format": "deepvis-experiment", "version": 1',
                                              "application/json").run()
    assert not at.exception
    assert len(at.error) == 1 and at.error[0].value.startswith("Cannot load broken.json: ")
    assert "\n" not in at.error[0].value
    assert at.code[0].value == saved  # the widgets were left as they were


def test_sheet_mode_renders_units_by_settings_as_one_image():
    at = page()
    at.radio(key="cmp_mode").set_value("sheet").run()
    at.multiselect(key="cmp_units").set_value([130, 1])
    at.number_input(key="cmp_k").set_value(2).run()
    for j in range(2):
        at.number_input(key=f"cmp_s{j}_steps").set_value(3)
    at.number_input(key="cmp_size_efficientnet_lite0").set_value(48).run()
    start_run(at, "cmp")
    assert not at.exception and not at.error
    state = at.session_state["cmp_run"]
    assert [(row.target.unit, row.settings.lr_policy) for row in state.record.rows] == [
        (130, "progress"), (130, "constant"), (1, "progress"), (1, "constant")]
    (image,) = at.get("image")
    assert image.captions[0].startswith("Rows: units")
    assert len(at.get("download_button")) == 2  # the sheet and the comparison's JSON
    assert list(at.dataframe[0].value["judge rank"].notna()) == [True] * 4  # every cell scored (logits: judged)
    assert state.extra["rows"] == ["flamingo (class 130 of _fc)", "goldfish (class 1 of _fc)"]


def test_a_column_can_use_a_later_parametrization(lite0):
    at = page()
    at.number_input(key="cmp_k").set_value(2).run()
    at.selectbox(key="cmp_s1_preset").set_value("fourier").run()
    assert not at.number_input(key="cmp_s0_decay").disabled and at.number_input(key="cmp_s1_decay").disabled
    for j in range(2):
        at.number_input(key=f"cmp_s{j}_steps").set_value(4)
    at.number_input(key="cmp_size_efficientnet_lite0").set_value(SIZE).run()
    start_run(at, "cmp")
    assert not at.exception and not at.error
    state = at.session_state["cmp_run"]
    assert [row.settings.param for row in state.record.rows] == ["pixels", "fourier"]
    assert [row.steps_done for row in state.record.rows] == [4, 4]
    table = at.dataframe[0].value
    want = quality.assess_record(lite0, state.record)
    assert list(table["parametrization"]) == ["pixels", "fourier"]
    np.testing.assert_allclose(table["quality score"].astype(float), [q.score for q in want])
    assert list(table.columns[:5]) == ["unit", "setting", "parametrization", "best objective", "quality score"]
