"""The command line itself: its table of commands, its one-line errors (and that bugs are not
turned into them), ``info``'s JSON and the progress bar every long command shares."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re

import numpy as np
import pytest

import deepvis.cli
from deepvis.cli import COMMANDS, build_parser, main
from deepvis.cli import common
from deepvis.errors import DeepvisError
from deepvis.progress import Progress


@pytest.fixture
def embedded(monkeypatch, lite0):
    """Commands get the session's embedded Lite0 instead of loading their own (the same model, loaded once)."""
    def load(name, weights, device):
        assert (name, weights, device) == ("efficientnet_lite0", "default", "cpu")
        return lite0

    monkeypatch.setattr(common, "load_model", load)


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return action.choices


def _replace_run(monkeypatch, name: str, run) -> None:
    table = tuple(dataclasses.replace(c, run=run) if c.name == name else c for c in COMMANDS)
    monkeypatch.setattr(deepvis.cli, "COMMANDS", table)


def _one_error_line(capsys, command: str) -> str:
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == ""
    assert len(lines) == 1, err
    assert lines[0].startswith(f"deepvis {command}: "), lines[0]
    return lines[0]


# --- the table of commands ------------------------------------------------------------------

def test_every_command_is_in_the_table_once_and_has_a_parser() -> None:
    names = [c.name for c in COMMANDS]
    assert len(names) == len(set(names))
    assert set(names) == {"info", "predict", "activations", "backprop", "gradcam", "occlusion", "optimize", "invert",
                          "compare",
                          "calibrate", "index", "top", "merge", "embed", "atlas", "timeline"}
    assert list(_subcommands(build_parser())) == names
    for command in COMMANDS:
        assert callable(command.add) and callable(command.run)


