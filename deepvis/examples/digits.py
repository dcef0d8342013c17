"""Train a small CNN on scikit-learn's bundled digits and record the run: ``python -m deepvis.examples.digits``.

Conventions
-----------
* The data are the 1,797 8 × 8 digits that ship with scikit-learn (offline), enlarged to
  ``1x28x28`` gray, scaled to [0, 1] and normalized with mean 0.5, std 0.5.
* :class:`Net`: conv(1→16, 5) · ReLU · max-pool · conv(16→32, 3) · ReLU · max-pool ·
  linear(32·5·5 → 10); its layers are ``conv1``, ``relu``, ``max_pool2d``, ``conv2``,
  ``relu_1``, ``max_pool2d_1``, ``fc``.
* Plain SGD with momentum 0.9, batch 32; a snapshot before training and after every epoch
  (``step`` counts batches seen).  ``--lr 0.02`` learns (about 0.997 training accuracy); ``--lr 0.5`` kills every unit of ``relu_1``.
* The two lines a loop needs are marked ``# deepvis``.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

CLASSES = [str(d) for d in range(10)]
INPUT, MEAN, STD = "1x28x28", [0.5], [0.5]


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 5)
        self.conv2 = nn.Conv2d(16, 32, 3)
        self.fc = nn.Linear(32 * 5 * 5, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(torch.flatten(x, 1))


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """The digits as the network's input ``(1797, 1, 28, 28)`` (normalized) and their labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.from_numpy(data.images.astype(np.float32) / 16.0)[:, None]
    images = F.interpolate(images, size=(28, 28), mode="bilinear", align_corners=False).clamp(0, 1)
    return (images - MEAN[0]) / STD[0], torch.from_numpy(data.target).long()


def train(out: str, lr: float = 0.02, epochs: int = 9, seed: int = 0, quiet: bool = False) -> str:
    """Train :class:`Net` and record a run of ``epochs + 1`` snapshots into ``out``; returns ``out``."""
    import deepvis

    torch.manual_seed(seed)
    x, y = digits()
    probe = torch.cat([x[y == d][:2] for d in range(10)])  # two of each digit
    net = Net()
    run = deepvis.Run(out, "deepvis.examples.digits:Net", input=INPUT, mean=MEAN, std=STD, classes=CLASSES,
                      probe=probe)  # deepvis
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    generator = torch.Generator().manual_seed(seed)
    seen, start = 0, time.perf_counter()
    for epoch in range(epochs + 1):
        if epoch:
            net.train()
            for batch in torch.randperm(len(x), generator=generator).split(32):
                optimizer.zero_grad()
                F.cross_entropy(net(x[batch]), y[batch]).backward()
                optimizer.step()
                seen += 1
        net.eval()
        with torch.no_grad():
            logits = net(x)
            loss, accuracy = float(F.cross_entropy(logits, y)), float((logits.argmax(1) == y).float().mean())
        run.snapshot(net, step=seen, loss=loss, accuracy=accuracy)  # deepvis
        if not quiet:
            print(f"epoch {epoch}: step {seen}, loss {loss:.3f}, accuracy {accuracy:.3f} "
                  f"({time.perf_counter() - start:.1f} s)", file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deepvis.examples.digits", description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="runs/digits", help="the run folder (default: runs/digits)")
    parser.add_argument("--lr", type=float, default=0.02, help="SGD learning rate (0.5 kills units)")
    parser.add_argument("--epochs", type=int, default=9, help="epochs; one snapshot before and after each")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        train(args.out, args.lr, args.epochs, args.seed)
    except Exception as exc:  # a DeepvisError: the folder holds another run
        from deepvis.errors import DeepvisError

        if not isinstance(exc, DeepvisError):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"recorded {args.out}; look at it with: deepvis timeline {args.out} --layer conv2 --compute")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
