"""Two small networks of one's own, trained in seconds on scikit-learn's bundled digits (offline).

* :class:`GrayNet`: ``1x28x28`` gray input (the 8 x 8 digits enlarged), mean 0.5, std 0.5.
* :class:`ColorNet`: ``3x32x32`` RGB input: each digit drawn in one of three colours on a dark
  background, so colour channels carry signal.
* Both end in 10 logits named ``"0"`` … ``"9"`` (:data:`CLASSES`).
* :func:`train` fits one for a few epochs with a fixed seed and returns it in eval mode, frozen;
  training accuracy is about 0.95 or more after 3 epochs.

The tests load these by path (``tests/nets/digits.py:GrayNet``), as a user would load their own file.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

CLASSES = tuple(str(d) for d in range(10))
GRAY = {"input": "1x28x28", "mean": (0.5,), "std": (0.5,)}
COLOR = {"input": "3x32x32", "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
PALETTE = np.array([[1.0, 0.2, 0.2], [0.2, 1.0, 0.2], [0.3, 0.5, 1.0]], dtype=np.float32)


class GrayNet(nn.Module):
    """conv(1→8, 5) · ReLU · pool · conv(8→16, 3) · ReLU · pool · linear(16·6·6 → 10)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 5)
        self.conv2 = nn.Conv2d(8, 16, 3)
        self.fc = nn.Linear(16 * 5 * 5, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(torch.flatten(x, 1))


class ColorNet(nn.Module):
    """conv(3→8, 3, pad 1) · ReLU · pool · conv(8→16, 3, pad 1) · ReLU · pool · linear(16·8·8 → 10)."""

    classes = CLASSES  # names found on the module itself when no classes file is given

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Linear(16 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def digit_pixels(channels: int, size: int, count: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(N, size, size, channels)`` uint8 digit images (0-255) and their labels ``(N,)``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images[:count].astype(np.float32) / 16.0  # (N, 8, 8) in [0, 1]
    labels = digits.target[:count]
    up = F.interpolate(torch.from_numpy(images)[:, None], size=(size, size), mode="bilinear", align_corners=False)
    gray = up[:, 0].clamp(0, 1).numpy()
    if channels == 1:
        return np.round(gray[..., None] * 255).astype(np.uint8), labels
    colours = PALETTE[np.arange(len(gray)) % len(PALETTE)]
    rgb = 0.1 + gray[..., None] * colours[:, None, None, :] * 0.9
    return np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8), labels


def normalized(pixels: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """``(N, H, W, C)`` uint8 -> the network's input ``(N, C, H, W)``: ``(pixel / 255 - mean) / std``."""
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
    return (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)


def train(net: nn.Module, description: dict, epochs: int = 3, seed: int = 0) -> tuple[nn.Module, float]:
    """Fit ``net`` on the digits (Adam 3e-3, batch 64); the frozen eval-mode net and its training accuracy."""
    channels, size = int(description["input"].split("x")[0]), int(description["input"].split("x")[1])
    pixels, labels = digit_pixels(channels, size)
    x, y = normalized(pixels, description["mean"], description["std"]), torch.from_numpy(labels).long()
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), 64):
            batch = order[start:start + 64]
            optimizer.zero_grad()
            F.cross_entropy(net(x[batch]), y[batch]).backward()
            optimizer.step()
    net.eval().requires_grad_(False)
    for p in net.parameters():
        p.grad = None
    with torch.no_grad():
        accuracy = float((net(x).argmax(1) == y).float().mean())
    return net, accuracy
