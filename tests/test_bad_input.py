"""Odd and hostile uploads (tests/corpus.py) through decode_image and preprocess.

Each case is either decoded correctly (RGB, right way up, right size, right colours)
and then preprocessed into a finite model input, or refused with a one-line
ImageDecodeError that says what is wrong.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from deepvis.images import ImageDecodeError, decode_image, model_view, preprocess
from deepvis.models import REGISTRY
from tests import corpus

LITE = REGISTRY["efficientnet_lite0"]
ALEX = REGISTRY["alexnet"]


def _pixel(image: Image.Image, fx: float, fy: float) -> np.ndarray:
    width, height = image.size
    x, y = min(int(fx * width), width - 1), min(int(fy * height), height - 1)
    return np.asarray(image.getpixel((x, y)), dtype=int)


def _assert_one_line(message: str) -> None:
    assert message.strip(), "empty error message"
    assert "\n" not in message.strip(), f"message is not one line: {message!r}"
    assert "Traceback" not in message and len(message) < 240, message


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=corpus.KNOWN_BUGS[n])) if n in corpus.KNOWN_BUGS else n
    for n in corpus.NAMES])
def test_decode_corpus(name: str) -> None:
    case = corpus.get(name)
    if not case.ok:
        with pytest.raises(ImageDecodeError) as info:
            decode_image(case.data)
        message = str(info.value)
        _assert_one_line(message)
        assert any(word in message.lower() for word in case.error_words), (
            f"{case.what}: message {message!r} mentions none of {case.error_words}")
        return

    image = decode_image(case.data)
    assert image.mode == "RGB", case.what
    assert image.size == case.size, f"{case.what}: got {image.size}, expected {case.size}"
    for fx, fy, expected in case.probes:
        got = _pixel(image, fx, fy)
        assert np.abs(got - np.array(expected)).max() <= case.tol, (
            f"{case.what}: pixel at ({fx}, {fy}) is {got.tolist()}, expected {expected} +- {case.tol}")
    if case.gray:
        array = np.asarray(image, dtype=int)
        assert (array[..., 0] == array[..., 1]).all() and (array[..., 1] == array[..., 2]).all()

    for spec in (LITE, ALEX):
        batch = preprocess(image, spec)
        assert batch.shape == (1, 3, spec.input_size, spec.input_size)
        assert batch.dtype == torch.float32 and torch.isfinite(batch).all()
        low = min((0 - m) / s for m, s in zip(spec.normalization.mean255, spec.normalization.std255))
        high = max((255 - m) / s for m, s in zip(spec.normalization.mean255, spec.normalization.std255))
        assert low - 1e-5 <= batch.min().item() and batch.max().item() <= high + 1e-5


@pytest.mark.parametrize("orientation", [2, 3, 6, 8])
def test_exif_orientation_survives_preprocessing(orientation: int) -> None:
    """The model sees the photo the right way up: red (green corner) above blue."""
    image = decode_image(corpus.get(f"exif_orientation_{orientation}").data)
    view = model_view(image, LITE).astype(int)  # (224, 224, 3), centre square of the 60 x 40 photo
    top, bottom = view[20:90].reshape(-1, 3).mean(0), view[140:200].reshape(-1, 3).mean(0)
    assert top[0] > 150 and top[2] < 80, f"top of the model view is {top}, expected red"
    assert bottom[2] > 150 and bottom[0] < 80, f"bottom of the model view is {bottom}, expected blue"
    batch = preprocess(image, LITE)
    expected = torch.from_numpy(view).permute(2, 0, 1).float().sub(127).div(128)
    torch.testing.assert_close(batch[0], expected, rtol=0, atol=1e-6)


def test_large_photo_respects_max_side() -> None:
    image = decode_image(corpus.get("photo_8000x6000").data, max_side=512)
    assert image.size == (512, 384)
    assert np.abs(_pixel(image, 0.25, 0.25) - np.array(corpus.RED)).max() <= 20


# The crafted files really are what the corpus says; otherwise a passing decode test
# could be checking a plain 8-bit RGB file by mistake.
def _opened(name: str) -> Image.Image:
    return Image.open(io.BytesIO(corpus.get(name).data))


CLAIMS = {
    "png16_gray": lambda: _opened("png16_gray").mode == "I;16",
    "png16_rgb": lambda: corpus.get("png16_rgb").data[24:26] == b"\x10\x02",  # IHDR bit depth 16, colour type 2
    "cmyk_jpeg": lambda: _opened("cmyk_jpeg").mode == "CMYK",
    "palette_transparent": lambda: _opened("palette_transparent").mode == "P"
    and "transparency" in _opened("palette_transparent").info,
    "la_png": lambda: _opened("la_png").mode == "LA",
    "rgba_png": lambda: _opened("rgba_png").mode == "RGBA",
    "animated_gif": lambda: getattr(_opened("animated_gif"), "n_frames", 1) == 3,
    "exif_orientation_6": lambda: _opened("exif_orientation_6").getexif().get(0x0112) == 6
    and _opened("exif_orientation_6").size == (40, 60),
    "grayscale_jpeg": lambda: _opened("grayscale_jpeg").mode == "L",
    "bilevel_png": lambda: _opened("bilevel_png").mode == "1",
    "photo_8000x6000": lambda: _opened("photo_8000x6000").size == (8000, 6000),
    "strip_4000x20": lambda: _opened("strip_4000x20").size == (4000, 20),
    "png_bomb": lambda: corpus.get("png_bomb").data[16:24] == (50000).to_bytes(4, "big") * 2
    and len(corpus.get("png_bomb").data) < 10_000,
}


@pytest.mark.parametrize("name", sorted(CLAIMS))
def test_corpus_files_are_what_they_claim(name: str) -> None:
    assert CLAIMS[name](), corpus.get(name).what


# --- the whole corpus through the Activations page (AppTest, one session) ---------------

def test_activations_page_handles_every_corpus_file_in_one_session(lite0) -> None:
    """Each refused file gives exactly one one-line st.error and no exception, and the next
    good upload in the same session works; each accepted file gets the library's predictions."""
    import json
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from deepvis.activations import analyze

    def labels(at: AppTest) -> list[str]:
        charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
        top5 = [c for c in charts if "Top-5" in json.dumps(c.get("layout", {}).get("title", ""))]
        assert len(top5) == 1, "no prediction chart on the page"
        return list(top5[0]["data"][0]["y"])[::-1]

    def expected_labels(data: bytes) -> list[str]:
        layer = lite0.logits_layer
        return [p.label for p in analyze(lite0, decode_image(data), layer).predictions]

    app_path = str(Path(__file__).resolve().parents[1] / "streamlit_app.py")
    at = AppTest.from_file(app_path, default_timeout=120).run()
    assert not at.exception
    at.radio(key="act_source").set_value("Upload").run()
    uploader = lambda: at.file_uploader(key="act_upload")  # noqa: E731 (fresh handle after each run)
    good = corpus.photo_bytes()
    good_labels = expected_labels(good)
    problems = []
    for name in corpus.NAMES:
        case = corpus.get(name)
        uploader().upload(case.filename, case.data, "application/octet-stream").run()
        if at.exception:
            problems.append(f"{name}: exception {at.exception[0].value}")
            continue
        errors = [e.value for e in at.error]
        if case.ok:
            if errors:
                problems.append(f"{name}: refused with {errors}")
            elif labels(at) != expected_labels(case.data):
                problems.append(f"{name}: page predictions {labels(at)} differ from the library's")
            continue
        if len(errors) != 1 or "\n" in errors[0].strip():
            problems.append(f"{name}: expected one one-line error, got {errors}")
        elif name not in corpus.KNOWN_BUGS and not any(w in errors[0].lower() for w in case.error_words):
            problems.append(f"{name}: error {errors[0]!r} mentions none of {case.error_words}")
        if at.get("plotly_chart"):
            problems.append(f"{name}: refused, but a chart is still shown")
        uploader().upload("next.jpg", good, "image/jpeg").run()
        if at.exception or at.error or labels(at) != good_labels:
            problems.append(f"{name}: the next good upload did not work ({[e.value for e in at.error]})")
    assert not problems, "\n".join(problems)


