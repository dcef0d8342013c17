"""Vision transformers (timm, torchvision): token layers as P × P maps, the class token apart, every view.

A small random timm ViT (32 px, 8-px patches: 4 × 4 patch tokens plus a class token, 48 features, two
blocks) is wrapped like a user's own network.  Expected values are computed by hand from the plain module
(a forward hook's tokens, reshaped index by index; ``torch.autograd`` on the plain forward), so a
transposed or shifted token order fails.  After every view the shared module is as it was: no hooks,
no ``.grad``, eval mode, frozen.
"""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
import torchvision
from PIL import Image
from timm.models.vision_transformer import VisionTransformer

from deepvis import backprop, index, occlusion, receptive, tokens, units
from deepvis import optimize as opt
from deepvis.activations import analyze, capture
from deepvis.errors import DeepvisError
from deepvis.hooks import hook_count
from deepvis.images import to_batch
from deepvis.models import IMAGENET, wrap_model
from deepvis.presets import PARAM_PRESETS
from deepvis.render import channel_grid
from deepvis.targets import Target
from tests.helpers import drain

SIZE, SIDE, DIM = 32, 4, 48  # input pixels, patch grid, features
LAYER = "blocks.1.add_1"  # the last block's output (the residual stream)
CLS = LAYER + "[cls]"


def _small_vit(**kwargs) -> VisionTransformer:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = VisionTransformer(img_size=SIZE, patch_size=8, embed_dim=DIM, depth=2, num_heads=2, num_classes=10,
                                   **kwargs)
    return module.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def vit():
    return wrap_model(_small_vit(), "vit", input_size=SIZE, normalization=IMAGENET,
                      class_names=tuple(f"class {k}" for k in range(10)))


@pytest.fixture(scope="module")
def view() -> np.ndarray:
    return (np.random.default_rng(3).random((SIZE, SIZE, 3)) * 255).astype(np.uint8)


def assert_untouched(module: torch.nn.Module) -> None:
    """The shared-model rules: no hooks anywhere (global ones too), no .grad, eval mode, frozen."""
    assert hook_count(module) == 0
    assert not torch.nn.modules.module._global_forward_hooks
    assert not torch.nn.modules.module._global_forward_pre_hooks
    assert all(p.grad is None and not p.requires_grad for p in module.parameters())
    assert not any(m.training for m in module.modules())


