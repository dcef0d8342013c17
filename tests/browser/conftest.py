"""Real-browser fixtures: one Streamlit server and one Chromium for the whole session.

* ``app_url``: ``streamlit run streamlit_app.py`` on a free localhost port (headless,
  file watcher off; address, XSRF, upload cap and usage statistics as
  ``.streamlit/config.toml`` sets them), started once, waited for through
  ``/_stcore/health`` and stopped at the end. Its log goes to
  ``test-output/streamlit-server.log``; every browser test also fails if the server
  logged a traceback while it ran.
* ``browser``: the system Chromium (``/usr/bin/chromium``; Playwright's own browser
  download needs internet access) driven by Playwright, with a fake camera that
  films ``camera.y4m``: the bundled chelsea photo (a cat).
* ``new_page()``: a fresh browser context (its own Streamlit session) and page;
  when a test fails, a screenshot of each of its pages is saved under ``test-output/``.

Tests that need the browser are skipped, with the reason, only when Chromium or
Playwright is missing; ``.ci/run`` installs both, so CI runs them.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
OUTPUT = REPO / "test-output"
CHROMIUM = Path(os.environ.get("DEEPVIS_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
]
CAMERA_SAMPLE = "chelsea"
SERVER_START_S = 120


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    reason = None
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing (install Debian's chromium package, as .ci/run does)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "playwright is not installed (pip install -r requirements-dev.txt)"
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.browser)
            if reason and "browser" in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


# --- the server -------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, url: str, log: Path, process: subprocess.Popen, cache: Path) -> None:
        self.url, self.log, self.process, self.cache = url, log, process, cache

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_text()[-chars:]


def serve(log_path: Path, cache: Path, args: Sequence[str] = (), env: dict[str, str] | None = None) -> Iterator[Server]:
    """``streamlit run streamlit_app.py [-- args]`` on a free port, headless, file watcher off, its log at
    ``log_path`` and its cache at ``cache``; yields the :class:`Server` once healthy, stops it afterwards."""
    port = _free_port()
    command = [sys.executable, "-m", "streamlit", "run", "streamlit_app.py",
               "--server.port", str(port), "--server.headless", "true",
               "--server.fileWatcherType", "none", "--server.runOnSave", "false", *(["--", *args] if args else [])]
    environment = {**(env if env is not None else os.environ), "PYTHONUNBUFFERED": "1", "DEEPVIS_CACHE": str(cache)}
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=environment, start_new_session=True)
    url = f"http://localhost:{port}"
    server = Server(url, log_path, process, cache)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"streamlit exited with status {process.returncode}:\n{server.log_tail()}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.status == 200 and response.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"streamlit did not become healthy in {SERVER_START_S} s:\n{server.log_tail()}")
            time.sleep(0.25)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


@pytest.fixture(scope="session")
def app_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # Address, XSRF, upload cap and usage statistics come from .streamlit/config.toml, so the
    # safety tests (test_06_safety.py) check the configuration users get.
    # Indexes and optimized images go to an empty cache of this test session (``server.cache``).
    OUTPUT.mkdir(exist_ok=True)
    # A run whose page was closed stops 3 s later (30 s by default), so that test_04 can watch it happen.
    yield from serve(OUTPUT / "streamlit-server.log", tmp_path_factory.mktemp("deepvis-cache"),
                     env={**os.environ, "DEEPVIS_ORPHAN_AFTER": "3"})


@pytest.fixture(scope="session")
def app_url(app_server: Server) -> str:
    return app_server.url


@pytest.fixture(autouse=True)
def _no_server_tracebacks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a browser test if the server logged a traceback while it ran."""
    if "app_server" not in request.fixturenames:
        yield
        return
    server: Server = request.getfixturevalue("app_server")
    start = len(server.log_text())
    yield
    new = server.log_text()[start:]
    assert "Traceback" not in new, f"the server logged a traceback during this test:\n{new[-6000:]}"


# --- the browser ------------------------------------------------------------------------

def write_y4m(path: Path, image: Image.Image, width: int = 640, height: int = 480, frames: int = 2) -> None:
    """Write ``image`` (centre-cropped to width:height) as a YUV4MPEG2 4:2:0 video, BT.601 video range."""
    w, h = image.size
    target = width / height
    crop = (round((w - h * target) / 2), 0, round((w + h * target) / 2), h) if w / h > target else \
        (0, round((h - w / target) / 2), w, round((h + w / target) / 2))
    rgb = np.asarray(image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS, box=crop), dtype=np.float64)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    cb = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    cr = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255

    def plane(values: np.ndarray) -> bytes:
        return np.clip(np.round(values), 0, 255).astype(np.uint8).tobytes()

    def half(values: np.ndarray) -> np.ndarray:
        return values.reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3))

    frame = b"FRAME\n" + plane(y) + plane(half(cb)) + plane(half(cr))
    path.write_bytes(f"YUV4MPEG2 W{width} H{height} F30:1 Ip A1:1 C420\n".encode() + frame * frames)


@pytest.fixture(scope="session")
def camera_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import io

    from deepvis.images import sample_bytes

    path = tmp_path_factory.mktemp("camera") / "camera.y4m"
    write_y4m(path, Image.open(io.BytesIO(sample_bytes(CAMERA_SAMPLE))))
    return path


@pytest.fixture(scope="session")
def browser(camera_video: Path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=[*CHROMIUM_ARGS, f"--use-file-for-fake-video-capture={camera_video}"])
        yield chromium
        chromium.close()


@pytest.fixture
def new_page(browser, app_url: str, request: pytest.FixtureRequest) -> Iterator[Callable[..., object]]:
    """Factory: ``new_page()`` opens the app in a fresh context (a new Streamlit session)."""
    from tests.browser.app import track_runs

    contexts, pages = [], []

    def open_page(path: str = "", wait: bool = True):
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, permissions=["camera"])
        context.set_default_timeout(30_000)
        page = context.new_page()
        track_runs(page)
        contexts.append(context)
        pages.append(page)
        if wait:
            page.goto(f"{app_url}/{path}")
        return page

    yield open_page

    call = getattr(request.node, "report_call", None)
    if call is not None and call.failed:
        OUTPUT.mkdir(exist_ok=True)
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
        for number, page in enumerate(pages):
            try:
                page.screenshot(path=str(OUTPUT / f"{stem}-page{number}.png"), full_page=True)
            except Exception as exc:  # a crashed page must not hide the test's own failure
                print(f"screenshot of page {number} failed: {exc}", file=sys.stderr)
    for context in contexts:
        context.close()


# --- reference numbers from the library ---------------------------------------------------

@pytest.fixture(scope="session")
def reference():
    """``reference(data, layer)``: the library's own analysis of a photo, to compare pages with."""
    from deepvis.activations import analyze
    from deepvis.images import decode_image
    from deepvis.models import load_model

    loaded = load_model()

    def analysis(data: bytes, layer: str = loaded.logits_layer):
        return analyze(loaded, decode_image(data), layer)

    analysis.model = loaded
    return analysis
