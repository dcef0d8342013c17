"""The CLI on a network of one's own, as its trainer would call it: a file with a class, a checkpoint, the input,
mean and std, and a classes file (the networks of tests/nets/digits.py, trained in the session)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from deepvis.cli import main

COMMANDS = ("info", "predict", "activations", "optimize", "backprop", "occlusion")


def _flags(net: dict, weights: str = "weights") -> list[str]:
    return ["--model", f"{net['file']}:{net['name']}", "--weights", str(net[weights]), "--input", net["input"],
            "--mean", ",".join(map(str, net["mean"])), "--std", ",".join(map(str, net["std"])),
            "--classes", str(net["classes"]), "--device", "cpu"]


def _digit_file(net: dict, tmp_path, index: int = 0) -> tuple[str, int]:
    pixels, labels = net["nets"].digit_pixels(net["channels"], net["size"], index + 1)
    array = pixels[index]
    path = tmp_path / "digit.png"
    Image.fromarray(array[..., 0] if array.shape[2] == 1 else array).save(path)
    return str(path), int(labels[index])


def _run(args: list[str], capsys) -> object:
    status = main(args)
    out, err = capsys.readouterr()
    assert status == 0, err
    return json.loads(out)


@pytest.mark.parametrize("kind,weights", [("gray_net", "weights"), ("color_net", "safetensors")])
def test_every_inspection_command_on_a_network_of_ones_own(kind, weights, request, tmp_path, capsys):
    net = request.getfixturevalue(kind)
    flags = _flags(net, weights)
    photo, label = _digit_file(net, tmp_path)
    info = _run(["info", *flags], capsys)
    assert info["input"] == net["input"] and info["classes"] == 10
    assert info["layers"][-1]["shape"] == [10]
    predicted = _run(["predict", photo, "--top", "3", *flags], capsys)
    assert predicted[0]["label"] == f"digit {label}" and len(predicted) == 3  # the trained weights were loaded
    first = info["layers"][0]["name"]
    acts = _run(["activations", photo, "--layer", first, *flags], capsys)
    assert len(acts["channels"]) == 8 and acts["shape"][0] == 8
    out = tmp_path / "opt.png"
    optimized = _run(["optimize", "--layer", info["layers"][-1]["name"], "--unit", "digit 4", "--preset", "fourier",
                      "--steps", "40", "--out", str(out), *flags], capsys)
    shown = np.asarray(Image.open(out))
    assert shown.shape[0] >= net["size"] and shown.ndim == 3
    assert optimized["quality"]["judge"] is None  # no ImageNet judge for digits: robustness alone
    grad = tmp_path / "grad.npy"
    _run(["backprop", photo, "--layer", info["layers"][-1]["name"], "--unit", str(label), "--mode", "guided", "--out",
          str(tmp_path / "b.png"), "--npy", str(grad), *flags], capsys)
    assert np.load(grad).shape == (net["channels"], net["size"], net["size"])
    occluded = _run(["occlusion", photo, "--out", str(tmp_path / "o.png"), *flags], capsys)
    assert (occluded["patch"], occluded["stride"]) == ((4, 2) if net["size"] == 28 else (5, 2))


def test_a_network_of_ones_own_without_its_checkpoint_is_only_as_good_as_chance(gray_net, tmp_path, capsys):
    photo, label = _digit_file(gray_net, tmp_path)
    flags = _flags(gray_net)
    flags[flags.index("--weights") + 1] = "random"
    predicted = _run(["predict", photo, "--top", "1", *flags], capsys)
    assert predicted[0]["prob"] < 0.5  # untrained: the checkpoint is what made it confident
