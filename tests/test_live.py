"""Live video, library level: a frame in, the grid and top-5 out, from several threads at once; the meter."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from deepvis import live
from deepvis.activations import analyze
from deepvis.render import channel_grid

LAYER = "_blocks.9._swish_1"


def test_a_frame_gives_the_grid_and_top5_of_the_still_analysis(lite0, photos):
    frame = photos["chelsea"]
    result = live.analyze_frame(lite0, frame, LAYER, unit=7)
    from PIL import Image

    still = analyze(lite0, Image.fromarray(frame), LAYER, folded=True)  # the live view's forward pass
    plain = analyze(lite0, Image.fromarray(frame), LAYER)  # a still photo's: the same classes and values
    assert [p.label for p in result.analysis.predictions] == [p.label for p in plain.predictions]
    np.testing.assert_allclose(result.analysis.activation.numpy(), plain.activation.numpy(), rtol=1e-4, atol=1e-4)
    assert "cat" in result.analysis.predictions[0].label  # scikit-image's chelsea is a tabby cat
    grid, layout = channel_grid(still.activation, "channel", numbers=False, highlight=7)
    np.testing.assert_array_equal(result.grid, grid)
    assert result.layout == layout and result.seconds > 0


def test_frames_from_several_threads_each_get_their_own_result(lite0, photos):
    frames = [photos["chelsea"], photos["coffee"], photos["astronaut"], photos["chelsea"][::-1].copy()]
    alone = [live.analyze_frame(lite0, f, LAYER) for f in frames]
    results: list = [None] * 8
    start = threading.Barrier(8)

    def work(i: int) -> None:
        start.wait()
        results[i] = live.analyze_frame(lite0, frames[i % 4], LAYER)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, result in enumerate(results):
        expected = alone[i % 4]
        assert [p.label for p in result.analysis.predictions] == [p.label for p in expected.analysis.predictions]
        np.testing.assert_allclose(result.analysis.activation.numpy(), expected.analysis.activation.numpy(),
                                   rtol=1e-5, atol=1e-5)
    assert results[0].analysis.predictions[0].label != results[1].analysis.predictions[0].label


def test_bad_frames_and_ice_settings_are_one_line_errors(lite0, monkeypatch):
    with pytest.raises(live.LiveError, match="uint8 RGB"):
        live.analyze_frame(lite0, np.zeros((10, 10), np.uint8), LAYER)
    monkeypatch.delenv(live.ICE_ENV, raising=False)
    assert live.ice_servers() == []  # offline by default: no STUN, no TURN
    monkeypatch.setenv(live.ICE_ENV, '[{"urls": "stun:example.org:3478"}]')
    assert live.ice_servers() == [{"urls": "stun:example.org:3478"}]
    monkeypatch.setenv(live.ICE_ENV, "stun:example.org")
    with pytest.raises(live.LiveError, match="not JSON"):
        live.ice_servers()


def test_meter_counts_rate_latency_and_drops_by_hand():
    meter = live.Meter()
    # Frames captured every 0.1 s (browser clock starts at 0), arriving 5.0 s later on this clock (+ jitter).
    for k in range(5):
        captured = 0.1 * k
        meter.arrived(captured, received=2 if k == 3 else 1, now=5.0 + captured + (0.02 if k == 2 else 0.0))
        meter.drawn(captured, now=5.0 + captured + 0.05)
    assert meter.fps == pytest.approx(10.0)  # 5 frames drawn over 0.4 s
    assert meter.latency_ms == pytest.approx(50.0)  # each drawn 50 ms after its fastest-possible arrival
    assert meter.frames == 5 and meter.dropped == 1
    assert meter.label.startswith("10.0 frames/s · latency 50 ms")