# --- the command line ---------------------------------------------------------------------

def test_cli_refuses_every_bad_file_with_one_line(tmp_path, capsys) -> None:
    """``deepvis predict`` / ``activations`` on each refused corpus file: exit 2, nothing on
    stdout, exactly one line on stderr that names the problem (in-process, so it is quick)."""
    from deepvis.cli import main

    problems = []
    for name in corpus.NAMES:
        case = corpus.get(name)
        if case.ok:
            continue
        path = tmp_path / case.filename
        path.write_bytes(case.data)
        for argv in (["predict", str(path)], ["activations", str(path), "--layer", "_blocks.3"]):
            try:
                status = main(argv)
            except BaseException as exc:  # noqa: BLE001 - any escape is the failure being tested
                problems.append(f"{name} {argv[0]}: raised {exc!r}")
                continue
            out, err = capsys.readouterr()
            lines = err.strip().splitlines()
            if status != 2 or out or len(lines) != 1:
                problems.append(f"{name} {argv[0]}: status {status}, stdout {out[:80]!r}, stderr {err!r}")
            elif name not in corpus.KNOWN_BUGS and not any(w in lines[0].lower() for w in case.error_words):
                problems.append(f"{name} {argv[0]}: {lines[0]!r} mentions none of {case.error_words}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", ["png_bomb", "missing"])
def test_cli_process_exits_with_one_line_and_no_traceback(tmp_path, name: str) -> None:
    """The real ``python -m deepvis predict`` process, as a person runs it."""
    import subprocess
    import sys
    from pathlib import Path

    if name == "missing":
        path, words = tmp_path / "no such photo.jpg", ("cannot read", "no such file")
    else:
        case = corpus.get(name)
        path, words = tmp_path / case.filename, case.error_words
        path.write_bytes(case.data)
    done = subprocess.run([sys.executable, "-m", "deepvis", "predict", str(path)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], timeout=300, stdin=subprocess.DEVNULL)
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0 and done.stdout == ""
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert any(word in lines[0].lower() for word in words), lines[0]
