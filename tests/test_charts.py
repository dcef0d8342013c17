"""The objective curves: a trailing mean over the faint per-iteration line, in the figure and the light picture."""

from __future__ import annotations

import numpy as np

from deepvis import charts


def test_trailing_mean_by_hand():
    np.testing.assert_allclose(charts.trailing_mean(np.array([1.0, 2.0, 3.0, 4.0]), window=2), [1.0, 1.5, 2.5, 3.5])
    np.testing.assert_allclose(charts.trailing_mean(np.array([4.0, 0.0, 8.0]), window=5), [4.0, 2.0, 4.0])
    # An alternating swing of ±5 around a rising trend: the mean of 20 follows the trend, within half a swing.
    steps = np.arange(200)
    noisy = 0.1 * steps + 5 * (-1) ** steps
    smooth = charts.trailing_mean(noisy)
    assert smooth.shape == noisy.shape
    np.testing.assert_allclose(smooth[20:], 0.1 * (steps[20:] - 9.5), atol=0.5)
    assert np.abs(np.diff(smooth[20:])).max() < 0.2 < np.abs(np.diff(noisy)).min()


def test_faint_is_the_colour_at_a_third():
    assert charts._faint("#1f77b4") == "rgba(31, 119, 180, 0.35)"
