"""Grad-CAM, Grad-CAM++ and Guided Grad-CAM: where in a photo a layer's maps hold the evidence for a class or a unit.

Conventions
-----------
* ``inputs`` is a preprocessed batch ``(N, C, H, W)`` (:mod:`deepvis.images`); ``layer`` is a graph node whose
  output ``A`` is ``(N, K, h, w)`` (spatial maps; a vector layer has no "where" and is refused).
* **The score** ``y`` is a unit of ``score_layer`` (default: the logits, where a unit is a class): the unit
  itself in a vector layer, its channel's spatial mean in a map.  ``g = ∂y/∂A``.
* **Grad-CAM** (Selvaraju et al. 2017, eq. 1-2): ``α_k = mean_ij g_kij``; ``map = ReLU(Σ_k α_k A_k)``, at the
  layer's own ``h × w``: the same as Captum's ``LayerGradCam(..., relu_attributions=True)``.
* **Grad-CAM++** (Chattopadhyay et al. 2018, eq. 19, with the exponential of the score so that its higher
  derivatives are powers of ``g``): ``a_kij = g² / (2 g² + Σ_ab A_kab g³)`` (0 where the denominator is 0),
  ``w_k = Σ_ij a_kij ReLU(g_kij)``, ``map = ReLU(Σ_k w_k A_k)``.
* **Guided Grad-CAM** (Selvaraju et al. 2017, §3.1): guided backprop of the same score
  (:mod:`deepvis.backprop`; the unit's one for a class, its activation map for a channel) times the Grad-CAM map
  stretched bilinearly to the input's size; it needs the network's rectifiers (ReLU/ReLU6).
* The shared model is not touched: the pass runs on a copy of its traced graph (:mod:`deepvis.graph`) in which
  ``layer``'s output gets a zero "probe" added (``A + p``, ``p = 0``), and ``g`` is the gradient w.r.t. ``p``
  (``torch.autograd.grad``: no hook, no ``.grad``, no mode change).  The probe makes ``g`` the gradient of the
  value itself even when a later operation is in place.  A network torch.fx cannot trace has no Grad-CAM here.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import fx

from deepvis import tokens
from deepvis.activations import capture
from deepvis.backprop import backprop
from deepvis.errors import DeepvisError
from deepvis.graph import UntraceableError, forward_pass, traced
from deepvis.images import model_view, to_batch
from deepvis.models import LoadedModel
from deepvis.render import overlay
from deepvis.targets import resolve_unit

METHODS = ("gradcam", "gradcam++", "guided")
METHOD_NAMES = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "guided": "Guided Grad-CAM"}


class GradCamError(DeepvisError):
    """Grad-CAM asked of a layer or score it cannot use; the message is one line."""


@dataclass(frozen=True)
class Cam:
    """One photo's Grad-CAM: ``map`` ``(h, w)`` float32 at the layer's resolution (rectified), ``heat`` the same
    stretched to the network's view ``(S, S)`` and scaled to [0, 1], ``guided`` the Guided Grad-CAM image
    ``(C, S, S)`` (input space) or None, ``score`` the score's value."""

    layer: str
    score_layer: str
    unit: int
    label: str
    method: str
    score: float
    map: np.ndarray
    heat: np.ndarray
    guided: np.ndarray | None


def _device(model: torch.nn.Module) -> torch.device:
    return next((t.device for t in model.parameters()), torch.device("cpu"))


def _probe_module(model: torch.nn.Module, layer: str, score_layer: str):
    """The cached graph module ``(x, p) -> {layer: A, score_layer: out, "deepvis_raw": the node's own output}``
    with ``p`` added to ``layer``'s node for every later use (module docstring), and the function that turns the
    node's gradient into ``A``'s shape (token layers are shown as maps)."""
    try:
        traced_model = traced(model)
    except UntraceableError as exc:
        raise GradCamError(f"Grad-CAM needs a network torch.fx can trace ({exc}).") from None
    node = traced_model.resolve(tokens.split(layer)[0])
    deepest = max((node, traced_model.resolve(tokens.split(score_layer)[0])), key=traced_model.order.__getitem__)
    if deepest is node:
        raise GradCamError(f"{score_layer} does not depend on {layer}; choose a layer before it.")

    def build() -> fx.GraphModule:
        graph, outputs = traced_model.truncated_graph([layer, score_layer])
        shown = outputs[layer]  # as_maps(clone(node)) or class_token(clone(node))
        clone = shown.args[0]
        copied = clone.args[0]
        first = next(n for n in graph.nodes if n.op == "placeholder")
        with graph.inserting_after(first):
            probe = graph.placeholder("deepvis_probe")
        with graph.inserting_after(clone):
            tap = graph.call_function(operator.add, (copied, probe))
        copied.replace_all_uses_with(tap, delete_user_cb=lambda user: user not in (tap, clone))
        result = next(n for n in graph.nodes if n.op == "output")
        result.args = ({**result.args[0], "deepvis_raw": copied},)
        built = traced_model.module(graph)
        built.meta["shape_of"] = (shown.target, shown.args[1:])
        return built

    module = traced_model.cached(("gradcam", layer, score_layer), build)
    target, extra = module.meta["shape_of"]
    return module, lambda gradient: target(gradient, *extra)


