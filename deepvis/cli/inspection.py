"""Commands that look at a model or at one photo: ``info``, ``predict``, ``activations``,
``backprop``, ``gradcam`` and ``occlusion``.

Each prints JSON on stdout; images go to the files ``--out`` / ``--npy`` name.
"""

from __future__ import annotations

import argparse

import numpy as np

from deepvis.activations import analyze, predict
from deepvis.backprop import Unit, backward
from deepvis.cli.common import LAYER_HELP, add_model_options, emit, model_of, read_image, run_with_bar, write_png
from deepvis.errors import DeepvisError
from deepvis.gradcam import METHODS, gradcam, picture
from deepvis.images import model_view, preprocess
from deepvis.occlusion import default_window, occlude
from deepvis.render import backprop_image, heat_colors, to_uint8


def add_info(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("info", help="model, device, input size and layers with their shapes")
    add_model_options(parser)


def run_info(args: argparse.Namespace) -> int:
    loaded = model_of(args)
    return emit({
        "model": loaded.spec.name, "title": loaded.spec.title, "weights": loaded.weights,
        "device": str(loaded.device), "input_size": loaded.spec.input_size, "input": loaded.spec.input_text,
        "resize": loaded.spec.resize_size, "classes": len(loaded.class_names),
        "normalization": {"mean": loaded.spec.normalization.mean, "std": loaded.spec.normalization.std},
        "default_layer": loaded.default_layer, "notice": loaded.notice,
        "layers": [{"name": i.name, "group": i.group, "op": i.op, "rectified": i.rectified,
                    "description": i.description, "shape": list(i.shape), "kind": i.kind} for i in loaded.layers],
    })


def add_predict(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("predict", help="top-K classes for a photo (a network without class names has none)")
    parser.add_argument("image")
    parser.add_argument("--top", type=int, default=5)
    add_model_options(parser)


def run_predict(args: argparse.Namespace) -> int:
    image = read_image(args.image)
    loaded = model_of(args)
    if not loaded.class_names:
        raise DeepvisError(f"{loaded.spec.name} has no class names (a feature extractor has no top classes); give "
                           "--classes FILE with one name per logit")
    top = min(args.top, len(loaded.class_names)) if args.top >= 1 else args.top
    predictions = predict(loaded.module, preprocess(image, loaded.spec, loaded.device), loaded.class_names, top)
    return emit([{"label": p.label, "index": p.index, "prob": p.prob} for p in predictions[0]])


def add_activations(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("activations", help="per-channel mean, max and argmax of one layer for a photo")
    parser.add_argument("image")
    parser.add_argument("--layer", required=True, help=LAYER_HELP)
    add_model_options(parser)


def run_activations(args: argparse.Namespace) -> int:
    image = read_image(args.image)
    loaded = model_of(args)
    info = loaded.layer(args.layer)
    result = analyze(loaded, image, info.name)
    return emit({"model": loaded.spec.name, "layer": info.name, "description": info.description,
                 "shape": list(info.shape), "channels": result.stats.as_records()})


def add_backprop(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("backprop", help="saliency, deconvnet or guided-backprop image of one unit for a photo")
    parser.add_argument("image")
    parser.add_argument("--layer", required=True, help=LAYER_HELP)
    parser.add_argument("--unit", type=int, required=True, help="channel of the layer")
    parser.add_argument("--y", type=int, default=None, help="row of the unit (with --x): seed a one-hot there; "
                        "without --y/--x the seed is the channel's activation map")
    parser.add_argument("--x", type=int, default=None, help="column of the unit (with --y)")
    parser.add_argument("--mode", required=True, choices=["saliency", "deconv", "guided"])
    parser.add_argument("--filter", default="norm_blur", choices=["raw", "gray", "norm", "norm_blur"],
                        help="how the PNG shows the gradient, as on the Activations page: raw (signed, zero = grey; "
                             "faint), gray, norm (per-pixel strength) or norm_blur (default: %(default)s)")
    parser.add_argument("--out", required=True, help="PNG of the gradient, drawn with --filter")
    parser.add_argument("--npy", default=None, help="also save the raw gradient (3, H, W) w.r.t. the network input")
    add_model_options(parser)


def run_backprop(args: argparse.Namespace) -> int:
    unit = Unit(args.unit, args.y, args.x)
    image = read_image(args.image)
    loaded = model_of(args)
    layer = loaded.layer(args.layer).name
    gradient = backward(loaded, image, layer, unit, args.mode)
    write_png(args.out, backprop_image(gradient, args.filter))
    array = gradient.float().cpu().numpy()
    if args.npy:
        np.save(args.npy, array)
    return emit({"model": loaded.spec.name, "weights": loaded.weights, "layer": layer, "mode": args.mode,
                 "filter": args.filter,
                 "unit": {"channel": unit.channel, "y": unit.y, "x": unit.x},
                 "seed": "point" if unit.has_position else "map", "shape": list(array.shape),
                 "max_abs": float(np.abs(array).max()), "out": args.out, "npy": args.npy})


def add_gradcam(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("gradcam", help="Grad-CAM, Grad-CAM++ or Guided Grad-CAM of a photo at a layer, for a "
                            "class or a unit (Selvaraju et al. 2017)")
    parser.add_argument("image")
    parser.add_argument("--layer", required=True, help=LAYER_HELP + " (one with spatial maps)")
    parser.add_argument("--unit", default=None, metavar="U|CLASS",
                        help="the class (a number or name) or, with --of, the unit scored (default: the top class)")
    parser.add_argument("--of", default=None, metavar="LAYER",
                        help="score a unit of this later layer (its channel's mean) instead of a class")
    parser.add_argument("--method", default="gradcam", choices=METHODS,
                        help="gradcam (default), gradcam++ (Chattopadhyay et al. 2018) or guided (Guided Grad-CAM)")
    parser.add_argument("--out", default=None, help="PNG: the map over the photo, or the Guided Grad-CAM image")
    parser.add_argument("--npy", default=None, help="the (h, w) float32 map at the layer's resolution, rectified "
                        "(Captum's LayerGradCam(..., relu_attributions=True) for gradcam)")
    add_model_options(parser)


def run_gradcam(args: argparse.Namespace) -> int:
    image = read_image(args.image)
    loaded = model_of(args)
    view = model_view(image, loaded.spec)
    cam = gradcam(loaded, view, args.layer, args.unit, args.method, args.of)
    if args.out:
        write_png(args.out, picture(cam, view))
    if args.npy:
        np.save(args.npy, cam.map.astype(np.float32))
    return emit({"model": loaded.spec.name, "layer": cam.layer, "method": args.method, "score_layer": cam.score_layer,
                 "unit": cam.unit, "target": cam.label, "score": cam.score, "shape": list(cam.map.shape),
                 "peak": [int(v) for v in np.unravel_index(int(cam.map.argmax()), cam.map.shape)],
                 "max": float(cam.map.max()), "out": args.out, "npy": args.npy})


def add_occlusion(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("occlusion", help="occlusion map of a photo: what covering each part does to the top "
                            "class or a unit (Zeiler & Fergus)")
    parser.add_argument("image")
    parser.add_argument("--layer", default=None, help=f"{LAYER_HELP}; with --unit the target is that unit's "
                        "activation summed over its map (default: the top class's probability)")
    parser.add_argument("--unit", type=int, default=None, help="channel or element of --layer")
    parser.add_argument("--patch", type=int, default=None, help="side of the grey square, px (default: a seventh "
                        "of the network's input side: 32 at 224 px, 4 at 28 px)")
    parser.add_argument("--stride", type=int, default=None, help="step between squares, px (default: half the patch)")
    parser.add_argument("--out", required=True, help="PNG of the map as a heatmap (bright = the target drops most)")
    parser.add_argument("--npy", default=None, help="also save the (H, W) float32 map: per pixel the mean drop over "
                        "the squares that cover it (Captum's convention)")
    add_model_options(parser)


def run_occlusion(args: argparse.Namespace) -> int:
    if (args.layer is None) != (args.unit is None):
        raise DeepvisError("give --layer and --unit together, or neither (the top class)")
    image = read_image(args.image)
    loaded = model_of(args)
    layer = loaded.layer(args.layer).name if args.layer else None
    view = model_view(image, loaded.spec)
    patch = default_window(view.shape[0])[0] if args.patch is None else args.patch
    stride = max(1, patch // 2) if args.stride is None else args.stride
    result = run_with_bar(occlude(loaded, view, patch, stride, layer, args.unit), "occlusion", "window")
    write_png(args.out, heat_colors(to_uint8(np.clip(result.drops, 0, None))))
    if args.npy:
        np.save(args.npy, result.drops.astype(np.float32))
    return emit({"model": loaded.spec.name, "target": result.target, "baseline": result.baseline,
                 "patch": patch, "stride": stride, "windows": result.windows,
                 "max_drop": float(result.drops.max()), "out": args.out, "npy": args.npy})
