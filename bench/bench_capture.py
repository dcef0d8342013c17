"""Capture through the truncated graph module vs the earlier hooks on the shared model, in one run.

Run by hand from the repository root:

    python -m bench.bench_capture [--device cpu|cuda] [--size 224] [--repeats 15] [--threads N]

For layers of the embedded EfficientNet-Lite0 that both paths can name (block outputs and the logits):

* ``hooks``: the module-hook capture that deepvis used before layers became graph nodes (thread-owned forward
  hooks on the shared model, the pass stopped by an exception after the layer); it is still the fallback for
  networks torch.fx cannot trace (``deepvis.activations._capture_with_hooks``);
* ``graph``: ``deepvis.activations.capture``, the cached graph module that ends at the node.

Each is timed forward only (``torch.no_grad``, what the Activations page does) and forward + backward
(``keep_graph=True`` then ``torch.autograd.grad`` of the layer's sum w.r.t. the input, what the optimizer does
per iteration), batch 1.  Median milliseconds of ``--repeats`` interleaved repeats, each after a warm-up call (the
graph path builds and caches its module in the first); the ratio is graph ÷ hooks (below 1: the graph path is faster).  Prints a
Markdown table.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from bench.bench_backprop import timed
from deepvis.activations import _capture_with_hooks, capture
from deepvis.models import default_device, load_model

LAYERS = ("_blocks.1", "_blocks.8", "_blocks.15", "_fc")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=str(default_device()))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model(device=args.device)
    device = loaded.device
    x = torch.randn(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0)).to(device)
    if device.type == "cpu":
        x = x.contiguous(memory_format=torch.channels_last)

    def forward(path, layer: str):
        return lambda: path(loaded.module, x, [layer], False)

    def forward_backward(path, layer: str):
        def run() -> None:
            start = x.detach().requires_grad_(True)
            out = path(loaded.module, start, [layer], True)[layer]
            torch.autograd.grad(out.sum(), start)
        return run

    paths = {"hooks": _capture_with_hooks, "graph": capture}
    print(f"device {device}, torch threads {torch.get_num_threads()}, {args.size} px, batch 1, "
          f"median of {args.repeats}\n")
    print("| layer (node) | hooks fwd ms | graph fwd ms | ratio | hooks fwd+bwd ms | graph fwd+bwd ms | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for layer in LAYERS:
        a, b = paths["hooks"](loaded.module, x, [layer], False)[layer], capture(loaded.module, x, [layer])[layer]
        assert torch.equal(a, b), f"the two paths disagree at {layer}"
        calls = {(name, kind): make(path, layer)
                 for kind, make in (("f", forward), ("fb", forward_backward)) for name, path in paths.items()}
        times: dict[tuple[str, str], list[float]] = {key: [] for key in calls}
        for _ in range(args.repeats):  # interleaved, so a disturbance hits both paths alike
            for key, call in calls.items():
                times[key] += timed(call, 1, device)
        med = {key: statistics.median(values) for key, values in times.items()}
        node = loaded.layer(layer).name
        print(f"| `{layer}` (`{node}`) | {med['hooks', 'f']:.1f} | {med['graph', 'f']:.1f} "
              f"| {med['graph', 'f'] / med['hooks', 'f']:.2f} | {med['hooks', 'fb']:.1f} | {med['graph', 'fb']:.1f} "
              f"| {med['graph', 'fb'] / med['hooks', 'fb']:.2f} |")


if __name__ == "__main__":
    main()
