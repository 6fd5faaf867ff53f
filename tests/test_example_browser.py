"""The example's page, driven in a real headless Chromium.

Needs Debian's ``chromium`` (``apt-get install chromium``) and Playwright for
Python (``pip install playwright``; its own browser download is not used).
Under CI (``CI`` set) a missing one fails the test; elsewhere it skips it.

With ``EXAMPLE_SCREENSHOT=1`` the test saves a picture of the page to
``docs/_static/example-page.png``.
"""

import os
import queue
import re
import shutil
import signal
import struct
import subprocess
import threading
import time
import urllib.parse
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_example import ROOT, RUN, example_environ, processes_of

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = ROOT / "docs" / "_static" / "example-page.png"
START_TIMEOUT = 300
TRANSFER_TIMEOUT_MS = 60_000


def missing(reason: str) -> None:
    """Fail under CI, where the browser must be installed; skip elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def chromium_path() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.access(path, os.X_OK):
        missing("Chromium is not installed: apt-get install -y chromium")
    return path


def sync_playwright() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("Playwright for Python is not installed: pip install playwright")
    return sync_playwright()


def make_png(red: int, green: int, blue: int, size: int = 48) -> bytes:
    """Return a *size* x *size* PNG shaded from the given colour to white."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = bytearray()
    for y in range(size):
        rows.append(0)
        for x in range(size):
            mix = (x + y) / (2 * size)
            rows += bytes(int(c + (255 - c) * mix) for c in (red, green, blue))
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(rows)))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def example_url(tmp_path: Path) -> Iterator[str]:
    """Run the example's worker and server; yield the site's address."""
    var_dir = (tmp_path / "var").resolve()
    process = subprocess.Popen(
        ["bash", str(RUN), "--no-demo"],
        env=example_environ(var_dir),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    output: list[str] = []
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail("the example did not start:\n" + "".join(output))
            output.append(line)
            found = re.search(r"Open (http://127\.0\.0\.1:\d+/)", line)
            if found:
                break
            if process.poll() is not None and lines.empty():
                pytest.fail("the example stopped:\n" + "".join(output))
        yield found.group(1)
    finally:
        # run.sh stops its worker and server on SIGTERM.
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        assert processes_of(var_dir) == [], "run.sh left its worker or server running"


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310
        return response.read()  # type: ignore[no-any-return]


@pytest.mark.slow
def test_page_shows_uploads_move_from_local_to_remote(
    example_url: str, tmp_path: Path
) -> None:
    executable = chromium_path()
    manager = sync_playwright()
    from playwright.sync_api import expect

    files = {
        "harbour.png": make_png(37, 99, 235),
        "meadow.png": make_png(16, 185, 129),
        "notes.txt": b"Saved locally first, moved by the worker.\n",
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)

    with manager as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = browser.new_page(viewport={"width": 1180, "height": 720})
            page.goto(example_url)
            expect(page.locator("h1")).to_have_text("Queued storage gallery")

            page.set_input_files(
                "input[type=file]", [str(tmp_path / name) for name in files]
            )
            with page.expect_navigation():
                page.click("form.upload-form button[type=submit]")

            rows = page.locator("tr.upload")
            expect(rows).to_have_count(3)
            row = rows.filter(has_text="harbour.png")

            # Transfers wait a moment before they start, so the first state the
            # page shows is the local one.
            expect(row.locator(".served-from")).to_have_text("local")
            local_href = row.locator("a.url").get_attribute("href")
            assert local_href is not None and "/media/local/" in local_href
            assert (
                fetch(urllib.parse.urljoin(example_url, local_href))
                == (files["harbour.png"])
            )

            expect(row).to_have_attribute(
                "data-status", "transferred", timeout=TRANSFER_TIMEOUT_MS
            )
            expect(row.locator(".badge")).to_have_text("remote")
            expect(row.locator(".served-from")).to_have_text("remote")
            href = row.locator("a.url").get_attribute("href")
            assert href is not None and "/media/remote/" in href
            remote_copy = fetch(urllib.parse.urljoin(example_url, href))
            assert remote_copy == files["harbour.png"]

            # The thumbnail now comes from the remote copy and has loaded.
            thumbnail = row.locator(".thumb img")
            expect(thumbnail).to_have_attribute("src", href)
            page.wait_for_function(
                "image => image.complete && image.naturalWidth === 48",
                arg=thumbnail.element_handle(),
            )

            if os.environ.get("EXAMPLE_SCREENSHOT") == "1":
                SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(SCREENSHOT), full_page=True)

            for name in files:
                expect(rows.filter(has_text=name)).to_have_attribute(
                    "data-status", "transferred", timeout=TRANSFER_TIMEOUT_MS
                )
            text_row = rows.filter(has_text="notes.txt")
            expect(text_row.locator(".thumb .ext")).to_have_text("TXT")
            text_href = text_row.locator("a.url").get_attribute("href")
            assert text_href is not None
            assert (
                fetch(urllib.parse.urljoin(example_url, text_href))
                == (files["notes.txt"])
            )
        finally:
            browser.close()
