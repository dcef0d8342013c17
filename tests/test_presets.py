"""Named θ (deepvis.presets): Table 1 verbatim, calibrated rows, the later parametrizations, and the names
the pages and the CLI give them."""

from __future__ import annotations

import pytest

from deepvis import presets
from deepvis.settings import Settings


def test_presets_are_table_1():
    table = {1: (0.0, 0.5, 4, 50, 0, 500, "progress", 100.0), 2: (0.3, 0.0, 0, 20, 0, 750, "constant", None),
             3: (1e-4, 1.0, 4, 0, 0, 1000, "constant", None), 4: (0.0, 0.5, 4, 0, 90, 1000, "progress", 1e8)}
    for n, (decay, radius, every, norm, contrib, steps, policy, max_lr) in table.items():
        s = presets.table1_row(n)
        assert (s.decay, s.blur_radius, s.blur_every, s.norm_pct, s.contrib_pct, s.steps, s.lr_policy) == (
            decay, radius, every, norm, contrib, steps, policy)
        if policy == "constant":
            assert s.lr == 100.0
        else:
            assert s.max_lr == max_lr and s.desired_prog == 2.0
    with pytest.raises(ValueError, match="preset must be one of 1, 2, 3, 4"):
        presets.table1_row(5)


def test_names_resolve_to_table1_for_a_model_without_calibrated_rows_and_errors_are_one_line():
    assert presets.resolve("alexnet", "2") == presets.table1_row(2)
    assert presets.name("alexnet", "2") == "Table 1 row 2 (no calibrated rows for alexnet)"
    assert presets.resolve("alexnet", "FOURIER") == presets.PARAM_PRESETS["fourier"]
    with pytest.raises(ValueError, match="a preset is a row 1, 2, 3, 4") as error:
        presets.resolve("alexnet", "7")
    assert "\n" not in str(error.value)
    assert "accentuate" not in presets.choices("alexnet", photo=False)
    assert list(presets.choices("alexnet"))[:4] == ["table1:1", "table1:2", "table1:3", "table1:4"]


def test_a_preset_file_round_trips_and_refuses_incomplete_rows(tmp_path):
    rows = {r: presets.table1_row(r).replace(steps=10 * r) for r in presets.ROWS}
    found = presets.PresetFile("tiny", rows, "judge", 3, 12.5, ("a", "b"), {1: 0.5, 2: 0.25, 3: 0.1, 4: 0.0})
    path = tmp_path / "tiny.json"
    path.write_text(found.to_json())
    assert presets.PresetFile.read(path) == found
    assert presets.resolve("tiny", 3, found) == rows[3] != presets.table1_row(3)
    with pytest.raises(ValueError, match="rows 1, 2, 3 and 4"):
        presets.PresetFile("tiny", {1: Settings()})
