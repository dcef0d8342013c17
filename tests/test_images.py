"""Preprocessing: the one place images become model input."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from deepvis.images import decode_image, model_view, preprocess, sample_bytes
from deepvis.models import IMAGENET, LITE, REGISTRY


def test_model_view_is_the_centre_crop_of_the_resized_photo():
    image = np.zeros((300, 600, 3), np.uint8)
    image[:, 300 - 50:300 + 50] = 255  # a white vertical band in the middle, 100 px of 600
    view = model_view(Image.fromarray(image), REGISTRY["efficientnet_lite0"])
    assert view.shape == (224, 224, 3) and view.dtype == np.uint8
    # resized so the short side is 256: the band is 256/300*100 = 85 px wide, centred
    white = np.where(view[112, :, 0] > 128)[0]
    assert abs(len(white) - 85) <= 2 and abs(white.mean() - 111.5) <= 1


def test_preprocess_applies_the_models_normalization():
    grey = Image.new("RGB", (320, 240), (127, 127, 127))
    lite = preprocess(grey, REGISTRY["efficientnet_lite0"])
    assert lite.shape == (1, 3, 224, 224)
    assert torch.allclose(lite, torch.zeros_like(lite), atol=1e-6)  # (127 - 127) / 128
    tv = preprocess(grey, REGISTRY["alexnet"])
    expected = (127 / 255 - torch.tensor(IMAGENET.mean)) / torch.tensor(IMAGENET.std)
    assert torch.allclose(tv[0, :, 0, 0], expected.float(), atol=1e-5)
    assert LITE.std255 == (128.0, 128.0, 128.0)


def test_bundled_samples_decode():
    image = decode_image(sample_bytes("chelsea"))
    assert image.mode == "RGB" and image.size == (451, 300)
