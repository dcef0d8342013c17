"""Your own network: deepvis on a 28-px gray and a 32-px RGB network, each against its floor in the same run.

Run by hand from the repository root:

    python -m bench.bench_own_network [--threads 2] [--repeats 30] [--steps 100] [--weights trained|random]
                                      [--clock wall|cpu] [--device cpu|cuda]

The two networks are the tests' digits networks (``tests/nets/digits.py``, imported by path): ``GrayNet``
(``1x28x28``, mean 0.5, std 0.5) and ``ColorNet`` (``3x32x32``), trained for 3 epochs on scikit-learn's
bundled digits (a few seconds; ``--weights random`` keeps the seeded initial weights instead; the timings do
not depend on the weights), each handed to :func:`deepvis.wrap` as a user would.  Measured, interleaved with
its floor in one process after one warm-up, median of ``--repeats`` (wall time, or with ``--clock cpu`` this
process's CPU time, which is what a run would take alone when other jobs share the CPU):

* **capture**: :func:`deepvis.activations.capture` of the page's default layer and the logits (what the
  Activations page's analysis runs) on one photo's batch, and on a batch of 64, against the bare forward
  ``module(batch)`` under ``torch.no_grad()`` of the same module on the same tensor; and
  :func:`deepvis.activations.analyze` of one photo (centre crop, normalization, capture, top-5, channel
  statistics) against the same bare forward.  Ratio = floor time ÷ deepvis time (target ≥ 0.9).
* **optimization**, per iteration: :func:`deepvis.optimize.run` for ``--steps`` iterations on class units
  (the logits: the whole network runs, as in the floor), one unit and all 10 digits in one batch, with the
  pixel preset Table 1 row 3 (scaled to the network's side) and with ``fourier``, against the floor: a bare
  loop of ``module(x)`` + ``torch.autograd.grad`` of the units w.r.t. ``x`` on a batch of the same size, fed
  as a user would (contiguous); on a CPU also the same floor fed channels-last, the layout deepvis hands a
  network there.  Ratio = floor ÷ deepvis (target ≥ 0.9).  Beside it, the **algorithm's floor**: the same
  preset written as the shortest plain-torch loop (no deepvis code; torchvision's functional transforms):
  for Table 1 row 3 the step, decay, blur when due and clipping; for ``fourier`` the spectrum → irfft →
  colour → sigmoid → Lucid's transforms (pad, jitter, scale, rotate, jitter) → forward → Adam.  Its ratio
  (algorithm floor ÷ deepvis) is deepvis's own overhead; the bare floor ÷ the algorithm floor is what the
  preset itself costs over the network.
* **upload to drawn grid** (the Activations page, :mod:`deepvis.app.grid`): the uploaded PNG's bytes through
  :func:`deepvis.images.decode_image`, :func:`deepvis.activations.analyze` (its centre crop is
  :func:`deepvis.images.model_view`), :func:`deepvis.render.channel_grid` of the layer (``numbers=False``, the
  unit framed) and :func:`deepvis.render.png_bytes` of the grid and of the view; milliseconds (target ≤ 100).
  Uploads: a digit at the network's size, and scikit-image's chelsea as a 640 × 480 PNG.

Prints one JSON object per measurement, then a Markdown table.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

import deepvis
from deepvis import optimize as opt
from deepvis import presets
from deepvis.activations import analyze, capture
from deepvis.images import decode_image, model_view, to_batch
from deepvis.models import default_device
from deepvis.render import channel_grid, png_bytes
from deepvis.targets import Target

NETS_FILE = Path(__file__).resolve().parents[1] / "tests" / "nets" / "digits.py"


def _nets():
    spec = importlib.util.spec_from_file_location("deepvis_bench_digits", NETS_FILE)
    nets = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(nets)
    return nets


def networks(weights: str, device: str) -> list[tuple[str, object, object]]:
    """``(label, LoadedModel, digits module)`` for the gray and the colour network."""
    nets = _nets()
    out = []
    for label, cls, description in (("gray 1x28x28", nets.GrayNet, nets.GRAY),
                                    ("RGB 3x32x32", nets.ColorNet, nets.COLOR)):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            module = cls()
            if weights == "trained":
                module, _ = nets.train(module, description)
        module = module.eval().requires_grad_(False).to(device)
        loaded = deepvis.wrap(module, input=description["input"], mean=description["mean"], std=description["std"],
                              classes=list(nets.CLASSES), name=cls.__name__)
        out.append((label, loaded, nets))
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


CLOCK = time.perf_counter  # --clock cpu: time.process_time, this process's CPU time


def interleaved(jobs: dict[str, Callable[[], object]], repeats: int, device: torch.device) -> dict[str, float]:
    """Median seconds of each job, run in turn ``repeats`` times after one warm-up each."""
    for job in jobs.values():
        job()
    times: dict[str, list[float]] = {key: [] for key in jobs}
    for _ in range(repeats):
        for key, job in jobs.items():
            _sync(device)
            start = CLOCK()
            job()
            _sync(device)
            times[key].append(CLOCK() - start)
    return {key: statistics.median(values) for key, values in times.items()}


def digit_photo(nets, loaded, index: int = 0) -> Image.Image:
    """Digit ``index`` at the network's own size, gray or RGB as the network takes it."""
    channels, size = loaded.spec.channels, loaded.spec.input_size
    pixels, _ = nets.digit_pixels(channels, size, index + 1)
    array = pixels[index]
    return Image.fromarray(array[..., 0], "L") if channels == 1 else Image.fromarray(array, "RGB")


