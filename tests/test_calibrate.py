"""`deepvis calibrate`: the random search over θ, its preset file, resuming, and the shipped presets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import deepvis
from deepvis import calibrate, presets
from deepvis import optimize as opt
from deepvis.models import LoadedModel
from deepvis.presets import PRESETS
from deepvis.targets import Target, resolve_unit

NAMES = ("red", "green", "blue", "dark")
SIZE, STEPS = 32, (4, 6)


def tiny(seed: int) -> LoadedModel:
    """conv 3->6 (3x3) -> ReLU -> global mean -> linear 6->4: a tiny classifier of 4 named classes."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                               nn.Linear(6, 4))
    module.eval().requires_grad_(False)
    return deepvis.wrap(module, input=f"3x{SIZE}x{SIZE}", mean=(0.5,) * 3, std=(0.25,) * 3, classes=NAMES,
                        name=f"tiny{seed}")


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    return tiny(0)


@pytest.fixture(scope="module")
def judge() -> LoadedModel:
    return tiny(1)  # another network: it took no part in making the images


def search(model, judge, out, trials=3, top=0):
    return calibrate.search(model, out, classes=("red", "blue"), trials=trials, steps=STEPS, validate=("green", "dark"),
                            top=top, judge_with=judge)


def logged(path) -> list[calibrate.Trial]:
    """The trials of a search's log (its header line left out)."""
    return [calibrate.Trial.from_json(line) for line in path.read_text().splitlines()[1:]]


def finish(progress) -> presets.PresetFile:
    while True:
        try:
            next(progress)
        except StopIteration as stop:
            return stop.value


def test_three_trials_write_a_preset_file_that_loads_back_and_drives_a_run(model, judge, tmp_path):
    out = tmp_path / "tiny.json"
    found = finish(search(model, judge, out))
    loaded = presets.PresetFile.read(out)
    assert loaded.rows == found.rows and loaded.trials == 3 and loaded.judge == "tiny1"
    assert loaded.classes == ("red", "blue") and set(loaded.scores) == {1, 2, 3, 4}
    log = (tmp_path / "tiny.json.trials.jsonl").read_text().splitlines()
    assert json.loads(log[0])["classes"] == ["red", "blue"] and len(log) == 1 + 3 * 4
    best = {}
    for line in log[1:]:
        trial = calibrate.Trial.from_json(line)
        assert trial.settings == calibrate.trial_settings(trial.row, trial.index, 0, STEPS)  # reproducible draws
        if trial.row not in best or trial.score > best[trial.row].score:
            best[trial.row] = trial
    assert {r: t.settings for r, t in best.items()} == dict(loaded.rows)  # each row's best trial is its preset

    # Each row keeps its Table 1 character; only magnitudes moved.
    one, two, three, four = (loaded.rows[r] for r in (1, 2, 3, 4))
    assert one.lr_policy == "progress" and one.norm_pct > 0 and one.blurs and one.decay == 0
    assert two.lr_policy == "constant" and two.decay >= 0.01 and two.norm_pct > 0 and not two.blurs
    assert three.decay <= 0.01 and three.blurs and three.norm_pct == three.contrib_pct == 0
    assert four.lr_policy == "progress" and four.contrib_pct >= 50 and four.blurs and four.norm_pct == 0
    assert all(s.steps in STEPS for s in loaded.rows.values())

    settings = presets.resolve("tiny0", "2", calibrated=loaded)
    record = opt.run(model, Target(model.logits_layer, 1), settings, size=SIZE)
    assert record.rows[0].final > record.rows[0].initial


def test_an_interrupted_search_resumes_without_redoing_finished_trials(model, judge, tmp_path, monkeypatch):
    out = tmp_path / "resumed.json"
    progress = search(model, judge, out, trials=2)
    for _ in range(5):
        next(progress)
    progress.close()  # as Ctrl-C would leave it: five trials logged, the preset file from the rows' first trials
    assert len((tmp_path / "resumed.json.trials.jsonl").read_text().splitlines()) == 1 + 5
    assert presets.PresetFile.read(out).trials == 2

    ran = []
    real = calibrate.run_trial
    monkeypatch.setattr(calibrate, "run_trial", lambda *a, **k: ran.append(a[2]) or real(*a, **k))
    steps = list(search(model, judge, out, trials=2))
    assert [s.resumed for s in steps] == [True] * 5 + [False] * 3
    assert ran == [calibrate.trial_settings(r, i, 0, STEPS) for i, r in [(1, 2), (1, 3), (1, 4)]]

    monkeypatch.setattr(calibrate, "run_trial", real)
    fresh = finish(search(model, judge, tmp_path / "fresh.json", trials=2))
    assert presets.PresetFile.read(out).rows == fresh.rows  # the same result as an uninterrupted search


