"""The shape of the house: Streamlit only in the app wing and the pages, no import cycles, short modules.

These read the source as text (ast), so they cost nothing and fail on the first module that breaks a rule.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "deepvis"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _imports(path: Path, name: str) -> set[str]:
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found |= {base} | {f"{base}.{a.name}" for a in node.names}
    return found


def test_streamlit_is_imported_only_by_the_app_wing_and_the_pages():
    offenders = [name for name, path in _modules().items()
                 if not name.startswith("deepvis.app")
                 and any(i.split(".")[0] in ("streamlit", "streamlit_webrtc") for i in _imports(path, name))]
    assert offenders == []


def test_no_import_cycle_among_deepvis_modules():
    modules = _modules()
    edges = {m: {i for i in _imports(p, m) if i in modules and i != m and not modules[i].name == "__init__.py"}
             for m, p in modules.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for module in sorted(modules):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_modules_are_short_and_a_long_one_says_why():
    for path in PACKAGE.rglob("*.py"):
        lines = path.read_text().splitlines()
        assert len(lines) <= 400, f"{path.relative_to(ROOT)} has {len(lines)} lines"
        if len(lines) > 300:
            head = "\n".join(lines[:6])
            assert "Over 300 lines" in head, f"{path.relative_to(ROOT)} ({len(lines)} lines) does not say why"


def test_the_pages_stay_out_of_a_top_level_pages_folder():
    """Streamlit 1.67 treats a `pages/` folder beside the main script as a classic multipage app for the whole
    server until some session reaches the router: a deep link such as /optimization then runs the page file
    bare (no router, no sidebar navigation, no page config).  Its own guidance names `app_pages/` instead."""
    assert not (ROOT / "pages").exists()
    assert sorted(p.name for p in (ROOT / "app_pages").glob("*.py")) == [
        "activations.py", "comparison.py", "optimization.py", "training.py"]