def test_help_lists_the_commands_in_the_tables_order(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert re.search(r"\{([a-z,]+)\}", out).group(1).split(",") == [c.name for c in COMMANDS]
    listed = re.findall(r"^    ([a-z]+) ", out, flags=re.MULTILINE)
    assert listed == [c.name for c in COMMANDS]


def test_every_command_has_its_own_help(capsys) -> None:
    for command in COMMANDS:
        with pytest.raises(SystemExit) as exit_:
            main([command.name, "--help"])
        assert exit_.value.code == 0
        assert capsys.readouterr().out.startswith(f"usage: deepvis {command.name} ")


# --- errors a person causes: one line, exit 2 -----------------------------------------------

def test_a_missing_image_file_is_one_line(tmp_path, capsys) -> None:
    missing = tmp_path / "nothing-here.png"
    assert main(["predict", str(missing), "--device", "cpu"]) == 2
    line = _one_error_line(capsys, "predict")
    assert str(missing) in line and "No such file" in line


def test_bad_steps_are_one_line(capsys) -> None:
    assert main(["calibrate", "--steps", "100,lots", "--device", "cpu"]) == 2
    assert "--steps must be whole numbers" in _one_error_line(capsys, "calibrate")


def test_an_unknown_device_is_one_line(capsys) -> None:
    assert main(["info", "--device", "abacus"]) == 2
    assert "unknown device 'abacus'" in _one_error_line(capsys, "info")


def test_an_unknown_layer_is_one_line(tmp_path, capsys, embedded, photos) -> None:
    from PIL import Image

    path = tmp_path / "cat.png"
    Image.fromarray(photos["chelsea"]).save(path)
    assert main(["activations", str(path), "--layer", "_no_such_layer", "--device", "cpu"]) == 2
    line = _one_error_line(capsys, "activations")
    assert "has no layer '_no_such_layer'" in line


def test_gradcam_writes_the_librarys_map_and_refuses_a_vector_layer(tmp_path, capsys, embedded, lite0,
                                                                       photos) -> None:
    from PIL import Image

    from deepvis.gradcam import gradcam
    from deepvis.images import model_view

    path = tmp_path / "cat.png"
    Image.fromarray(photos["chelsea"]).save(path)
    view = model_view(Image.open(path), lite0.spec)
    args = ["gradcam", str(path), "--layer", "_blocks.12._swish_1", "--device", "cpu"]
    assert main([*args, "--unit", "tiger cat", "--out", str(tmp_path / "c.png"), "--npy", str(tmp_path / "c.npy")]) == 0
    out = json.loads(capsys.readouterr().out)
    want = gradcam(lite0, view, "_blocks.12._swish_1", 282)
    assert out["unit"] == 282 and out["target"] == "class 282 (tiger cat)" and out["shape"] == [7, 7]
    assert np.array_equal(np.load(tmp_path / "c.npy"), want.map) and Image.open(tmp_path / "c.png").size == (224, 224)
    # A unit of a later layer, scored by its channel's mean.
    assert main([*args, "--of", "_blocks.15._swish_1", "--unit", "5", "--method", "gradcam++",
                 "--npy", str(tmp_path / "u.npy")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["target"] == "_blocks.15._swish_1 unit 5" and out["method"] == "gradcam++"
    assert np.array_equal(np.load(tmp_path / "u.npy"),
                          gradcam(lite0, view, "_blocks.12._swish_1", 5, "gradcam++", "_blocks.15._swish_1").map)
    assert main(["gradcam", str(path), "--layer", "_fc", "--device", "cpu"]) == 2
    assert "needs a layer with spatial maps; _fc is a vector of 1000 units" in _one_error_line(capsys, "gradcam")


@pytest.mark.parametrize("args, message", [
    (["--target", "_blocks.9._swish_1:5 +* 2"], "cannot read the objective"),
    (["--target", "_blocks.9._swish_1:[1, 2, 3]"], "the direction has 3 values; _blocks.9._swish_1 has 672 channels"),
    (["--target", "_fc:3", "--unit", "4"], "give --target EXPR, or --layer and --unit, not both"),
    (["--target", "_fc:3", "--diversity", "1", "--batch", "1"], "diversity needs a batch of at least 2 images"),
    (["--unit", "3", "--layer", "_fc", "--batch", "4"], "--batch goes with --diversity W"),
])
def test_a_composed_objective_that_does_not_fit_is_one_line(tmp_path, capsys, embedded, args, message) -> None:
    assert main(["optimize", *args, "--steps", "2", "--size", "64", "--out", str(tmp_path / "x.png"),
                 "--device", "cpu"]) == 2
    assert message in _one_error_line(capsys, "optimize")


def test_an_os_error_is_one_line_and_ctrl_c_exits_130(monkeypatch, capsys) -> None:
    def full(args):
        raise OSError(28, "No space left on device")

    _replace_run(monkeypatch, "merge", full)
    assert main(["merge", "out.sqlite", "a.sqlite"]) == 2
    assert "No space left on device" in _one_error_line(capsys, "merge")

    def interrupted(args):
        raise KeyboardInterrupt

    _replace_run(monkeypatch, "merge", interrupted)
    assert main(["merge", "out.sqlite", "a.sqlite"]) == 130
    assert _one_error_line(capsys, "merge") == "deepvis merge: interrupted"


def test_only_the_first_line_of_a_users_error_is_shown(monkeypatch, capsys) -> None:
    def refuse(args):
        raise DeepvisError("first line\nsecond line")

    _replace_run(monkeypatch, "merge", refuse)
    assert main(["merge", "out.sqlite", "a.sqlite"]) == 2
    assert _one_error_line(capsys, "merge") == "deepvis merge: first line"


# --- a bug is a bug ------------------------------------------------------------------------

@pytest.mark.parametrize("bug", [ZeroDivisionError("division by zero"), ValueError("not a user's error"),
                                 KeyError("missing"), TypeError("wrong type")])
def test_a_bug_propagates_instead_of_becoming_exit_2(monkeypatch, capsys, bug) -> None:
    def broken(args):
        raise bug

    _replace_run(monkeypatch, "merge", broken)
    with pytest.raises(type(bug)):
        main(["merge", "out.sqlite", "a.sqlite"])
    assert capsys.readouterr().err == ""


# --- a command's output --------------------------------------------------------------------

def test_info_prints_the_models_layers_as_json(capsys, embedded, lite0) -> None:
    assert main(["info", "--device", "cpu"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["model"] == "efficientnet_lite0"
    assert found["default_layer"] == lite0.default_layer
    assert [layer["name"] for layer in found["layers"]] == [i.name for i in lite0.layers]
    first = found["layers"][0]
    assert set(first) == {"name", "group", "op", "rectified", "description", "shape", "kind"}
    assert first["shape"] == list(lite0.layers[0].shape)


# --- the shared progress bar ---------------------------------------------------------------

class _Bars:
    """Records the tqdm bars :func:`deepvis.cli.common.run_with_bar` makes."""

    def __init__(self, monkeypatch) -> None:
        self.made = []
        base = common.tqdm
        made = self.made

        class Recorded(base):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                self.postfixes = []
                made.append(self)

            def set_postfix_str(self, s="", refresh=True):
                self.postfixes.append(s)
                super().set_postfix_str(s, refresh)

        monkeypatch.setattr(common, "tqdm", Recorded)


def _work(steps, result="finished"):
    for step in steps:
        yield step
    return result


def test_the_bar_counts_resumed_steps_as_done_before_this_run(monkeypatch, capsys) -> None:
    bars = _Bars(monkeypatch)
    steps = [Progress(1, 5, resumed=True, detail="a"), Progress(2, 5, resumed=True, detail="b"),
             Progress(3, 5, detail="c"), Progress(5, 5, detail="d")]  # a step may finish more than one unit
    assert common.run_with_bar(_work(steps), "calibrate", "trial", total=5, postfix=lambda s: s.detail) == "finished"
    (bar,) = bars.made
    assert (bar.initial, bar.n, bar.total) == (2, 5, 5)  # two done before; three in this run's rate
    assert bar.postfixes == ["a", "b", "c", "d"]
    err = capsys.readouterr().err
    assert "calibrate" in err and "5/5" in err


def test_the_bar_takes_its_total_from_the_steps(monkeypatch, capsys) -> None:
    bars = _Bars(monkeypatch)
    steps = [Progress(0, 40), Progress(16, 40, (("bad.jpg", "not a photo"),)), Progress(40, 40)]
    assert common.run_with_bar(_work(steps, {"images": 40}), "index", "image") == {"images": 40}
    (bar,) = bars.made
    assert (bar.initial, bar.n, bar.total) == (0, 40, 40)
    assert bar.postfixes == []
    assert capsys.readouterr().out == ""  # the bar is on stderr; stdout is the command's JSON


def test_the_console_command_keeps_freed_memory_then_exits_with_mains_status(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(deepvis.cli, "keep_freed_memory", lambda: calls.append("memory"))
    _replace_run(monkeypatch, "merge", lambda args: calls.append("merge") or 0)
    monkeypatch.setattr("sys.argv", ["deepvis", "merge", "out.sqlite", "a.sqlite"])
    with pytest.raises(SystemExit) as exit_:
        deepvis.cli.run()
    assert exit_.value.code == 0 and calls == ["memory", "merge"]