def png_upload(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def bare_ascent(module, x0: torch.Tensor, std: torch.Tensor, units: list[int], steps: int,
                channels_last: bool = False) -> None:
    """The floor of one ascent step: the network's forward on ``x / std`` and the gradient of the units
    (one per row) w.r.t. ``x``, and ``x`` moved by it (a data dependence between steps, as the real loop has);
    ``channels_last``: the network's input in that layout, as deepvis hands it to a network on a CPU."""
    x = x0
    rows = torch.arange(len(units))
    columns = torch.tensor(units)
    for _ in range(steps):
        image = x.detach().requires_grad_(True)
        with torch.enable_grad():
            inputs = image / std
            logits = module(inputs.contiguous(memory_format=torch.channels_last) if channels_last else inputs)
            (grad,) = torch.autograd.grad(logits[rows, columns].sum(), image)
        x = image.detach() + grad


def algorithm_table1(module, x0: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, units: list[int],
                     settings, steps: int) -> None:
    """Table 1's constant-lr ascent as the shortest plain-torch loop: step, L2 decay, Gaussian blur every
    ``blur_every`` iterations (torchvision, kernel truncated at 4 sigma), clipping to 0-255."""
    from torchvision.transforms.v2 import functional as TF

    rows, columns = torch.arange(len(units)), torch.tensor(units)
    sigma, every = settings.blur_radius, settings.blur_every
    kernel = 2 * max(1, int(4 * sigma + 0.5)) + 1
    x = x0
    for it in range(steps):
        image = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = module(image / std)
            (grad,) = torch.autograd.grad(logits[rows, columns].sum(), image)
        x = (image.detach() + settings.lr * grad) * (1 - settings.decay)
        if every and sigma > 0 and it % every == 0:
            x = TF.gaussian_blur(x, [kernel, kernel], [sigma, sigma])
        x = (x + mean).clamp(0, 255) - mean


def jitter(x: torch.Tensor, d: int, generator: torch.Generator) -> torch.Tensor:
    """A random ``(H − d) x (W − d)`` window of ``x``."""
    dy, dx = (int(v) for v in torch.randint(d + 1, (2,), generator=generator))
    return x[..., dy:x.shape[-2] - d + dy, dx:x.shape[-1] - d + dx]


def algorithm_fourier(module, side: int, channels: int, mean01: torch.Tensor, std01: torch.Tensor,
                      units: list[int], steps: int) -> None:
    """Olah et al.'s Fourier-parametrized ascent (Lucid's ``render_vis`` defaults) as the shortest plain-torch
    loop: 1/f-scaled spectrum, irfft, a fixed 3x3 colour mix (RGB only), sigmoid, Lucid's standard transforms
    (pad 12, jitter 8, scale, rotate filling with 0 as Lucent does, jitter 4, at 224 px; scaled to the side), forward,
    Adam 0.05; constants from Lucid (its colour matrix, its transforms)."""
    from torchvision.transforms.v2 import functional as TF

    rows, columns = torch.arange(len(units)), torch.tensor(units)
    fy = torch.fft.fftfreq(side)[:, None]
    fx = torch.fft.rfftfreq(side)[None, :]
    scale = (1.0 / torch.maximum(torch.sqrt(fx * fx + fy * fy), torch.tensor(1.0 / side))).unsqueeze(-1)
    spectrum = (0.01 * torch.randn(len(units), channels, side, side // 2 + 1, 2)).requires_grad_(True)
    colour = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
    optimizer = torch.optim.Adam([spectrum], lr=0.05)
    at = lambda n: max(1, round(n * side / 224))  # noqa: E731
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        optimizer.zero_grad()
        with torch.enable_grad():
            t = torch.fft.irfftn(torch.view_as_complex(spectrum * scale), s=(side, side), norm="ortho") / 4
            if channels == 3:
                t = torch.einsum("ck,bkhw->bchw", colour, t)
            x = jitter(TF.pad(torch.sigmoid(t), [at(12)], fill=0.5), at(8), generator)
            factor = 0.9 + 0.02 * int(torch.randint(11, (1,), generator=generator))
            x = TF.resize(x, [max(1, round(x.shape[-2] * factor))] * 2, antialias=False)
            angle = float(torch.randint(-10, 11, (1,), generator=generator))
            x = jitter(TF.rotate(x, angle, interpolation=TF.InterpolationMode.BILINEAR), at(4), generator)
            x = TF.resize(x, [side, side], antialias=False)
            logits = module((x - mean01) / std01)
            (-logits[rows, columns].sum()).backward()
        optimizer.step()


def measure(label: str, loaded, nets, args) -> list[dict]:
    """Every measurement of the module docstring for one network; prints each as a JSON line."""
    device, layer, logits = loaded.device, loaded.default_layer, loaded.logits_layer
    module, spec = loaded.module, loaded.spec
    side, channels = spec.input_size, spec.channels
    results = []

    def report(**row) -> None:
        row = {"network": label, **row}
        results.append(row)
        print(json.dumps(row), flush=True)

    from skimage import data

    photo = digit_photo(nets, loaded)
    one = to_batch(model_view(photo, spec), spec.normalization, device)
    pixels, _ = nets.digit_pixels(channels, side, 64)
    views = [model_view(Image.fromarray(p[..., 0], "L") if channels == 1 else Image.fromarray(p, "RGB"), spec)
             for p in pixels]
    many = to_batch(views, spec.normalization, device)

    def bare(batch: torch.Tensor) -> Callable[[], object]:
        def forward() -> object:
            with torch.no_grad():
                return module(batch)
        return forward

    for name, batch in (("capture (layer + logits), batch 1", one), ("capture (layer + logits), batch 64", many)):
        t = interleaved({"deepvis": lambda b=batch: capture(module, b, [layer, logits]), "floor": bare(batch)},
                        args.repeats, device)
        report(measure=name, layer=layer, deepvis_ms=1000 * t["deepvis"], floor_ms=1000 * t["floor"],
               ratio=t["floor"] / t["deepvis"], target=">= 0.9")
    t = interleaved({"deepvis": lambda: analyze(loaded, photo, layer), "floor": bare(one)}, args.repeats, device)
    report(measure="analyze one photo (crop, normalize, capture, top-5, stats)", layer=layer,
           deepvis_ms=1000 * t["deepvis"], floor_ms=1000 * t["floor"], ratio=t["floor"] / t["deepvis"],
           target=">= 0.9")

    std = torch.tensor(spec.normalization.std255, device=device).view(1, -1, 1, 1)
    mean255 = torch.tensor(spec.normalization.mean255, device=device).view(1, -1, 1, 1)
    mean01, std01 = mean255 / 255, std / 255
    n = args.steps
    for preset in ("table1:3", "fourier"):
        settings = presets.resolve(loaded, preset).replace(steps=n)
        for units in ([3], list(range(10))):
            targets = [Target(logits, u) for u in units]
            x0 = opt.initial_image(side, 0, device, channels).expand(len(units), -1, -1, -1).clone()
            jobs = {"deepvis": lambda: opt.run(loaded, targets, settings, size=side),
                    "floor": lambda: bare_ascent(module, x0, std, units, n)}
            if device.type == "cpu":  # the same floor fed channels-last, the layout deepvis hands a CPU network
                jobs["floor_cl"] = lambda: bare_ascent(module, x0, std, units, n, channels_last=True)
            if preset == "fourier":
                jobs["algorithm"] = lambda: algorithm_fourier(module, side, channels, mean01, std01, units, n)
            else:
                jobs["algorithm"] = lambda: algorithm_table1(module, x0, mean255, std, units, settings, n)
            t = interleaved(jobs, max(3, args.repeats // 5), device)
            report(measure=f"optimize {preset}, batch {len(units)}", layer=logits, steps=n,
                   deepvis_ms=1000 * t["deepvis"] / n, floor_ms=1000 * t["floor"] / n,
                   floor_channels_last_ms=1000 * t["floor_cl"] / n if "floor_cl" in t else None,
                   algorithm_ms=1000 * t["algorithm"] / n, algorithm_ratio=t["algorithm"] / t["deepvis"],
                   ratio=t["floor"] / t["deepvis"], target=">= 0.9")

    uploads = {"digit PNG": png_upload(photo),
               "640 × 480 photo PNG": png_upload(Image.fromarray(data.chelsea()).resize((640, 480)))}
    for name, upload in uploads.items():
        parts: dict[str, list[float]] = {k: [] for k in ("decode", "analyze", "grid", "png", "total")}

        def upload_to_grid() -> dict[str, float]:
            began = CLOCK()
            image = decode_image(upload)
            decoded = CLOCK()
            result = analyze(loaded, image, layer)
            analyzed = CLOCK()
            grid, _ = channel_grid(result.activation, "channel", numbers=False, highlight=0)
            drawn = CLOCK()
            png_bytes(grid)
            png_bytes(result.view)
            done = CLOCK()
            return {"decode": decoded - began, "analyze": analyzed - decoded, "grid": drawn - analyzed,
                    "png": done - drawn, "total": done - began}

        upload_to_grid()
        for _ in range(args.repeats):
            for key, value in upload_to_grid().items():
                parts[key].append(value)
        ms = {key: 1000 * statistics.median(values) for key, values in parts.items()}
        report(measure=f"upload to drawn grid ({name}, {len(upload)} bytes)", layer=layer, total_ms=ms["total"],
               decode_ms=ms["decode"], analyze_ms=ms["analyze"], grid_ms=ms["grid"], png_ms=ms["png"],
               target="<= 100 ms")
    return results


def table(results: list[dict]) -> None:
    print()
    print("| network | measure | deepvis | floor | floor ÷ deepvis | target | algorithm floor (÷ deepvis) |")
    print("|---|---|---:|---:|---:|---|---|")
    for row in results:
        if "ratio" in row:
            unit = " per it." if "steps" in row else ""
            cl = f" (channels-last: {row['floor_channels_last_ms']:.3f})" if row.get("floor_channels_last_ms") else ""
            print(f"| {row['network']} | {row['measure']} | {row['deepvis_ms']:.3f} ms{unit} | "
                  f"{row['floor_ms']:.3f} ms{unit}{cl} | **{row['ratio']:.2f}** | {row['target']} | "
                  + (f"{row['algorithm_ms']:.3f} ms ({row['algorithm_ratio']:.2f}) |" if "algorithm_ms" in row
                     else "– |"))
        else:
            print(f"| {row['network']} | {row['measure']}: decode {row['decode_ms']:.2f}, analyze "
                  f"{row['analyze_ms']:.2f}, grid {row['grid_ms']:.2f}, PNGs {row['png_ms']:.2f} ms | "
                  f"**{row['total_ms']:.2f} ms** | – | – | {row['target']} | – |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=str(default_device()))
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--steps", type=int, default=100, help="iterations of each optimization run")
    parser.add_argument("--weights", choices=["trained", "random"], default="trained")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall time, or this process's CPU time (with --threads 1 on a CPU shared with other "
                             "jobs, CPU time is what the run would take alone)")
    args = parser.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)
    nets = networks(args.weights, args.device)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"device {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{args.weights} weights, median of {args.repeats} (optimization: of {max(3, args.repeats // 5)} runs of "
          f"{args.steps} iterations), {args.clock} clock, load average at start {load:.1f}", flush=True)
    results = []
    for label, loaded, module_nets in nets:
        results += measure(label, loaded, module_nets, args)
    if hasattr(os, "getloadavg"):
        print(f"load average at the end {os.getloadavg()[0]:.1f}")
    table(results)


if __name__ == "__main__":
    main()
