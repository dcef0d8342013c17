"""The public API (deepvis/__init__.py): every name resolves, importing it is light, the README's example runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import deepvis

ROOT = Path(__file__).resolve().parents[1]


def test_every_public_name_resolves_and_is_listed():
    for name in deepvis.__all__:
        assert getattr(deepvis, name) is not None, name
    assert set(deepvis.__all__) <= set(dir(deepvis))
    try:
        deepvis.nothing_here
    except AttributeError as error:
        assert "nothing_here" in str(error)
    else:
        raise AssertionError("an unknown name must raise AttributeError")


def test_no_public_name_shadows_a_submodule():
    """A function named like a submodule would be replaced by the module once anything imports it."""
    modules = {p.stem for p in (ROOT / "deepvis").glob("*.py")} | {p.name for p in (ROOT / "deepvis").iterdir()
                                                                  if p.is_dir()}
    assert not set(deepvis.__all__) & modules


def test_importing_deepvis_loads_no_torch():
    code = "import sys, deepvis; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.strip() == "False"


def test_high_level_functions_take_the_loaded_model_first():
    import inspect

    for name in ("analyze", "backward", "occlude", "conv_weights", "receptive_field", "resolve_unit", "visualize",
                 "visualize_steps", "assess", "build_index"):
        first = next(iter(inspect.signature(getattr(deepvis, name)).parameters.values()))
        assert first.name in ("loaded", "model"), (name, first.name)


def test_the_readme_example_runs():
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- api-example -->\s*```python\n(.*?)```", readme, re.S)
    assert match, "README.md has no <!-- api-example --> python block"
    code = match.group(1)
    assert 5 <= len(code.strip().splitlines()) <= 16
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip()


def test_the_readme_own_network_example_runs_and_prints_what_it_says():
    import textwrap

    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- own-network-example -->\s*```python\n(.*?)```", readme, re.S)
    assert match, "README.md has no <!-- own-network-example --> python block"
    code = textwrap.dedent(match.group(1))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    said = re.search(r"# (\(.*\))\s*$", code.strip().splitlines()[-1]).group(1)
    assert result.stdout.strip() == said  # the comment in the README is what it prints


def test_the_readme_training_example_records_the_run_it_says(tmp_path):
    import textwrap

    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- training-example -->\s*```python\n(.*?)```", readme, re.S)
    assert match, "README.md has no <!-- training-example --> python block"
    code = textwrap.dedent(match.group(1))
    assert sum("# deepvis: line" in line for line in code.splitlines()) == 2
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    said = re.search(r"# (\[.*\])\s*$", code.strip().splitlines()[-1]).group(1)
    assert result.stdout.strip() == said
    assert (tmp_path / "runs" / "mine" / "run.json").exists()
