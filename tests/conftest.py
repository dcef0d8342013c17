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
