"""Shared fixtures: the embedded model (built once per test session) and real photos."""

from __future__ import annotations

import numpy as np
import pytest

from deepvis.models import LoadedModel, load_model


@pytest.fixture(scope="session")
def lite0() -> LoadedModel:
    """The embedded pretrained EfficientNet-Lite0 on the CPU, shared like the app shares it."""
    return load_model("efficientnet_lite0", "default", "cpu")


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    """scikit-image's sample photos (shipped inside the package, no download)."""
    from skimage import data

    return {"chelsea": data.chelsea(), "coffee": data.coffee(), "astronaut": data.astronaut()}


NETS_FILE = __import__("pathlib").Path(__file__).parent / "nets" / "digits.py"


def _trained(kind: str, tmp_path_factory) -> dict:
    """A digits network trained once per session, with its checkpoint and classes file on disk, as a user
    would have them: ``{"dir", "file", "name", "weights", "safetensors", "classes", "module", "accuracy",
    "input", "mean", "std", "loaded"}`` (``loaded``: the LoadedModel, built through :func:`deepvis.wrap`)."""
    import importlib.util

    import torch
    from safetensors.torch import save_file

    import deepvis

    spec = importlib.util.spec_from_file_location("deepvis_test_digits", NETS_FILE)
    nets = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(nets)
    name = "GrayNet" if kind == "gray" else "ColorNet"
    description = nets.GRAY if kind == "gray" else nets.COLOR
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module, accuracy = nets.train(getattr(nets, name)(), description)
    folder = tmp_path_factory.mktemp(f"{kind}_net")
    weights, tensors, classes = folder / "ckpt.pt", folder / "ckpt.safetensors", folder / "names.txt"
    torch.save(module.state_dict(), weights)
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(tensors))
    classes.write_text("\n".join(f"digit {d}" for d in range(10)) + "\n")
    channels, size = int(description["input"].split("x")[0]), int(description["input"].split("x")[1])
    loaded = deepvis.wrap(module, input=description["input"], mean=description["mean"], std=description["std"],
                          classes=[f"digit {d}" for d in range(10)], name=f"digits_{kind}")
    return {"dir": folder, "file": NETS_FILE, "name": name, "weights": weights, "safetensors": tensors,
            "classes": classes, "module": module, "accuracy": accuracy, "input": description["input"],
            "mean": description["mean"], "std": description["std"], "channels": channels, "size": size,
            "loaded": loaded, "nets": nets}


@pytest.fixture(scope="session")
def gray_net(tmp_path_factory) -> dict:
    """A 1x28x28 CNN trained briefly on scikit-learn's digits (see :func:`_trained`)."""
    return _trained("gray", tmp_path_factory)


@pytest.fixture(scope="session")
def color_net(tmp_path_factory) -> dict:
    """A 3x32x32 CNN trained briefly on coloured digits (see :func:`_trained`)."""
    return _trained("color", tmp_path_factory)
