"""Pictures from tensors: grids, scaling, overlays, PNG."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from deepvis.render import channel_grid, grid_layout, overlay, png_bytes, to_uint8, weight_tiles


def test_grid_layout_maps_pixels_back_to_channels():
    layout = grid_layout(10, 7, 7)
    assert layout.cols == 4 and layout.rows == 3 and layout.tile == 28  # 7px maps enlarged 4x
    for channel in range(10):
        y, x = layout.origin(channel)
        assert layout.channel_at(y, x) == channel
        assert layout.channel_at(y + layout.tile - 1, x + layout.tile - 1) == channel
    y, x = layout.origin(9)
    assert layout.channel_at(y, x + layout.tile + layout.pad) is None  # empty slot after the last tile


def test_per_channel_scaling_stretches_each_channel_and_shared_scaling_does_not():
    act = torch.zeros(3, 4, 4)
    act[0, 0, 0] = 1.0  # weak channel
    act[1, 1, 1] = 100.0  # strong channel; channel 2 is dead (all zero)
    grid, layout = channel_grid(act, "channel", numbers=False)
    per = [grid[layout.origin(c)[0]:layout.origin(c)[0] + layout.tile,
                layout.origin(c)[1]:layout.origin(c)[1] + layout.tile] for c in range(3)]
    assert per[0].max() == 255 and per[1].max() == 255 and per[2].max() == 0
    shared, layout = channel_grid(act, "layer", numbers=False)
    y, x = layout.origin(0)
    assert shared[y:y + layout.tile, x:x + layout.tile].max() == 3  # 1/100 of the layer's range
    with pytest.raises(ValueError, match="scaling"):
        channel_grid(act, "global")


def test_numbers_and_highlight():
    act = torch.zeros(12, 6, 6)
    grid, layout = channel_grid(act, highlight=2)
    plain, _ = channel_grid(act, numbers=False)
    assert grid.ndim == 2 and grid.shape == plain.shape
    y, x = layout.origin(2)
    assert grid[y - 1, x + layout.tile // 2] == 255 and plain[y - 1, x + layout.tile // 2] == 40  # frame
    y, x = layout.origin(11)
    label = grid[y:y + 12, x:x + 16]
    assert (label == 255).sum() > 10 and (label == 0).sum() > 10  # "11" in white on a black box
    assert not (plain[y:y + 12, x:x + 16] == 255).any()
    assert np.array_equal(grid[y + 14:y + layout.tile, x:x + layout.tile], plain[y + 14:y + layout.tile, x:x + layout.tile])


def test_to_uint8_and_overlay():
    assert to_uint8(np.array([2.0, 4.0, 6.0])).tolist() == [0, 128, 255]
    assert to_uint8(np.zeros(3)).tolist() == [0, 0, 0]
    photo = np.full((8, 8, 3), 100, np.uint8)
    blended = overlay(photo, np.zeros((2, 2)), alpha=0.0)
    assert np.array_equal(blended, photo)


def test_weight_tiles_are_symmetric_about_zero():
    w = torch.zeros(2, 3, 3, 3)
    w[0, 0, 0, 0], w[0, 2, 0, 0] = 1.0, -1.0
    tiles, layout = weight_tiles(w)
    y, x = layout.origin(0)
    assert tuple(tiles[y, x]) == (255, 128, 0)  # +1 red, 0 green, -1 blue
    assert tuple(tiles[layout.origin(1)]) == (128, 128, 128)


def test_png_is_lossless():
    image = np.random.default_rng(0).integers(0, 256, (17, 23, 3), dtype=np.uint8)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png_bytes(image)))), image)
