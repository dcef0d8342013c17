"""The four regularizers on tiny tensors, checked exactly (scipy and numpy as references)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from deepvis import regularizers as reg


def _total_variation(x: torch.Tensor) -> float:
    return float((x[..., 1:, :] - x[..., :-1, :]).abs().sum() + (x[..., :, 1:] - x[..., :, :-1]).abs().sum())


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.5])
def test_blur_equals_scipy_gaussian_filter_per_channel(sigma):
    # 2.5 has a kernel radius of 10, wider than the 7 x 5 image: the reflection must repeat like scipy's.
    x = torch.randn(2, 3, 7, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    expected = np.stack([[gaussian_filter(x[b, c].numpy(), sigma) for c in range(3)] for b in range(2)])
    np.testing.assert_allclose(reg.gaussian_blur(x, sigma).numpy(), expected, rtol=0, atol=1e-12)


def test_blur_keeps_each_channels_mean_and_lowers_total_variation():
    x = torch.randn(1, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 10
    blurred = reg.gaussian_blur(x, 1.0)
    # Symmetric reflection at the border conserves the sum exactly.
    torch.testing.assert_close(blurred.mean(dim=(2, 3)), x.mean(dim=(2, 3)), rtol=0, atol=1e-12)
    assert _total_variation(blurred) < 0.5 * _total_variation(x)


def test_blur_uses_each_rows_own_sigma_and_zero_means_unchanged():
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    out = reg.gaussian_blur(x, [0.0, 1.0, 0.5])
    torch.testing.assert_close(out[0], x[0], rtol=0, atol=0)
    torch.testing.assert_close(out[1:2], reg.gaussian_blur(x[1:2], 1.0), rtol=0, atol=0)
    torch.testing.assert_close(out[2:3], reg.gaussian_blur(x[2:3], 0.5), rtol=0, atol=0)
    assert not torch.equal(out[1], out[2])


def test_blur_schedule_follows_every_and_radius():
    assert [it for it in range(10) if reg.blur_due(1.0, 4, it)] == [0, 4, 8]
    assert not any(reg.blur_due(1.0, 0, it) for it in range(10))
    assert not any(reg.blur_due(0.0, 4, it) for it in range(10))


def test_percentile_matches_numpy_linear_interpolation_per_row():
    values = torch.randn(3, 37, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    pcts = [0.0, 37.5, 90.0]
    expected = [np.percentile(values[i].numpy(), p) for i, p in enumerate(pcts)]
    np.testing.assert_allclose(reg.percentile(values, pcts).numpy(), expected, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="between 0 and 100"):
        reg.percentile(values, 101)


def test_norm_clip_at_50_zeroes_exactly_the_weaker_half_of_the_pixels():
    x = torch.randn(1, 3, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    norms = x[0].pow(2).sum(0).sqrt()
    out = reg.clip_small_norm(x, 50)
    zeroed = (out[0] == 0).all(dim=0)
    assert int(zeroed.sum()) == 18  # half of 36 pixels
    assert zeroed.equal(norms < float(np.median(norms.numpy())))  # the weak half, all three channels
    torch.testing.assert_close(out[0][:, ~zeroed], x[0][:, ~zeroed], rtol=0, atol=0)  # the rest untouched


def test_norm_clip_is_per_row_and_zero_percent_changes_nothing():
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    out = reg.clip_small_norm(x, [0, 25])
    torch.testing.assert_close(out[0], x[0], rtol=0, atol=0)
    assert int((out[1] == 0).all(dim=0).sum()) == 4  # a quarter of 16 pixels


def test_contribution_clip_uses_absolute_channel_sum_of_gradient_times_minus_x():
    # Four pixels of a 2 x 2 image.  Pixel norms: all large except (1, 1).
    x = torch.tensor([[[[3.0, -4.0], [5.0, 0.1]],
                       [[3.0, 4.0], [0.0, 0.1]],
                       [[0.0, 0.0], [0.0, 0.1]]]], dtype=torch.float64)
    g = torch.tensor([[[[1.0, 1.0], [-2.0, 10.0]],
                       [[-1.0, 1.0], [0.0, 10.0]],
                       [[0.0, 0.0], [0.0, 10.0]]]], dtype=torch.float64)
    # sum_c g * -x: (0,0): -3 + 3 = 0; (0,1): 4 - 4 = 0; (1,0): +10; (1,1): -3  -> abs: 0, 0, 10, 3
    expected = torch.tensor([[[0.0, 0.0], [10.0, 3.0]]], dtype=torch.float64)
    torch.testing.assert_close(reg.contribution(x, g), expected, rtol=0, atol=1e-12)
    out = reg.clip_small_contribution(x, g, 50)  # threshold 1.5: the two zero-contribution pixels go
    kept = torch.tensor([[False, False], [True, True]])
    assert (out[0][:, ~kept] == 0).all()
    torch.testing.assert_close(out[0][:, kept], x[0][:, kept], rtol=0, atol=0)
    # Without the absolute value the strongly negative pixel (1, 1) would be the one to go.
    assert float((g * -x).sum(1)[0, 1, 1]) < 0


def test_regularizers_do_not_modify_their_inputs():
    x = torch.randn(1, 3, 5, 5, generator=torch.Generator().manual_seed(7))
    g = torch.randn(1, 3, 5, 5, generator=torch.Generator().manual_seed(8))
    before_x, before_g = x.clone(), g.clone()
    reg.gaussian_blur(x, 1.0)
    reg.clip_small_norm(x, 50)
    reg.clip_small_contribution(x, g, 50)
    assert torch.equal(x, before_x) and torch.equal(g, before_g)
