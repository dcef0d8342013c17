"""Your own network: the naming rule, what describes it, its weights and class names, and one line per mistake."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import deepvis
from deepvis import networks
from deepvis.models import ModelError, WeightsUnavailableError

NETS = '''
import torch
from torch import nn


class Net(nn.Module):
    """A 1-channel 28 px digits classifier with its class names."""

    classes = [str(i) for i in range(10)]

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 7 * 7, 10)

    def forward(self, x):
        x = self.pool(self.relu(self.conv1(x)))
        x = self.pool(self.relu(self.conv2(x)))
        return self.fc(x.flatten(1))


def features():
    """A 3-channel feature extractor: no logits, no class names."""
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, stride=2), nn.ReLU())


def rgb():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 5))


def broken():
    raise RuntimeError("no GPU here\\nsecond line")


def number():
    return 42


INSTANCE = rgb()
SIZE = 3
'''


def one_line_error(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and message
    assert isinstance(excinfo.value, deepvis.DeepvisError)
    return message


@pytest.fixture
def nets(tmp_path, monkeypatch) -> Path:
    """A folder with nets.py; the working directory, so ``nets.py:Net`` names it."""
    (tmp_path / "nets.py").write_text(NETS)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def digits(**kwargs):
    return networks.load("nets.py:Net", device="cpu", input="1x28x28", **kwargs)


# --- the naming rule ---------------------------------------------------------------------------------------------

def test_a_file_and_a_class_load_frozen_with_the_modules_class_names(nets):
    loaded = digits()
    assert loaded.spec.name == "nets.Net" and loaded.spec.input_size == 28 and loaded.spec.channels == 1
    assert loaded.spec.normalization.mean == (0.0,) and loaded.spec.normalization.std == (1.0,)  # pixel / 255
    assert loaded.spec.resize_size is None
    assert loaded.class_names == tuple(map(str, range(10)))
    assert not loaded.module.training and not any(p.requires_grad for p in loaded.module.parameters())
    assert [i.name for i in loaded.layers][-1] == "fc" and loaded.layers[-1].shape == (10,)
    same = networks.load(str(nets / "nets.py") + ":Net", device="cpu", input="1x28x28")  # an absolute path
    assert all(torch.equal(a, b) for a, b in zip(loaded.module.state_dict().values(),
                                                 same.module.state_dict().values()))  # seeded: the same build


def test_a_package_module_and_a_function(tmp_path, monkeypatch):
    package = tmp_path / "site" / "mynets"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "zoo.py").write_text(NETS)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    loaded = networks.load("mynets.zoo:rgb", device="cpu", input="3x32x32", mean=[0.5, 0.5, 0.5], std=[0.25] * 3)
    assert loaded.spec.name == "zoo.rgb" and loaded.spec.channels == 3 and loaded.class_names == ()
    assert loaded.spec.normalization.std == (0.25,) * 3


def test_an_instance_is_copied_and_its_default_input_comes_from_its_first_convolution(nets):
    loaded = networks.load("nets.py:INSTANCE", device="cpu")
    assert loaded.spec.input_text == "3x224x224"
    from deepvis.user_code import resolve

    original = resolve("nets.py:INSTANCE")
    assert loaded.module is not original and original.training  # the file's own object is left alone


def test_a_feature_extractor_has_no_class_names(nets):
    loaded = networks.load("nets.py:features", device="cpu", input="3x32x32")
    assert loaded.class_names == () and loaded.layers[-1].shape[0] == 6


def test_timm_with_random_weights_takes_its_input_and_statistics_from_the_pretrained_cfg():
    loaded = networks.load("timm:test_resnet", "random", "cpu")
    assert loaded.spec.name == "timm.test_resnet" and loaded.spec.input_size == 160
    cfg = loaded.module.pretrained_cfg
    assert loaded.spec.normalization.mean == pytest.approx(cfg["mean"])
    assert loaded.spec.normalization.std == pytest.approx(cfg["std"])
    assert loaded.spec.resize_size is not None and loaded.spec.resize_size >= 160
    assert len(loaded.class_names) == 1000 and loaded.weights == "random"


def test_timm_pretrained_weights_come_from_the_local_cache_only(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(WeightsUnavailableError) as excinfo:
        networks.load("timm:test_resnet", device="cpu")
    message = one_line_error(excinfo)
    assert "not in the local Hugging Face cache" in message and "--weights random" in message


def test_random_weights_are_seeded_and_leave_the_callers_rng_alone(nets):
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a, b = digits(weights="random", seed=1), digits(weights="random", seed=1)
    c = digits(weights="random", seed=2)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.equal(a.module.conv1.weight, b.module.conv1.weight)
    assert not torch.equal(a.module.conv1.weight, c.module.conv1.weight)


def test_an_edited_file_is_imported_again(nets):
    import os

    path = nets / "nets.py"
    path.write_text(NETS + "\nclass Extra(Net):\n    classes = list('abcdefghij')\n")
    os.utime(path, ns=(1, 1))
    assert networks.load("nets.py:Extra", device="cpu", input="1x28x28").class_names[0] == "a"
    path.write_text(NETS + "\nclass Extra(Net):\n    classes = list('ABCDEFGHIJ')\n")
    os.utime(path, ns=(2, 2))
    assert networks.load("nets.py:Extra", device="cpu", input="1x28x28").class_names[0] == "A"


# --- weights and classes -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".pth"])
def test_a_state_dict_file_gives_the_network_its_weights(nets, suffix):
    trained = digits(weights="random", seed=7).module.state_dict()
    path = nets / f"digits{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in trained.items()}, path)
    else:
        torch.save({"epoch": 3, "state_dict": trained} if suffix == ".pth" else trained, path)  # a checkpoint
    loaded = digits(weights=path.name)
    assert loaded.weights == path.name
    assert all(torch.equal(loaded.module.state_dict()[k], v) for k, v in trained.items())


def test_a_pickled_model_is_refused_with_how_to_save_a_state_dict(nets):
    torch.save(nn.Sequential(nn.Linear(2, 2)), nets / "whole.pt")
    with pytest.raises(ModelError) as excinfo:
        digits(weights="whole.pt")
    assert 'torch.save(model.state_dict(), "ckpt.pt")' in one_line_error(excinfo)


def test_weights_of_another_architecture_name_the_keys(nets):
    other = networks.load("nets.py:rgb", device="cpu", input="3x32x32").module.state_dict()
    torch.save(other, nets / "other.pt")
    with pytest.raises(ModelError) as excinfo:
        digits(weights="other.pt")
    message = one_line_error(excinfo)
    assert "does not fit" in message and "conv1.weight" in message and "unexpected 0.weight" in message
    wrong = dict(digits().module.state_dict(), **{"fc.weight": torch.zeros(3, 392)})
    torch.save(wrong, nets / "shape.pt")
    with pytest.raises(ModelError) as excinfo:
        digits(weights="shape.pt")
    assert "fc.weight (3, 392) vs (10, 392)" in one_line_error(excinfo)


def test_a_classes_file_names_the_logits(nets):
    (nets / "digits.txt").write_text("\n".join(f"digit {i}" for i in range(10)) + "\n\n")
    assert digits(classes="digits.txt").class_names[3] == "digit 3"
    (nets / "short.txt").write_text("zero\none\n")
    with pytest.raises(ModelError) as excinfo:
        digits(classes="short.txt")
    assert "2 class names but its output is (10,)" in one_line_error(excinfo)


# --- every mistake is one line -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name, kwargs, expected", [
    ("missing.py:Net", {}, "no file"),
    ("nets.py:Nothing", {}, "has no Nothing; it defines"),
    ("no_such_package.zoo:Net", {}, "no module no_such_package.zoo"),
    ("nets.py:broken", {}, "nets.py:broken() raised RuntimeError: no GPU here"),
    ("nets.py:number", {}, "returned a int, not a torch.nn.Module"),
    ("nets.py:SIZE", {}, "is a int, not an nn.Module"),
    ("nets.py:Net", {"input": "3x28x28"}, "fails on a 3x28x28 input"),
    ("nets.py:Net", {"input": "1x32x32"}, "its first Linear layer takes 392 features"),
    ("nets.py:Net", {"input": "28"}, "input is CxHxW"),
    ("nets.py:Net", {"input": "2x28x28"}, "1 (gray) or 3 (RGB) channels"),
    ("nets.py:Net", {"input": "1x28x30"}, "must be square"),
    ("nets.py:Net", {"input": "1x8x8"}, "at least 16"),
    ("nets.py:Net", {"input": "1x28x28", "mean": [0.5, 0.5, 0.5]}, "mean has 3 values but the input has 1 channel"),
    ("nets.py:Net", {"input": "1x28x28", "std": [1, 1]}, "std has 2 values"),
    ("nets.py:Net", {"input": "1x28x28", "resize": 20}, "at least 28"),
    ("nets.py:Net", {"input": "1x28x28", "classes": "none.txt"}, "no classes file"),
    ("nets.py:Net", {"input": "1x28x28", "weights": "none.pt"}, "no weights file"),
    ("nets.py:Net", {"input": "1x28x28", "weights": "w.h5"}, "ends in .safetensors, .pt, .pth"),
    ("alexnet", {"input": "1x28x28"}, "built-in model with its own input"),
    ("alexnet", {"weights": "w.pt"}, "a weights file needs your own network"),
    ("timm:no_such_net", {"weights": "random"}, "timm has no model"),
    ("nothing_at_all", {}, "Unknown model 'nothing_at_all'"),
])
def test_each_mistake_is_one_line(nets, name, kwargs, expected):
    with pytest.raises(ModelError) as excinfo:
        networks.load(name, device="cpu", **kwargs)
    assert expected in one_line_error(excinfo)


def test_a_file_that_fails_to_import_is_one_line(nets):
    (nets / "bad.py").write_text("import torch\nraise ImportError('needs cuda\\nreally')\n")
    with pytest.raises(ModelError) as excinfo:
        networks.load("bad.py:Net", device="cpu")
    assert "raised ImportError: needs cuda" in one_line_error(excinfo)
    (nets / "syntax.py").write_text("def (:\n")
    with pytest.raises(ModelError) as excinfo:
        networks.load("syntax.py:Net", device="cpu")
    assert "raised SyntaxError" in one_line_error(excinfo)


# --- wrap: a module in hand, never changed -----------------------------------------------------------------------

def _small(channels: int = 1) -> nn.Module:
    return nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3))


def test_wrap_leaves_the_module_as_it_was():
    module = _small().eval()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    loaded = deepvis.wrap(module, input=20, mean=0.5, std=0.25, classes=["a", "b", "c"], name="mine")
    assert loaded.module is module and loaded.spec.input_text == "1x20x20" and loaded.class_names == ("a", "b", "c")
    assert all(p.requires_grad for p in module.parameters()) and not module.training
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    rgb = deepvis.wrap(_small(3).eval(), input="3x16x16", mean=[0.4] * 3, std=[0.2] * 3)
    assert rgb.spec.channels == 3 and rgb.class_names == ()


def test_wrap_refuses_a_module_in_training_mode_and_mismatched_classes(tmp_path):
    with pytest.raises(ModelError) as excinfo:
        deepvis.wrap(_small(), input="1x16x16", mean=[0.5], std=[0.5])
    assert "call .eval()" in one_line_error(excinfo)
    (tmp_path / "four.txt").write_text("a\nb\nc\nd\n")
    with pytest.raises(ModelError) as excinfo:
        deepvis.wrap(_small().eval(), input="1x16x16", mean=[0.5], std=[0.5], classes=tmp_path / "four.txt")
    assert "4 class names" in one_line_error(excinfo)
    with pytest.raises(ModelError) as excinfo:
        deepvis.wrap(_small().eval(), input="1x16x16", mean=[0.5] * 3, std=[0.5] * 3)
    assert "mean has 3 values" in one_line_error(excinfo)


def test_the_public_load_model_takes_any_name(nets):
    loaded = deepvis.load_model("nets.py:Net", "random", "cpu", 3, input="1x28x28", mean=[0.1], std=[0.3])
    assert loaded.seed == 3 and loaded.spec.normalization.mean == (0.1,)