def test_validation_picks_each_rows_best_candidate_over_both_class_sets(model, judge, tmp_path, monkeypatch):
    out = tmp_path / "validated.json"
    found = finish(search(model, judge, out, trials=3, top=2))
    lines = logged(tmp_path / "validated.json.trials.jsonl")
    searched = {(t.row, t.index): t for t in lines if t.stage == "search"}
    checked = {(t.row, t.index): t for t in lines if t.stage == "validate"}
    assert len(searched) == 12 and len(checked) == 8
    assert all(t.classes == ("green", "dark") and len(t.hits) == 2 for t in checked.values())
    for row in (1, 2, 3, 4):
        best_two = sorted((t for (r, _), t in searched.items() if r == row), key=lambda t: -t.score)[:2]
        assert {t.index for t in best_two} == {i for (r, i) in checked if r == row}  # the row's two best were checked
        combined = {t.index: 0.5 * t.score + 0.5 * checked[(row, t.index)].score for t in best_two}  # 2 + 2 classes
        chosen = max(combined, key=combined.get)
        assert found.rows[row] == searched[(row, chosen)].settings and found.scores[row] == round(combined[chosen], 4)
    assert presets.PresetFile.read(out).validation == ("green", "dark")

    ran = []
    monkeypatch.setattr(calibrate, "run_trial", lambda *a, **k: ran.append(a) or pytest.fail("ran a logged trial"))
    again = finish(search(model, judge, out, trials=3, top=2))
    assert ran == [] and again.rows == found.rows  # a finished, validated search resumes to the same file


def test_the_jitter_stage_tries_each_rows_choice_with_each_jitter_and_keeps_the_better(model, judge, tmp_path,
                                                                                      monkeypatch):
    out = tmp_path / "jittered.json"
    plain = finish(search(model, judge, tmp_path / "plain.json", trials=2, top=1))
    found = finish(calibrate.search(model, out, classes=("red", "blue"), trials=2, steps=STEPS,
                                    validate=("green", "dark"), top=1, judge_with=judge, jitters=(2, 5)))
    lines = logged(tmp_path / "jittered.json.trials.jsonl")
    tried = {(t.stage, t.row, t.settings.jitter): t for t in lines if t.stage.startswith("jitter")}
    assert len(tried) == 2 * 4 * 2  # two jitters, four rows, both class sets
    for row in (1, 2, 3, 4):
        base = plain.rows[row]
        scores = {0: plain.scores[row]}
        for j in (2, 5):
            one, two = tried[("jitter", row, j)], tried[("jitter-validate", row, j)]
            assert one.settings == two.settings == base.replace(jitter=j)  # the chosen θ, only the jitter changed
            assert two.classes == ("green", "dark") and len(one.hits) == 2
            scores[j] = 0.5 * one.score + 0.5 * two.score
        best = max(scores, key=lambda j: (scores[j], -j))  # a tie keeps the earlier candidate
        assert found.rows[row] == base.replace(jitter=best) and found.scores[row] == round(scores[best], 4)

    monkeypatch.setattr(calibrate, "run_trial", lambda *a, **k: pytest.fail("ran a logged trial"))
    again = finish(calibrate.search(model, out, classes=("red", "blue"), trials=2, steps=STEPS,
                                    validate=("green", "dark"), top=1, judge_with=judge, jitters=(2, 5)))
    assert again.rows == found.rows  # resumed from the log
    with pytest.raises(ValueError, match="jitters must be"):
        calibrate.search(model, out, classes=("red",), trials=1, steps=STEPS, top=0, judge_with=judge, jitters=(0,))


