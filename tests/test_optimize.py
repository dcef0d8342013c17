"""Regularized gradient ascent: settings, the exact update on tiny linear nets, and the embedded model.

The tiny nets are 1 x 1 convolutions with hand-set weights, so the gradient is
known in closed form and every iteration can be recomputed here with numpy and
scipy, independently of the engine.
"""

from __future__ import annotations

import io
import json
import threading

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter
from torch import nn

from deepvis import optimize as opt
from deepvis import display, presets, quality, render
from deepvis.activations import capture
from deepvis.cli import main as cli_main
from deepvis.hooks import hook_count
from deepvis.images import SAMPLE_NAMES, decode_image, model_view, sample_bytes, to_batch
from deepvis.models import LoadedModel, Normalization, load_model, wrap_model
from deepvis.presets import PRESETS
from deepvis.records import RowRecord, Snapshot
from deepvis.settings import OptimizeError, Settings
from deepvis.targets import Target, class_names, resolve_unit

# ---------------------------------------------------------------- tiny linear net

WEIGHTS = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])  # 2 output channels x 3 colours
TINY_NORM = Normalization((0.5, 0.4, 0.3), (0.25, 0.5, 1.0))  # a different std per channel
SIZE = 8


@pytest.fixture(scope="module")
def tiny() -> LoadedModel:
    conv = nn.Conv2d(3, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(WEIGHTS.view(2, 3, 1, 1))
    module = nn.Sequential(conv).eval().requires_grad_(False)
    # 8 px is below the smallest input deepvis.wrap accepts (16): the low-level wrap_model builds it.
    return wrap_model(module, "tiny", title="Tiny 1x1 conv", input_size=SIZE, normalization=TINY_NORM)


MEAN = np.array(TINY_NORM.mean255).reshape(3, 1, 1)
STD = np.array(TINY_NORM.std255).reshape(3, 1, 1)


def x0_clipped(size: int = SIZE, seed: int = 0) -> np.ndarray:
    """The documented start, drawn here independently: N(0, 10) from a seeded CPU generator, then clipped."""
    x0 = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))[0].double().numpy() * 10
    return np.clip(x0 + MEAN, 0, 255) - MEAN


def as_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x + MEAN), 0, 255).astype(np.uint8).transpose(1, 2, 0)


def snapshots(model, targets, settings, **kwargs) -> list[Snapshot]:
    return list(opt.optimize(model, targets, settings, every=1, **kwargs))


NO_REG = dict(decay=0.0, blur_radius=0.0, blur_every=0, norm_pct=0.0, contrib_pct=0.0)


def test_start_is_seeded_n0_10_and_the_last_iteration_changes_nothing(tiny):
    # One step: the record holds the clipped start, and no update follows it.
    record = opt.run(tiny, Target("0", 0), Settings(**NO_REG, steps=1, lr=50.0))
    row = record.rows[0]
    x = x0_clipped()
    np.testing.assert_array_equal(row.last_image, as_uint8(x))
    assert row.steps_done == 1 and row.finished
    np.testing.assert_allclose(row.initial, float((WEIGHTS[0].double().numpy() * x[:, 4, 4] / STD[:, 0, 0]).sum()),
                               rtol=1e-5)
    np.testing.assert_allclose(row.norms[0], np.linalg.norm(x), rtol=1e-5)
    np.testing.assert_allclose(row.stds[0], x.std(), rtol=1e-5)


