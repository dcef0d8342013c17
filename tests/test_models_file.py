"""The models file: reading it, its relative paths, its one-line refusals, DEEPVIS_MODELS, and the CLI's --models."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from deepvis import models_file, networks
from deepvis.cli import main
from deepvis.models_file import DESCRIBE, FIELDS, Description, ModelsFileError
from tests.test_networks import NETS

ENTRY = '''
[models.digits]                 # the name used by --model and shown in the sidebar
title = "My digits CNN"
model = "nets/digits.py:Net"    # relative paths are relative to this file
weights = "nets/digits.pt"
input = "1x28x28"
mean = [0.5]
std = [0.5]
classes = "nets/digits.txt"
'''


@pytest.fixture
def config(tmp_path, monkeypatch) -> Path:
    """A models file beside nets/ (code, weights, class names); the working directory is elsewhere."""
    nets = tmp_path / "nets"
    nets.mkdir()
    (nets / "digits.py").write_text(NETS)
    (nets / "digits.txt").write_text("\n".join(f"digit {i}" for i in range(10)))
    monkeypatch.chdir(nets)
    trained = networks.load("digits.py:Net", "random", "cpu", 5, input="1x28x28").module.state_dict()
    torch.save(trained, nets / "digits.pt")
    path = tmp_path / "models.toml"
    path.write_text(ENTRY)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv(models_file.ENV, raising=False)
    return path


def _one_line(excinfo: pytest.ExceptionInfo) -> str:
    assert "\n" not in str(excinfo.value)
    return str(excinfo.value)


def test_the_table_names_every_field_and_its_flag():
    assert FIELDS == ("model", "title", "weights", "input", "mean", "std", "resize", "classes")
    flags = {d.name: d.flag for d in DESCRIBE}
    assert flags["input"] == "--input" and flags["classes"] == "--classes"
    assert all(d.label and d.help for d in DESCRIBE)


def test_a_models_file_is_read_with_paths_relative_to_it(config):
    (digits,) = models_file.read(config).values()
    assert digits.name == "digits" and digits.title == "My digits CNN" and digits.mean == (0.5,)
    assert digits.path(digits.classes) == config.parent / "nets" / "digits.txt"
    loaded = networks.load(digits, device="cpu")
    assert loaded.spec.name == "digits" and loaded.spec.title == "My digits CNN"
    assert loaded.class_names[9] == "digit 9" and loaded.spec.input_text == "1x28x28"
    trained = torch.load(config.parent / "nets" / "digits.pt", weights_only=True)
    assert torch.equal(loaded.module.conv1.weight, trained["conv1.weight"])


@pytest.mark.parametrize("text, expected", [
    (ENTRY + 'colour = "red"\n', "unknown field 'colour'; the fields are model, title, weights"),
    ("[models.digits]\ntitle = 'no model'\n", 'needs model = "file.py:NAME"'),
    ("[models.alexnet]\nmodel = 'a.py:Net'\n", "alexnet is a built-in model's name"),
    ("[models.a]\nmodel = 'a.py:Net'\nmean = 'grey'\n", "mean is a list of numbers"),
    ("[models.a]\nmodel = 'a.py:Net'\nresize = 2.5\n", "resize is a whole number"),
    ("[networks.a]\nmodel = 'a.py:Net'\n", "holds [models.NAME] tables only"),
    ("[models.a\n", "is not a TOML file"),
])
def test_a_bad_models_file_is_one_line(tmp_path, text, expected):
    path = tmp_path / "models.toml"
    path.write_text(text)
    with pytest.raises(ModelsFileError) as excinfo:
        models_file.read(path)
    assert expected in _one_line(excinfo)


def test_deepvis_models_names_several_files_and_a_name_once(config, tmp_path, monkeypatch):
    other = tmp_path / "more.toml"
    other.write_text("[models.features]\nmodel = 'nets/digits.py:features'\ninput = '3x32x32'\n")
    monkeypatch.setenv(models_file.ENV, os.pathsep.join([str(config), str(other)]))
    assert list(models_file.user_networks()) == ["digits", "features"]
    assert networks.load("features", device="cpu").class_names == ()
    configured = torch.load(config.parent / "nets" / "digits.pt", weights_only=True)["conv1.weight"]
    assert torch.equal(networks.load("digits", device="cpu").module.conv1.weight, configured)
    randomized = networks.load("digits", "random", "cpu", 9)
    assert randomized.weights == "random" and not torch.equal(randomized.module.conv1.weight, configured)
    clash = tmp_path / "clash.toml"
    clash.write_text("[models.digits]\nmodel = 'nets/digits.py:Net'\n")
    monkeypatch.setenv(models_file.ENV, os.pathsep.join([str(config), str(clash)]))
    with pytest.raises(ModelsFileError) as excinfo:
        models_file.user_networks()
    assert "defined in both" in _one_line(excinfo)


# --- the command line ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["before", "after"])
def test_cli_models_names_the_entries_for_one_run(config, capsys, where):
    options = ["--model", "digits", "--device", "cpu"]
    argv = (["--models", str(config), "info", *options] if where == "before"
            else ["info", *options, "--models", str(config)])
    assert main(argv) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["model"] == "digits" and found["title"] == "My digits CNN" and found["input_size"] == 28
    assert found["normalization"] == {"mean": [0.5], "std": [0.5]}
    assert models_file.user_networks() == {}  # registered for that run only


def test_cli_flags_describe_a_network_and_override_the_file(config, capsys):
    nets = config.parent / "nets"
    assert main(["info", "--model", f"{nets}/digits.py:Net", "--input", "1x28x28", "--mean", "0.25", "--std", "0.5",
                 "--classes", str(nets / "digits.txt"), "--device", "cpu"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["model"] == "digits.Net" and found["normalization"] == {"mean": [0.25], "std": [0.5]}
    assert main(["--models", str(config), "info", "--model", "digits", "--weights", "random", "--mean", "0.1",
                 "--device", "cpu"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["weights"] == "random" and found["normalization"]["mean"] == [0.1]
    (Path.cwd() / "mine.pt").write_bytes((nets / "digits.pt").read_bytes())  # a flag's file: from the working dir
    assert main(["--models", str(config), "info", "--model", "digits", "--weights", "mine.pt", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["weights"] == "mine.pt"
    assert main(["info", "--model", f"{nets}/digits.py:features", "--input", "3x32x32", "--mean", "0.5,0.5",
                 "--mean", "0.5", "--std", "1,1,1", "--device", "cpu"]) == 0  # comma-separated or repeated
    assert json.loads(capsys.readouterr().out)["normalization"]["mean"] == [0.5, 0.5, 0.5]


@pytest.mark.parametrize("argv, expected", [
    (["--model", "digits"], "unknown field 'colour'"),
    (["--model", "digits.py:Net"], "no file"),
    (["--model", "NETS/digits.py:Net", "--input", "3x28x28"], "fails on a 3x28x28 input"),
    (["--model", "NETS/digits.py:Net", "--input", "1x28x28", "--mean", "0.5,0.5"], "mean has 2 values"),
    (["--model", "NETS/digits.py:Net", "--input", "1x28x28", "--mean", "grey"], "--mean takes numbers"),
    (["--model", "NETS/digits.py:Net", "--input", "1x28x28", "--weights", "NETS/whole.pt"], "pickled object"),
    (["--model", "NETS/digits.py:Net", "--input", "1x28x28", "--classes", "NETS/two.txt"], "2 class names"),
])
def test_cli_bad_input_is_one_line_and_status_2(config, capsys, argv, expected):
    nets = config.parent / "nets"
    torch.save(torch.nn.Linear(2, 2), nets / "whole.pt")
    (nets / "two.txt").write_text("a\nb\n")
    bad = config.parent / "bad.toml"
    bad.write_text(ENTRY + 'colour = "red"\n')
    argv = [a.replace("NETS", str(nets)) for a in argv]
    assert main(["--models", str(bad) if argv[1] == "digits" else str(config), "info", *argv, "--device", "cpu"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and err.startswith("deepvis info: ")
    assert expected in err


def test_a_description_keeps_what_is_not_overridden():
    description = Description(model="a.py:Net", weights="w.pt", mean=[0.5])
    assert description.replace(weights="default", mean=None) is description
    assert description.replace(weights="random").weights == "random"
    assert description.replace(input="1x28x28").mean == (0.5,)