def test_a_log_from_another_search_is_refused_in_one_line(model, judge, tmp_path):
    out = tmp_path / "p.json"
    finish(search(model, judge, out, trials=1))
    with pytest.raises(ValueError, match="made by a different search") as error:
        calibrate.search(model, out, classes=("green",), trials=1, steps=STEPS, top=0, judge_with=judge)
    assert "\n" not in str(error.value)


def test_preset_names_resolve_to_calibrated_rows_or_table1_verbatim():
    shipped = presets.shipped("efficientnet_lite0")
    assert shipped is not None and shipped.judge == "efficientnet_lite1" and shipped.trials >= 8
    assert len(shipped.validation) >= 3 and not set(shipped.validation) & set(shipped.classes)
    for row in (1, 2, 3, 4):
        assert presets.resolve("efficientnet_lite0", row) == shipped.rows[row]
        assert presets.resolve("efficientnet_lite0", f"table1:{row}") == PRESETS[row]
        assert presets.resolve("alexnet", str(row)) == PRESETS[row]  # no calibrated rows: Table 1
    assert presets.name("efficientnet_lite0", "2") == "Lite0 row 2 (calibrated)"
    assert presets.name("efficientnet_lite0", "table1:2") == "Table 1 row 2 (verbatim)"
    for bad in ("5", "table1:0", "row2", "table1:"):
        with pytest.raises(ValueError, match="a preset is a row 1, 2, 3, 4"):
            presets.resolve("efficientnet_lite0", bad)


@pytest.mark.parametrize("row", [1, 2, 3, 4])
def test_every_shipped_calibrated_row_raises_its_objective_on_the_embedded_model(lite0, row):
    settings = presets.resolve("efficientnet_lite0", row)
    target = Target(lite0.logits_layer, resolve_unit(lite0, lite0.logits_layer, "goldfish"))
    record = opt.run(lite0, target, settings.replace(steps=min(settings.steps, 40)), size=96)
    objectives = record.rows[0].objectives
    assert objectives[-1] > objectives[0] + 2 and np.isfinite(objectives).all()


def test_the_report_classes_took_no_part_in_the_search():
    from bench.bench_legibility import HELD_OUT, REPORT_CLASSES

    searched = set(calibrate.DEFAULT_CLASSES) | set(calibrate.DEFAULT_VALIDATION)
    assert len(calibrate.DEFAULT_CLASSES) >= 8 and not searched & (set(HELD_OUT) | set(REPORT_CLASSES))
    assert not set(calibrate.DEFAULT_CLASSES) & set(calibrate.DEFAULT_VALIDATION)


def test_the_shipped_presets_were_chosen_under_random_views_without_the_reporting_judge(lite0):
    """Every shipped row is a trial of one of the shipped logs (the first search, or a second round's), and every
    log scored with the calibration judge under random views, on the file's classes, never with the reporting judge."""
    import json as _json

    from deepvis import quality

    shipped = presets.shipped("efficientnet_lite0")
    logs = sorted(presets.SHIPPED.glob("efficientnet_lite0*.trials.jsonl"))
    assert len(logs) == 2  # the first search (with its jitter and transform stages) and the second round
    reporting, trials = quality.judge_name(lite0), []
    for log in logs:
        lines = log.read_text().splitlines()
        header = _json.loads(lines[0])
        assert header["objective"] == calibrate.OBJECTIVE and header["views"] >= 8
        assert header["classes"] == list(shipped.classes) and len(shipped.classes) >= 8
        assert header["judge"] == shipped.judge != reporting
        trials += [_json.loads(line) for line in lines[1:]]
    assert {t["row"] for t in trials} == {1, 2, 3, 4} and all("hits" in t for t in trials)
    n, m = len(shipped.classes), len(shipped.validation)
    for row, settings in shipped.rows.items():  # each row is a logged trial; its score weighs in its validation run
        same = [t for t in trials if t["row"] == row and t["settings"] == settings.to_dict()]
        searched = [t["score"] for t in same if not t.get("classes")]  # on the search classes
        checked = [t["score"] for t in same if t.get("classes") == list(shipped.validation)]
        assert any(round((n * s + m * v) / (n + m), 4) == shipped.scores[row] for s in searched for v in checked)