def test_constant_step_uses_lr_times_the_gradient_wrt_network_input_then_decay(tiny):
    # Objective: unit 0 at the centre (4, 4) of a 1x1 conv on x / s, so d obj / dx_c = w_c / s_c there and
    # the gradient w.r.t. the network input is g_in = w_c: the step adds lr * w_c to the centre pixel.
    settings = Settings(**{**NO_REG, "decay": 0.1}, steps=3, lr=4.0)
    record = opt.run(tiny, Target("0", 0), settings)
    w = WEIGHTS[0].double().numpy()
    x = x0_clipped()
    expected_obj, expected_norm = [], []
    for it in range(3):
        x = np.clip(x + MEAN, 0, 255) - MEAN
        expected_obj.append(float((w * x[:, 4, 4] / STD[:, 0, 0]).sum()))
        expected_norm.append(np.linalg.norm(x))
        if it < 2:
            x[:, 4, 4] += 4.0 * w
            x *= 0.9
    row = record.rows[0]
    np.testing.assert_allclose(row.objectives, expected_obj, rtol=1e-5)
    np.testing.assert_allclose(row.norms, expected_norm, rtol=1e-5)
    assert np.abs(row.last_image.astype(int) - as_uint8(x).astype(int)).max() <= 1


def test_a_relu6_unit_at_its_cap_keeps_improving_its_best_image(tiny):
    """A ReLU6 unit reports 6 from the step its input passes 6 on; the image goes on rising through that input,
    and the best image is the one whose input is highest (the last here), not the first to reach the cap."""
    conv = nn.Conv2d(3, 1, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(10 * WEIGHTS[0].view(1, 3, 1, 1))
    capped = wrap_model(nn.Sequential(conv, nn.ReLU6()).eval().requires_grad_(False), "tiny6",
                        title="1x1 conv + ReLU6", input_size=SIZE, normalization=TINY_NORM)
    row = opt.run(capped, Target("1", 0), Settings(**NO_REG, steps=30, lr=0.2)).rows[0]
    first = int(np.argmax(row.objectives >= 6.0))
    assert row.objectives.max() == pytest.approx(6.0) and 0 < first < 15
    w = 10 * WEIGHTS[0].double().numpy()
    pre = [float((w * x.transpose(2, 0, 1)[:, 4, 4] / STD[:, 0, 0]).sum()) for x in (row.best_x, row.last_x)]
    assert row.best_step == 29 and row.best_objective == pytest.approx(6.0)
    assert pre[0] == pytest.approx(pre[1]) and pre[0] > 6.0 + 2  # the last image, well past the cap
    np.testing.assert_array_equal(row.best_x, row.last_x)


def test_progress_policy_picks_the_lr_whose_predicted_gain_is_desired_prog_capped_by_max_lr(tiny):
    # At the centre grad_x = w / s and g_in = w, so the step x += lr * g_in predicts a gain of
    # lr * sum_c w_c^2 / s_c; on this linear net the prediction is exact.
    w = WEIGHTS[0].double().numpy()
    gain_per_lr = float((w * w / STD[:, 0, 0]).sum())
    free = Settings(**NO_REG, steps=2, lr_policy="progress", max_lr=100.0, desired_prog=2.0)
    capped = free.replace(max_lr=0.1)
    snaps = snapshots(tiny, Target("0", 0), [free, capped])
    lrs = [row.lrs[0] for row in snaps[0].record.rows]  # the lr of the step after iteration 0
    np.testing.assert_allclose(lrs, [2.0 / gain_per_lr, 0.1], rtol=1e-6)
    rows = snaps[-1].record.rows
    np.testing.assert_allclose(rows[0].objectives[1] - rows[0].objectives[0], 2.0, rtol=1e-4)  # desired_prog
    np.testing.assert_allclose(rows[1].objectives[1] - rows[1].objectives[0], 0.1 * gain_per_lr, rtol=1e-4)
    assert all(row.finished and row.lrs[-1] == 0.0 for row in rows)  # no step after the last iteration


def test_blur_runs_only_every_blur_every_iterations_and_equals_scipy(tiny):
    settings = Settings(**{**NO_REG, "blur_radius": 1.0, "blur_every": 3}, steps=5, lr=0.0)
    norms = opt.run(tiny, Target("0", 0), settings).rows[0].norms
    x = x0_clipped()
    once = np.stack([gaussian_filter(c, 1.0) for c in x])  # after iteration 0
    twice = np.stack([gaussian_filter(c, 1.0) for c in once])  # after iteration 3
    np.testing.assert_allclose(norms, [np.linalg.norm(v) for v in (x, once, once, once, twice)], rtol=1e-5)


def test_all_four_regularizers_run_in_the_documented_order(tiny):
    # Channel objective of unit 1: the spatial mean, so g_in = w / (H * W) at every pixel.
    settings = Settings(decay=0.1, blur_radius=0.5, blur_every=1, norm_pct=30, contrib_pct=40, steps=3,
                            lr=300.0)
    record = opt.run(tiny, Target("0", 1, "channel"), settings)
    g = np.broadcast_to((WEIGHTS[1].double().numpy() / SIZE ** 2).reshape(3, 1, 1), (3, SIZE, SIZE))
    x = x0_clipped()
    norms = []
    for it in range(3):
        x = np.clip(x + MEAN, 0, 255) - MEAN
        norms.append(np.linalg.norm(x))
        if it < 2:
            x = (x + 300.0 * g) * 0.9
            x = np.stack([gaussian_filter(c, 0.5) for c in x])
            pixel_norm = np.sqrt((x ** 2).sum(0))
            x = x * (pixel_norm >= np.percentile(pixel_norm, 30))
            benefit = np.abs((g * -x).sum(0))
            x = x * (benefit >= np.percentile(benefit, 40))
    row = record.rows[0]
    np.testing.assert_allclose(row.norms, norms, rtol=1e-5)
    assert np.abs(row.last_image.astype(int) - as_uint8(x).astype(int)).max() <= 1
    assert (row.last_image == as_uint8(np.zeros_like(x))).all(axis=2).mean() >= 0.4  # clipped pixels are grey


def test_a_finished_row_stops_changing_while_the_batch_runs_to_the_longest(tiny):
    short = Settings(**{**NO_REG, "blur_radius": 1.0, "blur_every": 1}, steps=2, lr=1.0)
    snaps = snapshots(tiny, Target("0", 0), [short, short.replace(steps=4)])
    assert [s.iteration for s in snaps] == [0, 1, 2, 3] and snaps[-1].done and snaps[-1].total == 4
    assert [s.record.rows[0].finished for s in snaps] == [False, True, True, True]
    for later in snaps[2:]:
        np.testing.assert_array_equal(later.images[0], snaps[1].images[0])
        assert later.record.rows[0].steps_done == 2
    assert not np.array_equal(snaps[3].images[1], snaps[1].images[1])  # the long row kept blurring
    final = snaps[-1].record
    assert [r.steps_done for r in final.rows] == [2, 4] and all(r.finished for r in final.rows)
    np.testing.assert_array_equal(final.rows[0].last_image, snaps[1].images[1])  # same path up to its end


def _assert_rows_match_single_runs(model, targets, settings, size=None, seed=0, rtol=1e-5, pixels=1):
    # Batched and single convolutions round differently (~1e-7); lr * s = 12800 amplifies that on a real net.
    batched = opt.run(model, targets, settings, size=size, seed=seed)
    for k, (target, setting) in enumerate(zip(targets, settings)):
        single = opt.run(model, target, setting, size=size, seed=seed).rows[0]
        row = batched.rows[k]
        np.testing.assert_allclose(row.objectives, single.objectives, rtol=rtol, atol=rtol)
        assert np.abs(row.last_image.astype(int) - single.last_image.astype(int)).max() <= pixels
        assert row.argmax_step == single.argmax_step and row.best_step == single.best_step


def test_batch_rows_equal_single_runs_on_the_tiny_net(tiny):
    settings = [presets.table1_row(n).replace(steps=s) for n, s in ((1, 6), (2, 4), (3, 7), (4, 5))]
    targets = [Target("0", 0), Target("0", 1, "channel"), Target("0", 1, position=(2, 5)),
               Target("0", 0, "channel")]
    _assert_rows_match_single_runs(tiny, targets, settings)


def test_two_threads_on_the_shared_model_each_get_their_own_result(tiny):
    jobs = {"a": (Target("0", 0), presets.table1_row(3).replace(steps=60)),
            "b": (Target("0", 1, "channel"), presets.table1_row(4).replace(steps=60))}
    alone = {k: opt.run(tiny, *job).rows[0] for k, job in jobs.items()}
    together: dict[str, RowRecord] = {}

    def work(key):
        together[key] = opt.run(tiny, *jobs[key]).rows[0]

    threads = [threading.Thread(target=work, args=(k,)) for k in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for key in jobs:
        np.testing.assert_array_equal(together[key].objectives, alone[key].objectives)
    assert hook_count(tiny.module) == 0


# ---------------------------------------------------------------- configuration


def test_gif_of_frames():
    faint = np.full((2, 4, 4, 3), 120, np.uint8)
    faint[:, 0, 0] = 130
    gif = Image.open(io.BytesIO(render.gif_bytes([faint[0], 255 - faint[0], faint[1]])))
    assert gif.format == "GIF" and gif.n_frames == 3


def test_sheet_cells_hold_their_images_in_order_under_their_labels():
    # 2 units x 3 settings, each cell a distinct flat colour: the sheet must put cell (r, c) at row r, column c.
    colours = np.array([[200, 30 * (3 * r + c + 1), 40] for r in range(2) for c in range(3)], np.uint8)  # not grey
    cells = np.broadcast_to(colours[:, None, None, :], (6, 40, 40, 3)).copy()
    rows, cols = ["unit 1", "unit 2"], ["decay 0.3 · lr progress 2 ≤ 1e8 · 750 it", "b", "c"]
    sheet = render.compose_sheet(cells, 2, 3, rows, cols)
    found = {}  # colour -> top-left corner of the solid 40 x 40 block of that colour
    for k, colour in enumerate(colours):
        ys, xs = np.nonzero((sheet == colour).all(axis=2))
        assert ys.size == 40 * 40, k
        found[k] = (ys.min(), xs.min())
    for r in range(2):
        assert len({found[3 * r + c][0] for c in range(3)}) == 1  # a sheet row shares its top
        assert [found[3 * r + c][1] for c in range(3)] == sorted(found[3 * r + c][1] for c in range(3))
    assert found[0][0] < found[3][0]  # unit 1's row above unit 2's
    # Labels: the font has "≤" (no missing-glyph box) and the long label wraps between phrases, not mid-phrase.
    font = render.label_font()
    assert font.getmask("≤").getbbox() is not None and font.getmask("≤").size != font.getmask("\uffff").size
    phrases = cols[0].split(" · ")
    width = max(font.getlength(p) for p in phrases) + 1  # every phrase fits on a line of this width
    lines = render.wrap_label(cols[0], width, font)
    assert len(lines) > 1 and " · ".join(lines) == cols[0]  # broken only between phrases
    assert all(font.getlength(line) <= width for line in lines)
    top_text = sheet[: found[0][0]]
    assert (top_text < 128).any()  # the column labels were drawn above the first row


# ---------------------------------------------------------------- the embedded model


def test_objective_rises_substantially_in_an_early_a_middle_and_a_late_layer(lite0):
    targets = [Target("_blocks.1", 6), Target("_blocks.8", 20), Target("_blocks.15", 100)]
    record = opt.run(lite0, targets, presets.table1_row(3).replace(steps=24), size=64)
    for row in record.rows:
        later = row.objectives[12:].mean()  # the curve zig-zags with the blur every 4 steps: average it
        # "substantially": far above the response to the starting noise, in absolute and relative terms.
        assert later > row.initial + 8 and later > 3 * abs(row.initial), (row.target.label, row.objectives)
        assert row.best_step >= 4


def test_preset_3_makes_flamingo_the_argmax_of_the_logits_within_300_iterations(lite0):
    # The slowest test (~30-40 s on 2 CPU cores): 300 full forward/backward passes at the model's 224 px.
    flamingo = lite0.class_names.index("flamingo")
    assert flamingo == 130
    row = opt.run(lite0, Target(lite0.logits_layer, flamingo), presets.table1_row(3).replace(steps=300),
                  size=224).rows[0]
    # The paper's CaffeNet run: argmax from iteration 27, best objective near the end.  Same shape here:
    assert row.argmax_step is not None and row.argmax_step < 100  # early
    assert row.is_argmax[-50:].mean() >= 0.8  # and it stays the top class
    assert row.best_objective > row.initial + 10 and row.best_step >= 150  # while the objective keeps rising
    assert row.objectives[200:].mean() > row.objectives[50:150].mean()


def test_optimized_image_drives_its_channel_harder_than_real_photos(lite0):
    size, layer, channel = 96, "_blocks.8", 20
    target = Target(layer, channel, "channel")
    row = opt.run(lite0, target, presets.table1_row(3).replace(steps=30), size=size).rows[0]
    views = [model_view(decode_image(sample_bytes(n)), lite0.spec, size) for n in SAMPLE_NAMES]
    batch = to_batch(views + [row.last_image], lite0.spec.normalization)
    means = capture(lite0.module, batch, layer)[layer][:, channel].mean(dim=(1, 2))
    assert float(means[-1]) > float(means[:-1].max()), means.tolist()
    np.testing.assert_allclose(float(means[-1]), row.final, rtol=0.05)  # the uint8 image still does it


def test_same_seed_same_image_and_another_seed_another(lite0):
    args = (lite0, Target("_blocks.3", 7), presets.table1_row(1).replace(steps=4))
    first = opt.run(*args, size=32, seed=3).rows[0]
    again = opt.run(*args, size=32, seed=3).rows[0]
    other = opt.run(*args, size=32, seed=4).rows[0]
    np.testing.assert_array_equal(first.last_image, again.last_image)
    np.testing.assert_array_equal(first.objectives, again.objectives)
    assert not np.array_equal(first.last_image, other.last_image)


def test_closing_the_generator_early_leaves_the_shared_model_clean(lite0):
    gen = opt.optimize(lite0, Target("_blocks.5", 1), presets.table1_row(3), size=32, every=2)
    first = next(gen)
    assert first.iteration == 0 and not first.done and first.progress == 1 / 1000
    next(gen)
    assert hook_count(lite0.module) == 0  # between snapshots too
    gen.close()
    assert hook_count(lite0.module) == 0
    assert not lite0.module.training
    assert all(p.grad is None and not p.requires_grad for p in lite0.module.parameters())


def test_batch_of_settings_and_layers_equals_single_runs_on_the_embedded_model(lite0):
    settings = [presets.table1_row(1).replace(steps=5), presets.table1_row(2).replace(steps=3), presets.table1_row(4).replace(steps=4)]
    targets = [Target("_blocks.4", 2), Target("_blocks.4", 9, "channel"), Target("_fc", 130)]
    _assert_rows_match_single_runs(lite0, targets, settings, size=48, rtol=2e-3, pixels=2)


def test_bad_targets_are_reported_plainly(lite0):
    with pytest.raises(ValueError, match="no layer"):
        opt.optimize(lite0, Target("_blocks.99", 0), presets.table1_row(3))
    with pytest.raises(OptimizeError, match="80 channels"):
        opt.optimize(lite0, Target("_blocks.5", 80), presets.table1_row(3))
    with pytest.raises(OptimizeError, match="outside"):
        next(opt.optimize(lite0, Target("_blocks.5", 0, position=(9, 0)), presets.table1_row(3), size=64))
    with pytest.raises(OptimizeError, match="size"):
        opt.optimize(lite0, Target("_blocks.5", 0), presets.table1_row(3), size=4)
    with pytest.raises(OptimizeError, match="2 targets and 3 settings"):
        opt.optimize(lite0, [Target("_fc", 1)] * 2, [presets.table1_row(3)] * 3)
    assert hook_count(lite0.module) == 0


# ---------------------------------------------------------------- command line


def test_cli_optimize_writes_png_npy_and_gif_and_prints_the_record(tmp_path, capsys):
    out, gif, npy = tmp_path / "unit.png", tmp_path / "unit.gif", tmp_path / "unit.npy"
    code = cli_main(["optimize", "--layer", "_blocks.5", "--unit", "3", "--preset", "table1:1", "--decay", "0.01",
                     "--steps", "3", "--size", "32", "--device", "cpu", "--out", str(out), "--gif", str(gif),
                     "--npy", str(npy)])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"layer", "unit", "objective", "steps", "initial", "final", "best", "best_step",
                           "argmax_step", "seconds", "out", "image", "display", "npy", "mean", "settings", "quality",
                           "param", "from_photo"}
    assert result["param"] == "pixels" and result["from_photo"] is None
    assert result["layer"] == "_blocks.5._bn2" and result["unit"] == 3 and result["steps"] == 3
    assert Image.open(out).size == (32, 32) and Image.open(gif).n_frames == 3
    # --out holds the best image by default (the toolbox's headline output), scaled about zero, and says so;
    # --npy the same image as floats; --final the last one.
    loaded = load_model(device="cpu")
    settings = presets.table1_row(1).replace(decay=0.01, steps=3)
    assert Settings.from_dict(result["settings"]) == settings
    row = opt.run(loaded, Target("_blocks.5._bn2", 3), settings, size=32).rows[0]
    assert result["image"] == "best" and result["best_step"] == row.best_step and result["display"] == "zero"
    np.testing.assert_allclose(np.load(npy), row.best_x, atol=1e-4)
    assert np.array_equal(np.asarray(Image.open(out)), display.show(np.load(npy), result["mean"], "zero"))
    assert np.array_equal(np.asarray(Image.open(out)), row.image("best", "zero"))
    (verdict,) = quality.assess(loaded, row.best_x[None], [row.target])
    assert result["quality"] == json.loads(json.dumps(verdict.to_dict()))
    assert result["quality"]["rank"] is None and result["quality"]["judge"] is None  # not a class: robustness only
    code = cli_main(["optimize", "--layer", "_blocks.5", "--unit", "3", "--preset", "table1:1", "--decay", "0.01",
                     "--steps", "3", "--size", "32", "--device", "cpu", "--out", str(out), "--final",
                     "--display", "clipped"])
    assert code == 0 and json.loads(capsys.readouterr().out)["image"] == "final"
    assert np.array_equal(np.asarray(Image.open(out)), row.last_image)


def test_cli_compare_prints_one_object_per_preset_and_writes_the_sheet_and_columns(tmp_path, capsys, lite0):
    out, columns = tmp_path / "sheet.png", tmp_path / "columns"
    code = cli_main(["compare", "--layer", "_fc", "--unit", "flamingo", "--presets", "1,table1:3", "--steps", "2",
                     "--size", "32", "--device", "cpu", "--out", str(out), "--out-dir", str(columns)])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert [r["preset"] for r in result] == ["1", "table1:3"] and all(r["unit"] == 130 and r["steps"] == 2
                                                                     for r in result)
    assert [r["name"] for r in result] == ["Lite0 row 1 (calibrated)", "Table 1 row 3 (verbatim)"]
    assert len({r["seconds"] for r in result}) == 1
    assert Image.open(out).size[0] > 64
    settings = [presets.resolve("efficientnet_lite0", p).replace(steps=2) for p in ("1", "table1:3")]
    record = opt.run(lite0, Target("_fc", 130), settings, size=32)
    for r, row, verdict in zip(result, record.rows, quality.assess_record(lite0, record, "last")):
        assert np.array_equal(np.asarray(Image.open(r["image"])), row.image("last", "zero"))  # as displayed
        assert r["quality"]["rank"] == verdict.rank and r["quality"]["judge"] == "efficientnet_lite2"
    assert sorted(p.name for p in columns.iterdir()) == ["A_1.png", "B_table13.png"]


def test_cli_a_class_name_alone_means_the_logits(tmp_path, capsys):
    out = tmp_path / "flamingo.png"
    code = cli_main(["optimize", "--unit", "flamingo", "--preset", "table1:3", "--steps", "2", "--size", "32",
                     "--device", "cpu", "--out", str(out)])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["layer"], result["unit"], result["steps"]) == ("_fc", 130, 2)
    assert Image.open(out).size == (32, 32)


