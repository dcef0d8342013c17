"""The safety defaults of .streamlit/config.toml, checked on the running server.

The session server is started without overriding them, so these are what a user gets.
"""

from __future__ import annotations

import socket
import urllib.error
import urllib.parse
import urllib.request

import pytest
from playwright.sync_api import expect

from deepvis.images import sample_bytes
from tests.browser import app


def _external_address() -> str | None:
    """This machine's address on its default route (no packet is sent), if it has one."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.123", 9))  # TEST-NET-1: never routed anywhere real
            address = probe.getsockname()[0]
    except OSError:
        return None
    return None if address.startswith("127.") else address


def test_server_listens_on_localhost_only(app_url: str) -> None:
    port = urllib.parse.urlsplit(app_url).port
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    address = _external_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to try")
    with pytest.raises(OSError):
        with socket.create_connection((address, port), timeout=5):
            pass


def test_upload_without_xsrf_token_is_refused(app_url: str) -> None:
    """With XSRF protection on, a cross-site upload (no token) gets 403; with it off, the
    same request reaches the upload handler and fails later with 400 (invalid session)."""
    body = b"--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\n\r\nabc\r\n--x--\r\n"
    request = urllib.request.Request(f"{app_url}/_stcore/upload_file/some-session/some-file", data=body,
                                     method="PUT", headers={"Content-Type": "multipart/form-data; boundary=x"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 403


def test_page_makes_no_requests_beyond_this_server(new_page, app_url: str) -> None:
    """No usage statistics, fonts, or anything else from the internet: a closed network works."""
    page = new_page(wait=False)
    hosts = set()
    page.on("request", lambda request: hosts.add(urllib.parse.urlsplit(request.url).hostname))
    page.goto(app_url)
    expect(app.prediction_chart(page)).to_be_visible(timeout=120_000)
    app.choose_source(page, "Upload")
    app.upload(page, "rocket.jpg", sample_bytes("rocket"), "image/jpeg")
    app.wait_for_new_view(page, None)
    hosts.discard(None)  # data: and blob: URLs
    assert hosts == {"localhost"}, f"the page contacted {sorted(hosts)}"