def layer_maps(model: torch.nn.Module, inputs: torch.Tensor, layer: str, score_layer: str, unit: int,
               method: str = "gradcam") -> tuple[torch.Tensor, torch.Tensor]:
    """``(maps, scores)``: the rectified ``(N, 1, h, w)`` map of ``method`` (``"gradcam"`` or ``"gradcam++"``)
    and each image's score (module docstring)."""
    if method not in ("gradcam", "gradcam++"):
        raise GradCamError(f"method must be gradcam or gradcam++ here, not {method!r}")
    if torch.is_inference_mode_enabled():
        raise GradCamError("Grad-CAM needs gradients; call it outside torch.inference_mode().")
    inputs = inputs.detach().to(_device(model))
    module, shape_of = _probe_module(model, layer, score_layer)
    with torch.no_grad(), forward_pass():
        raw = module(inputs, torch.zeros(()))["deepvis_raw"]  # the probe's shape
    with torch.enable_grad(), forward_pass():
        probe = torch.zeros_like(raw, requires_grad=True)
        outputs = module(inputs, probe)
        acts, out = outputs[layer], outputs[score_layer]
        if acts.dim() != 4:
            raise GradCamError(f"Grad-CAM needs a layer with spatial maps; {layer} is a vector of "
                               f"{acts.shape[1]} units.")
        if not 0 <= unit < out.shape[1]:
            raise GradCamError(f"{score_layer} has {out.shape[1]} units (0 to {out.shape[1] - 1}); "
                               f"unit {unit} does not exist.")
        scores = out[:, unit] if out.dim() == 2 else out[:, unit].flatten(1).mean(1)
        if not scores.requires_grad:
            raise GradCamError(f"{score_layer} does not depend on {layer}; choose a layer before it.")
        (grads,) = torch.autograd.grad(scores.sum(), probe, allow_unused=True)
    if grads is None:
        raise GradCamError(f"{score_layer} does not depend on {layer}; choose a layer before it.")
    acts, grads = acts.detach(), shape_of(grads.detach())
    if method == "gradcam":
        weights = grads.mean(dim=(2, 3), keepdim=True)
    else:
        squared = grads.pow(2)
        denominator = 2 * squared + acts.sum(dim=(2, 3), keepdim=True) * grads.pow(3)
        alpha = torch.where(denominator != 0, squared / torch.where(denominator != 0, denominator, 1.0), 0.0)
        weights = (alpha * F.relu(grads)).sum(dim=(2, 3), keepdim=True)
    return F.relu((weights * acts).sum(dim=1, keepdim=True)), scores.detach()


def stretched(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(N, 1, h, w)`` maps stretched bilinearly to ``size`` and scaled to [0, 1] per image (0 stays 0)."""
    up = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
    peak = up.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return up / peak


def picture(cam: Cam, view: np.ndarray) -> np.ndarray:
    """What to look at, ``(S, S, 3)`` uint8: the map's heat over the network's view (Grad-CAM, Grad-CAM++), or
    the Guided Grad-CAM image, signed about grey = 0 and stretched to its 99.5th percentile of ``|value|``."""
    if cam.guided is not None:
        signed = cam.guided.transpose(1, 2, 0)
        bound = max(float(np.percentile(np.abs(signed), 99.5)), 1e-12)  # a few strongest pixels may saturate
        shown = np.clip(np.round(127.5 + 127.5 * np.clip(signed / bound, -1, 1)), 0, 255).astype(np.uint8)
        return shown if shown.shape[-1] == 3 else np.repeat(shown[..., :1], 3, axis=-1)
    photo = view if view.shape[-1] == 3 else np.repeat(view[..., :1], 3, axis=-1)
    return overlay(photo, cam.heat, alpha=0.5)


def gradcam(loaded: LoadedModel, image: Image.Image | np.ndarray, layer: str, unit: int | str | None = None,
            method: str = "gradcam", score_layer: str | None = None) -> Cam:
    """The ``method`` map of a photo (a PIL image or uint8 array; an ``(S, S, C)`` array is taken as the
    network's view as it is) at ``layer`` for ``unit`` of
    ``score_layer`` (default: the logits; ``unit`` a number or, there, a class name; None: the top class)."""
    if method not in METHODS:
        raise GradCamError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    info = loaded.layer(layer)
    name = info.name
    if not info.is_spatial:
        raise GradCamError(f"Grad-CAM needs a layer with spatial maps; {name} is a vector of {info.channels} units.")
    scored = loaded.layer(score_layer).name if score_layer else loaded.logits_layer
    side = loaded.spec.input_size
    if isinstance(image, np.ndarray) and image.shape[:2] != (side, side):
        image = Image.fromarray(image.squeeze(-1) if image.ndim == 3 and image.shape[2] == 1 else image)
    view = np.asarray(image) if isinstance(image, np.ndarray) else model_view(image, loaded.spec)
    inputs = to_batch(view, loaded.spec.normalization, loaded.device)
    if unit is None:
        with torch.no_grad():
            out = capture(loaded.module, inputs, scored)[scored]
        unit = int((out.flatten(2).mean(2) if out.dim() == 4 else out).argmax(1)[0])
    else:
        unit = resolve_unit(loaded, scored, unit)
    plain = "gradcam++" if method == "gradcam++" else "gradcam"
    maps, scores = layer_maps(loaded.module, inputs, name, scored, unit, plain)
    heat = stretched(maps, inputs.shape[2:])
    guided = None
    if method == "guided":
        seed = "map" if loaded.layer(scored).is_spatial else "point"
        gradient = backprop(loaded.module, inputs, scored, unit, "guided", seed)
        guided = (gradient * heat.to(gradient.device))[0].cpu().numpy()
    names = loaded.class_names if scored == loaded.logits_layer and len(loaded.class_names) > unit else None
    label = f"class {unit} ({names[unit]})" if names else f"{scored} unit {unit}"
    return Cam(name, scored, unit, label, method, float(scores[0]), maps[0, 0].cpu().numpy(),
               heat[0, 0].cpu().numpy(), guided)