@pytest.mark.parametrize("argv, message", [
    (["optimize", "--layer", "_blocks.5", "--unit", "999", "--out", "x.png"], "channels"),
    (["optimize", "--layer", "_blocks.5", "--unit", "1", "--norm-pct", "120", "--out", "x.png"], "norm_pct must be in [0, 100]"),
    (["compare", "--layer", "_fc", "--unit", "1", "--presets", "1,7", "--out", "x.png"], "a preset is a row"),
    (["optimize", "--layer", "_fc", "--unit", "1", "--preset", "table1:9", "--out", "x.png"], "a preset is a row"),
    (["optimize", "--unit", "3", "--out", "x.png"], "--unit 3 needs --layer: a number alone does not say which layer"),
    (["calibrate", "--trials", "0", "--out", "x.json"], "trials must be at least 1"),
    (["calibrate", "--search-classes", "flamingo,unicorn", "--out", "x.json"], "No class called 'unicorn'"),
])
def test_cli_errors_are_one_line_with_exit_status_2(argv, message, capsys, tmp_path):
    argv = [a if a != "x.png" else str(tmp_path / "x.png") for a in argv]
    assert cli_main(argv + ["--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_a_size_the_network_cannot_take_is_refused_up_front(lite0):
    with pytest.raises(OptimizeError, match="16-pixel image is too small for _fc"):
        opt.optimize(lite0, Target("_fc", 130), presets.table1_row(3).replace(steps=2), size=16)
    assert hook_count(lite0.module) == 0


def test_class_names_apply_only_at_the_logits_and_numbers_follow_each_layers_size():
    """One rule for the CLI and the pages (deepvis.settings.resolve_unit)."""
    alexnet = load_model("alexnet", "random", "cpu")
    assert resolve_unit(alexnet, "classifier.4", "2000") == 2000  # a hidden layer of 4096 units
    assert resolve_unit(alexnet, "classifier.6", "flamingo") == 130  # a class at the logits
    assert resolve_unit(alexnet, "classifier.6", " Flamingo ") == 130 and resolve_unit(
        alexnet, "classifier.6", 7) == 7
    with pytest.raises(OptimizeError, match="class names apply only at the logits"):
        resolve_unit(alexnet, "classifier.4", "flamingo")
    with pytest.raises(OptimizeError, match="4096 units .0 to 4095.; unit 5000 does not exist"):
        resolve_unit(alexnet, "classifier.4", "5000")
    with pytest.raises(OptimizeError, match="1000 units"):
        resolve_unit(alexnet, "classifier.6", 1000)
    with pytest.raises(OptimizeError, match="No class called 'zebra crossing'"):
        resolve_unit(alexnet, "classifier.6", "zebra crossing")
    assert class_names(alexnet, "classifier.4") is None and len(class_names(alexnet, "classifier.6")) == 1000


@pytest.mark.parametrize("unit, expected", [("2000", 2000), ("flamingo", None)])
def test_cli_hidden_layer_units(unit, expected, tmp_path, capsys):
    out = tmp_path / "u.png"
    code = cli_main(["optimize", "--model", "alexnet", "--weights", "random", "--layer", "classifier.4",
                     "--unit", unit, "--steps", "2", "--size", "64", "--device", "cpu", "--out", str(out)])
    captured = capsys.readouterr()
    if expected is None:
        assert code == 2 and "class names apply only at the logits" in captured.err
    else:
        assert code == 0 and json.loads(captured.out)["unit"] == expected


def test_cli_refuses_a_missing_device_in_one_line(capsys):
    wanted = [d for d in ("cuda", "mps") if not (torch.cuda.is_available() if d == "cuda" else
                                                 torch.backends.mps.is_available())]
    for device in [*wanted, "foo"]:
        assert cli_main(["info", "--device", device]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and ("no " + device in err or "unknown device" in err), err


@pytest.mark.parametrize("target", [Target("_fc", 130), Target("_blocks.4", 3)], ids=["flamingo", "block 4"])
def test_every_table_1_preset_raises_its_objective_on_the_embedded_model(lite0, target):
    """All four rows, batched from the same noise (96 px, 40 iterations): each must climb, not only row 3."""
    record = opt.run(lite0, target, [presets.table1_row(n).replace(steps=40) for n in PRESETS], size=96)
    for number, row in zip(PRESETS, record.rows):
        assert row.best_objective > row.initial + 3, (number, row.initial, row.best_objective)
        assert row.best_step >= 10 and row.objectives[-10:].mean() > row.initial + 2, number


def test_a_rectified_unit_that_is_off_on_the_noise_still_rises_through_its_input(lite0):
    """As in the authors' toolbox (backward from conv5 starts below the in-place relu5): the gradient of a
    ReLU6 node's unit comes from its input, so a unit that is 0 on the starting noise still moves, while the
    recorded objective is the node's own rectified value."""
    node, channel = "_blocks.9._swish_1", 5
    x0 = opt.initial_image(96, 0)
    mean = torch.tensor(lite0.spec.normalization.mean255).view(1, 3, 1, 1)
    std = torch.tensor(lite0.spec.normalization.std255).view(1, 3, 1, 1)
    start = (x0 + mean).clamp(0, 255) - mean
    acts = capture(lite0.module, start / std, [node, "_blocks.9._bn1"])
    assert acts[node][0, channel].max() == 0 and acts["_blocks.9._bn1"][0, channel].max() < 0  # off, no gradient
    row = opt.run(lite0, Target(node, channel, "channel"), presets.table1_row(3).replace(steps=30), size=96).rows[0]
    assert row.initial == pytest.approx(float(acts[node][0, channel].mean()), abs=1e-6)
    assert row.best_objective > 0.5 and (row.objectives >= 0).all() and (row.objectives <= 6).all()


def test_argmax_hits_read_channels_last_maps_in_their_own_order():
    """Whether each row's unit is its map's first maximum, the same for NCHW and channels-last maps, checked
    against a plain loop over the (C, H, W) map."""
    from deepvis.rows import _argmax_hits

    maps = torch.randn(6, 5, 4, 3, generator=torch.Generator().manual_seed(0))
    units, ys, xs = [], [], []
    for b in range(6):  # rows 0-2 ask for their true maximum, rows 3-5 for another position
        c, y, x = np.unravel_index(int(maps[b].argmax()), (5, 4, 3))
        if b >= 3:
            c = (c + 1) % 5
        units.append(int(c)), ys.append(int(y)), xs.append(int(x))
    args = [torch.tensor(v) for v in (units, ys, xs)]
    want = [maps[b].flatten().argmax().item() == (units[b] * 4 + ys[b]) * 3 + xs[b] for b in range(6)]
    assert want == [True, True, True, False, False, False]
    for layout in (torch.contiguous_format, torch.channels_last):
        got = _argmax_hits(maps.contiguous(memory_format=layout), *args)
        assert got.tolist() == want, layout
    dead = torch.zeros(2, 5, 4, 3).contiguous(memory_format=torch.channels_last)  # a dead layer: all ties
    assert _argmax_hits(dead, torch.tensor([0, 1]), torch.tensor([0, 0]), torch.tensor([0, 0])).tolist() == [True, False]
