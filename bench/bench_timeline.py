"""Watching a network learn: what a snapshot costs a training loop, and what filling a run costs.

Run by hand from the repository root:

    python -m bench.bench_timeline [--threads 2] [--repeats 20] [--fill [--keep DIR]] [--device cpu|cuda]

* **snapshot**: :meth:`deepvis.Run.snapshot` of a CIFAR-sized network (input ``3x32x32``) during training,
  median of ``--repeats`` wall-clock times, against the floor a loop would pay anyway to keep a checkpoint:
  ``torch.save(model.state_dict(), file)`` of the same module in the same run (ratio = floor ÷ snapshot).
  Networks: the digits demo's CNN (``deepvis.examples.digits.Net``, 1x28x28, 17 k parameters); a VGG-style
  CIFAR CNN (conv 32-64-128 with batch norm, 0.29 M); torchvision's ResNet-18 with 10 classes (11.2 M,
  the usual "ResNet-18 on CIFAR").  Target: ≤ 50 ms at CIFAR scale.
* **fill** (``--fill``): record the demo run (10 snapshots, ``python -m deepvis.examples.digits``), then time
  :func:`deepvis.timeline.compute` of its measures and of every filter's optimized image of ``conv2`` (32
  filters, the default preset Table 1 row 3 at 1000 iterations, scaled blur), from nothing.

Prints one JSON object per measurement, then a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from torch import nn

import deepvis


class CifarCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layers, channels = [], 3
        for width in (32, 64, 128):
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                       nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2)]
            channels = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(128 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))


def networks() -> dict[str, tuple[nn.Module, str]]:
    from deepvis.examples.digits import Net

    return {"digits CNN (1x28x28)": (Net(), "1x28x28"), "VGG-style CIFAR CNN (3x32x32)": (CifarCNN(), "3x32x32"),
            "ResNet-18, 10 classes (3x32x32)": (torchvision.models.resnet18(num_classes=10), "3x32x32")}


def bench_snapshot(repeats: int, device: str) -> list[dict]:
    rows = []
    for name, (net, shape) in networks().items():
        net = net.to(device).train()
        channels = int(shape[0])
        params = sum(p.numel() for p in net.parameters())
        with tempfile.TemporaryDirectory() as folder:
            run = deepvis.Run(Path(folder) / "run", f"bench.bench_timeline:{type(net).__name__}", input=shape,
                              mean=[0.5] * channels, std=[0.25] * channels)
            floor, ours = [], []
            for i in range(repeats + 1):  # interleaved; the first of each is a warm-up
                start = time.perf_counter()
                torch.save(net.state_dict(), Path(folder) / "floor.pt")
                floor.append(time.perf_counter() - start)
                start = time.perf_counter()
                run.snapshot(net, step=i, loss=1.0 / (i + 1))
                ours.append(time.perf_counter() - start)
        row = {"measure": "snapshot", "network": name, "parameters": params, "device": device,
               "snapshot_ms": statistics.median(ours[1:]) * 1e3, "torch_save_ms": statistics.median(floor[1:]) * 1e3}
        row["ratio"] = row["torch_save_ms"] / row["snapshot_ms"]
        print(json.dumps(row))
        rows.append(row)
    return rows


def bench_fill(device: str, keep: str | None = None) -> dict:
    from deepvis import timeline
    from deepvis.examples.digits import train
    from deepvis.progress import drain

    with tempfile.TemporaryDirectory() as scratch:
        folder = keep or scratch
        start = time.perf_counter()
        train(str(Path(folder) / "digits"), quiet=True)
        record_s = time.perf_counter() - start
        view = deepvis.open_run(Path(folder) / "digits")
        start = time.perf_counter()
        drain(timeline.compute(view, None, device))
        measures_s = time.perf_counter() - start
        start = time.perf_counter()
        drain(timeline.compute(view, timeline.Pictures("conv2"), device))
        pictures_s = time.perf_counter() - start
    row = {"measure": "fill", "run": "digits demo, 10 snapshots", "layer": "conv2 (32 filters)",
           "preset": timeline.PRESET, "device": device, "record_s": record_s, "measures_s": measures_s,
           "pictures_s": pictures_s, "per_snapshot_s": pictures_s / len(view.steps)}
    print(json.dumps(row))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--fill", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--keep", default=None, metavar="DIR", help="record the filled run into DIR/digits and keep "
                        "it (for bench.bench_training_page)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = bench_snapshot(args.repeats, args.device)
    print("\n| network | parameters | snapshot (ms) | torch.save (ms) | ratio |\n|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['network']} | {r['parameters'] / 1e6:.2f} M | {r['snapshot_ms']:.1f} | {r['torch_save_ms']:.1f} "
              f"| {r['ratio']:.2f} |")
    if args.fill:
        r = bench_fill(args.device, args.keep)
        print(f"\nfill: record {r['record_s']:.1f} s; measures {r['measures_s']:.1f} s; pictures of conv2 "
              f"{r['pictures_s']:.1f} s ({r['per_snapshot_s']:.1f} s per snapshot)")


if __name__ == "__main__":
    main()