def hooked_tokens(module: torch.nn.Module, submodule: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """``submodule``'s output in a plain forward of ``module`` (graph kept, for autograd)."""
    found = []
    handle = submodule.register_forward_hook(lambda _m, _a, out: found.append(out))
    try:
        module(inputs)
    finally:
        handle.remove()
    return found[0]


def by_hand(tokens_: torch.Tensor, prefix: int = 1) -> torch.Tensor:
    """``(N, T, D)`` -> ``(N, D, P, P)`` index by index: map[n, d, i, j] = tokens[n, prefix + i·P + j, d]."""
    count, dim = tokens_.shape[1] - prefix, tokens_.shape[2]
    side = int(round(count ** 0.5))
    maps = torch.zeros(tokens_.shape[0], dim, side, side, dtype=tokens_.dtype)
    for i in range(side):
        for j in range(side):
            maps[:, :, i, j] = tokens_[:, prefix + i * side + j, :]
    return maps


def test_token_layers_are_offered_as_maps_with_the_class_token_apart(vit):
    layers = {info.name: info for info in vit.layers}
    assert vit.notice is None  # timm's ViT traces: every node is a layer
    maps, cls = layers[LAYER], layers[CLS]
    assert maps.shape == (DIM, SIDE, SIDE) and maps.tokens == 1 and not maps.is_class_token and maps.is_spatial
    assert cls.shape == (DIM,) and cls.is_class_token and cls.group == maps.group == "blocks.1"
    assert [info.name for info in vit.layers].index(CLS) == [info.name for info in vit.layers].index(LAYER) + 1
    assert layers["blocks.0.mlp.fc1"].shape == (4 * DIM, SIDE, SIDE)
    assert maps.description == f"residual sum · {DIM} × {SIDE} × {SIDE} (patch tokens)"
    assert cls.description == f"residual sum, class token · {DIM}"
    assert layers["patch_embed.proj"].shape == (DIM, SIDE, SIDE) and layers["patch_embed.proj"].tokens is None
    # every offered layer is a map or a vector; attention heads (N, heads, T, d) are not maps of the image
    assert all(len(info.shape) in (1, 3) for info in vit.layers)
    assert not any("attention" in info.name for info in vit.layers)
    assert vit.logits_layer == "head" and vit.layer("blocks.1").name == LAYER  # a module path: its output node
    assert not vit.layer(vit.default_layer).is_class_token
    assert_untouched(vit.module)


def test_capture_gives_the_patch_tokens_as_maps_and_the_class_token(vit, view):
    inputs = to_batch(view, vit.spec.normalization, vit.device)
    inputs = torch.cat([inputs, inputs.flip(-1)])
    got = capture(vit.module, inputs, ["blocks.1", CLS, "head"])
    assert_untouched(vit.module)
    with torch.no_grad():
        tokens_ = hooked_tokens(vit.module, vit.module.blocks[1], inputs)  # (2, 17, 48)
    assert got["blocks.1"].shape == (2, DIM, SIDE, SIDE) and got[CLS].shape == (2, DIM)
    # map (d=5, y=2, x=3) of image 1 is patch token 2·4 + 3 = 11, token 12 after the class token
    assert got["blocks.1"][1, 5, 2, 3] == tokens_[1, 12, 5]
    torch.testing.assert_close(got["blocks.1"], by_hand(tokens_), rtol=0, atol=0)
    torch.testing.assert_close(got[CLS], tokens_[:, 0], rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(got["head"], vit.module(inputs))
    with pytest.raises(DeepvisError, match="no class token"):  # a map layer has none
        capture(vit.module, inputs, "patch_embed.proj[cls]")
    assert_untouched(vit.module)


def test_the_activations_page_and_the_unit_view_work_on_a_token_layer(vit, view, tmp_path):
    analysis = analyze(vit, Image.fromarray(view), LAYER)
    assert analysis.is_spatial and analysis.activation.shape == (DIM, SIDE, SIDE)
    assert analysis.channel_map(7).shape == (SIDE, SIDE) and len(analysis.predictions) == 5
    assert analysis.stats.argmax.shape == (DIM, 2)
    grid, layout = channel_grid(analysis.activation)
    assert grid.dtype == np.uint8 and layout.channels == DIM
    vector = analyze(vit, Image.fromarray(view), CLS)
    assert not vector.is_spatial and vector.activation.shape == (DIM,)
    assert_untouched(vit.module)

    for k in range(3):  # a small collection, indexed for the token maps and the class token
        pixels = (np.random.default_rng(k).random((40, 40, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"photo{k}.png")
    summary, _ = drain(index.build(vit, tmp_path, [LAYER, CLS], path=tmp_path / "i.sqlite"))
    hits = index.top(tmp_path / "i.sqlite", LAYER, 7, 3)
    assert len(hits) == 3 and all(0 <= h.y < SIDE and 0 <= h.x < SIDE for h in hits)
    assert len(index.top(tmp_path / "i.sqlite", CLS, 7, 3)) == 3
    top, left, bottom, right = receptive.field(vit, LAYER, hits[0].y, hits[0].x)
    assert 0 <= top < bottom <= SIZE and 0 <= left < right <= SIZE
    crops = units.top_crops(vit, LAYER, hits)
    images, mode = units.top_backward(vit, LAYER, 7, hits)
    assert mode == "saliency"  # no deconvnet rule for GELU: the unit view says saliency
    assert len(crops) == len(images) == 3 and images[0].shape == (units.CROP, units.CROP, 3)
    assert_untouched(vit.module)


def test_fourier_optimization_raises_a_token_channel_and_the_class_token(vit):
    settings = PARAM_PRESETS["fourier"].replace(steps=12)
    record = opt.run(vit, [Target(LAYER, 3, "channel"), Target(CLS, 3)], settings, size=SIZE, seed=1)
    assert [row.settings.param for row in record.rows] == ["fourier", "fourier"]
    channel, cls = record.rows  # a random ViT's class token depends weakly on the image: it rises less
    assert channel.best_objective > channel.initial + 0.1 and cls.best_objective > cls.initial + 0.02
    assert_untouched(vit.module)


def test_saliency_is_the_plain_gradient_of_the_hand_reshaped_tokens(vit, view):
    gradient = backprop.backward(vit, view, "blocks.0.mlp.fc2", 7, "saliency")  # the channel's map as seed
    point = backprop.backward(vit, view, "blocks.0.mlp.fc2", (7, 1, 2), "saliency")
    cls = backprop.backward(vit, view, "blocks.0.add_1[cls]", 5, "saliency")
    assert gradient.shape == (3, SIZE, SIZE)
    assert_untouched(vit.module)

    inputs = to_batch(view, vit.spec.normalization, vit.device).requires_grad_(True)
    with torch.enable_grad():
        maps = by_hand(hooked_tokens(vit.module, vit.module.blocks[0].mlp.fc2, inputs))
        seed = torch.zeros_like(maps)
        seed[:, 7] = maps[:, 7].detach()
        (want,) = torch.autograd.grad(maps, inputs, seed)
        tokens_ = hooked_tokens(vit.module, vit.module.blocks[0].mlp.fc2, inputs)
        (want_point,) = torch.autograd.grad(tokens_[0, 1 + 1 * SIDE + 2, 7], inputs)  # (y=1, x=2): token 7
        tokens_ = hooked_tokens(vit.module, vit.module.blocks[0], inputs)
        (want_cls,) = torch.autograd.grad(tokens_[0, 0, 5] * tokens_[0, 0, 5].detach(), inputs)
    torch.testing.assert_close(gradient, want[0])
    torch.testing.assert_close(point, want_point[0])
    torch.testing.assert_close(cls, want_cls[0])
    assert gradient.abs().sum() > 0 and point.abs().sum() > 0
    assert_untouched(vit.module)


def test_occlusion_of_a_token_channel_matches_occluded_forwards(vit, view):
    result = occlusion.occlusion_map(vit, view, patch=8, stride=8, layer=LAYER, unit=2)
    assert result.drops.shape == (SIZE, SIZE) and result.windows == 16
    inputs = to_batch(view, vit.spec.normalization, vit.device)
    with torch.no_grad():
        base = by_hand(hooked_tokens(vit.module, vit.module.blocks[1], inputs))[0, 2].sum()
        covered = inputs.clone()
        covered[:, :, 8:16, 16:24] = 0.0  # the window at (8, 16), in the model's mean colour
        occluded = by_hand(hooked_tokens(vit.module, vit.module.blocks[1], covered))[0, 2].sum()
    assert result.baseline == pytest.approx(float(base), rel=1e-4, abs=1e-4)
    assert result.drops[10, 20] == pytest.approx(float(base - occluded), rel=1e-3, abs=1e-3)
    assert occlusion.occlusion_map(vit, view, patch=16, stride=16).target.startswith("class ")
    assert occlusion.occlusion_map(vit, view, patch=16, stride=16, layer=CLS, unit=4).drops.shape == (SIZE, SIZE)
    assert_untouched(vit.module)


@pytest.mark.parametrize("mode", ["deconv", "guided"])
def test_deconvnet_and_guided_backprop_say_in_one_line_why_not(vit, view, mode):
    support = backprop.mode_support(vit.module)
    assert support.modes == ("saliency",) and "GELU" in support.reason and len(support.reason.splitlines()) == 1
    with pytest.raises(backprop.UnsupportedModeError) as caught:
        backprop.backward(vit, view, LAYER, 0, mode)
    assert str(caught.value) == support.reason
    assert_untouched(vit.module)


def test_registers_without_a_class_token_are_left_out():
    module = _small_vit(class_token=False, reg_tokens=4, global_pool="avg")
    loaded = wrap_model(module, "vit_reg", input_size=SIZE)
    info = loaded.layer(LAYER)
    assert info.shape == (DIM, SIDE, SIDE) and info.tokens == 4
    assert not any(i.is_class_token for i in loaded.layers)
    inputs = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = by_hand(hooked_tokens(module, module.blocks[1], inputs), prefix=4)
    torch.testing.assert_close(capture(module, inputs, LAYER)[LAYER], want, rtol=0, atol=0)
    with pytest.raises(tokens.TokenError, match="no class token"):
        capture(module, inputs, CLS)  # token 0 is a register here
    assert_untouched(module)


class _Untraceable(VisionTransformer):
    """A timm ViT with data-dependent control flow: torch.fx cannot trace it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) if x.sum() > -1e9 else super().forward(-x)


def test_an_untraceable_vit_offers_its_blocks_as_token_layers(view):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = _Untraceable(img_size=SIZE, patch_size=8, embed_dim=DIM, depth=2, num_heads=2, num_classes=10)
    module.eval().requires_grad_(False)
    loaded = wrap_model(module, "vit_untraceable", input_size=SIZE)
    assert loaded.notice is not None
    layers = {info.name: info for info in loaded.layers}
    assert layers["blocks.1"].shape == (DIM, SIDE, SIDE) and layers["blocks.1"].tokens == 1
    assert layers["blocks.1[cls]"].shape == (DIM,) and layers["blocks.1[cls]"].is_class_token
    inputs = to_batch(view, loaded.spec.normalization, loaded.device)
    got = capture(module, inputs, ["blocks.1", "blocks.1[cls]"])
    with torch.no_grad():
        tokens_ = hooked_tokens(module, module.blocks[1], inputs)
    torch.testing.assert_close(got["blocks.1"], by_hand(tokens_), rtol=0, atol=0)
    torch.testing.assert_close(got["blocks.1[cls]"], tokens_[:, 0], rtol=0, atol=0)
    assert backprop.backward(loaded, view, "blocks.1", 3, "saliency").shape == (3, SIZE, SIZE)
    assert occlusion.occlusion_map(loaded, view, 16, 16, "blocks.1", 3).drops.shape == (SIZE, SIZE)
    assert_untouched(module)


def test_torchvision_vit_and_timm_vit_tiny_are_token_layers_too():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        small = torchvision.models.vision_transformer.VisionTransformer(
            image_size=SIZE, patch_size=8, num_layers=2, num_heads=2, hidden_dim=DIM, mlp_dim=96, num_classes=10)
        tiny = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    for module in (small, tiny):
        module.eval().requires_grad_(False)
    loaded = wrap_model(small, "tv_vit", input_size=SIZE)  # no num_prefix_tokens: one prefix token read from T
    last = "encoder.layers.encoder_layer_1.add_1"
    assert loaded.layer(last).shape == (DIM, SIDE, SIDE) and loaded.layer(last + "[cls]").shape == (DIM,)
    inputs = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = hooked_tokens(small, small.encoder.layers[1], inputs)
    torch.testing.assert_close(capture(small, inputs, last)[last], by_hand(want), rtol=0, atol=0)
    support = backprop.mode_support(small)  # its GELU is inside a leaf module (torchvision's MLP block)
    assert support.modes == ("saliency",) and "GELU" in support.reason
    loaded = wrap_model(tiny, "vit_tiny", input_size=224)
    assert loaded.layer("blocks.11").shape == (192, 14, 14) and loaded.layer("blocks.11.add_1[cls]").shape == (192,)
    assert_untouched(small)
    assert_untouched(tiny)


def test_token_layouts_by_hand():
    assert tokens.layout((197, 768)) == (1, 14)  # ViT-B/16 at 224 px: a class token and 14 × 14 patches
    assert tokens.layout((196, 768)) == (0, 14)
    assert tokens.layout((201, 768), 5) == (5, 14)  # declared: a class token and four registers
    assert tokens.layout((196, 768), 1) == (0, 14)  # patch tokens alone, in a model with a class token
    assert tokens.layout((48, 16)) is None  # (N, D, L) after a flatten: 48 − 36 = 12 is no handful of tokens
    assert tokens.layout((48, 16), 1) is None
    assert tokens.layout((5, 8, 8)) is None
    x = torch.arange(2 * 10 * 3, dtype=torch.float32).reshape(2, 10, 3)  # a class token and 3 × 3 patches
    assert tokens.as_maps(x, 1).shape == (2, 3, 3, 3) and tokens.as_maps(x, 1)[1, 2, 0, 1] == x[1, 2, 2]
    assert tokens.as_maps(x[:, :7]).shape == (2, 7, 3)  # 7 tokens make no grid: unchanged
    assert tokens.split("blocks.1[cls]") == ("blocks.1", True) and tokens.split("blocks.1") == ("blocks.1", False)
