"""The atlas that ships in the package for the embedded model: every unit of the Activations page's default layer,
each with its optimized image under the calibrated row 3 from seed 0, within the 10 MB budget, and shown on the
first click of any unit with no button to press."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from deepvis import atlas, atlas_bundle, patterns, presets
from deepvis.atlas_pictures import field_only, load_optimized
from deepvis.collection import model_key
from deepvis.targets import Target
from tests.app_media import record_media

APP = str(Path(__file__).resolve().parents[1] / "streamlit_app.py")
BUDGET = 10 * 2**20  # bytes, the whole folder as it goes into the wheel
DEAD = {11, 180, 300, 413, 419, 513, 671}  # the default layer's units whose depthwise weights are ~0


@pytest.fixture(scope="module")
def shipped() -> Path:
    folder = atlas_bundle.SHIPPED / "efficientnet_lite0"
    assert folder in atlas_bundle.shipped(), "the embedded model's atlas is missing from deepvis/atlases"
    return folder


def test_it_covers_every_unit_of_the_default_layer_under_row_3_from_seed_0(shipped, lite0):
    made = atlas.manifest(shipped)
    assert made["model"]["key"] == model_key(lite0)
    layer = lite0.default_layer
    assert list(made["layers"]) == [layer]
    channels = made["layers"][layer][0]
    assert channels == 672
    plan = made["optimize"]
    assert plan["settings"] == presets.resolve(lite0, "3").to_dict() and plan["seed"] == 0
    folder = shipped / "optimized" / layer
    assert sorted(int(p.name.split(".")[0]) for p in folder.glob("*.json")) == list(range(channels))
    assert sorted(int(p.name.split(".")[0]) for p in folder.glob("*.field.jpg")) == list(range(channels))
    assert not (shipped / "work").exists() and not list(shipped.rglob("*.npz"))
    size = plan["size"]
    for unit in range(channels):
        found = load_optimized(shipped, layer, unit)
        assert found is not None and found.x.shape == (size, size, 3), unit
        assert field_only(shipped, layer, unit)
        box = json.loads((folder / f"{unit}.json").read_text())["box"]
        assert tuple(box) == patterns.field_of(lite0, Target(layer, unit), size), unit
    # Every unit that can turn on did (redirected gradients): objective 0 only where the depthwise weights that
    # feed the unit are ~0 (1e-7 and below; a live unit's are about 0.1-0.3), so nothing can.
    weights = dict(lite0.module.named_modules())["_blocks.9._depthwise_conv"].weight.detach().flatten(1)
    dead = {u for u in range(channels) if float(weights[u].abs().max()) < 1e-6}
    assert dead == DEAD
    assert {u for u in range(channels) if load_optimized(shipped, layer, u).objective == 0} == dead
    # The pictures are not one picture: most units draw something of their own.
    fields = [load_optimized(shipped, layer, unit).x for unit in range(0, channels, 37)]
    assert len({f.tobytes() for f in fields}) == len(fields)
    total = sum(p.stat().st_size for p in shipped.rglob("*") if p.is_file())
    assert total <= BUDGET, f"{total / 2**20:.1f} MB"


def test_the_first_click_on_any_unit_shows_its_image_at_once(shipped, lite0, tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPVIS_CACHE", str(tmp_path))  # nothing optimized on this machine before
    monkeypatch.delenv("DEEPVIS_ATLAS", raising=False)
    pixels = record_media(monkeypatch)
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception
    layer = at.selectbox(key="act_layer_efficientnet_lite0").value
    assert layer == lite0.default_layer and at.selectbox(key="act_preset").value == "3"
    for unit in (0, 671, 333, 11):  # 671 and 11: dead units (their depthwise weights are ~0)
        at.number_input(key="act_unit").set_value(unit).run()
        assert not at.exception
        assert not any(b.label.startswith("Optimize unit") for b in at.button), unit
        assert any(c.value.startswith("Precomputed: from the atlas shipped with deepvis") for c in at.caption)
        (image,) = [img for img in at.get("image") if img.captions and img.captions[0].startswith("Optimized (")]
        found = load_optimized(shipped, layer, unit)
        said = any(c.value.startswith("Its objective stayed 0") for c in at.caption)
        assert said == (found.objective == 0) and said == (unit in DEAD), unit
        assert f"objective {found.objective:.3g}" in image.captions[0]
        want = patterns.shown(found)
        got = pixels(image.value[0])
        assert got.shape[:2] == want.shape[:2] and np.abs(got.astype(int) - want.astype(int)).max() <= 1, unit
    # Pattern mode's grid: every channel's image at once, none to optimize.
    at.toggle(key="act_patterns").set_value(True).run()
    assert not at.exception
    assert "672 of the 672 images are precomputed: from the atlas shipped with deepvis." in [c.value for c in at.caption]
    assert not any(b.label.startswith("Optimize the") for b in at.button)


def test_its_listing_names_no_folder_of_the_building_machine_and_resolves_here(shipped, lite0, tmp_path):
    import hashlib

    from deepvis import collection as coll

    text = (shipped / "collection.tsv").read_text()
    names = [line.split("\t")[0] for line in text.splitlines()]
    assert len(names) == 17 and all("/" not in n for n in names)  # bare names of the samples, no venv path
    assert atlas.manifest(shipped)["collection"]["sha256"] == hashlib.sha256(text.encode()).hexdigest()
    here = {Path(e.path).name: e.path for e in coll.default_collection()}
    hits = atlas.top(shipped, lite0.default_layer, 5, 9)
    assert hits and all(h.path == here[Path(h.path).name] and Path(h.path).is_file() for h in hits)
    # A new build of the default collection writes bare names too, and reads them back as this machine's paths.
    out = tmp_path / "atlas"
    from tests.helpers import drain

    drain(atlas.build(lite0, "samples", [lite0.logits_layer], out, k=2, shard=32, batch=8))
    written = [line.split("\t")[0] for line in (out / "collection.tsv").read_text().splitlines()]
    assert sorted(written) == sorted(here) and all("/" not in n for n in written)
    assert all(Path(h.path).is_file() for h in atlas.top(out, lite0.logits_layer, 0, 2))
