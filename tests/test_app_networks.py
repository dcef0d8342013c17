"""The app with the server's own network (DEEPVIS_MODELS): listed first, loaded, weights uploaded or refused."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from deepvis import models_file, networks
from tests.test_networks import NETS

APP = str(Path(__file__).resolve().parents[1] / "streamlit_app.py")
NAME = "apptest_digits"  # the shared model cache outlives a test: a name no other test uses


@pytest.fixture
def served(tmp_path, monkeypatch) -> Path:
    (tmp_path / "nets.py").write_text(NETS)
    (tmp_path / "models.toml").write_text(
        f'[models.{NAME}]\ntitle = "Digits (test)"\nmodel = "nets.py:Net"\ninput = "1x28x28"\nmean = [0.5]\n'
        "std = [0.5]\n")
    monkeypatch.setenv(models_file.ENV, str(tmp_path / "models.toml"))
    return tmp_path


def _state_dict_bytes(tmp_path: Path, seed: int) -> bytes:
    loaded = networks.load(str(tmp_path / "nets.py") + ":Net", "random", "cpu", seed, input="1x28x28")
    buffer = io.BytesIO()
    torch.save(loaded.module.state_dict(), buffer)
    return buffer.getvalue()


def test_the_servers_network_comes_first_loads_and_takes_an_uploaded_state_dict(served):
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["model"] = NAME  # a link to it is not "an unknown model"
    at.run()
    assert not at.exception and not at.error and not at.warning
    picker = at.selectbox(key="model_name")
    assert picker.options[0] == "Digits (test)" and "EfficientNet-Lite0 (embedded)" in picker.options[1:]
    assert picker.value == NAME
    assert any("Digits (test)" in c.value and "1x28x28" in c.value for c in at.sidebar.caption)
    assert any("one tile each in channel order" in c.value for c in at.caption)  # the Activations page's grid

    at.radio(key=f"model_weights_{NAME}").set_value("upload").run()
    assert not at.exception and not at.error
    at.file_uploader(key="model_upload").upload("digits.pt", _state_dict_bytes(served, 3),
                                                "application/octet-stream").run()
    assert not at.exception and not at.error
    assert any("uploaded digits.pt" in c.value for c in at.sidebar.caption)

    whole = io.BytesIO()
    torch.save(torch.nn.Linear(2, 2), whole)
    at.file_uploader(key="model_upload").upload("whole.pt", whole.getvalue(), "application/octet-stream").run()
    assert not at.exception
    assert len(at.error) == 1 and "pickled object" in at.error[0].value and "\n" not in at.error[0].value
    assert any("Digits (test)" in c.value and "default weights" in c.value for c in at.sidebar.caption)

    at.radio(key=f"model_weights_{NAME}").set_value("random").run()
    assert not at.exception and not at.error
    assert any("random weights" in c.value for c in at.sidebar.caption)


def test_a_bad_models_file_is_one_error_and_the_registry_still_works(tmp_path, monkeypatch):
    (tmp_path / "models.toml").write_text(f'[models.{NAME}]\nmodel = "nets.py:Net"\ncolour = "red"\n')
    monkeypatch.setenv(models_file.ENV, str(tmp_path / "models.toml"))
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception
    assert len(at.error) == 1 and "unknown field 'colour'" in at.error[0].value
    assert at.selectbox(key="model_name").value == "efficientnet_lite0"
