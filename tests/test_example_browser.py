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
import struct
import subprocess
import threading
import time
import urllib.parse
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.test_example import ROOT, RUN, example_environ, stop

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
START_TIMEOUT = 120
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


@dataclass
class Example:
    url: str
    var_dir: Path

    def fetch(self, href: str) -> bytes:
        """Return the body of *href*, a link as the page shows it."""
        url = urllib.parse.urljoin(self.url, href)
        with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310
            return response.read()  # type: ignore[no-any-return]


@pytest.fixture
def example(tmp_path: Path) -> Iterator[Example]:
    """Run the example's worker and server, with a fresh var/ folder."""
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

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
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
        yield Example(found.group(1), var_dir)
    finally:
        leftovers = stop(process, var_dir)
        reader.join(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
    assert leftovers == [], "run.sh left its worker or server running"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = chromium_path()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, headless=True
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any, example: Example) -> Iterator[Any]:
    page = browser.new_page(viewport={"width": 1180, "height": 720})
    page.goto(example.url)
    yield page
    page.close()


def upload(page: Any, paths: list[Path]) -> None:
    """Send *paths* through the page's upload form."""
    page.set_input_files("input[type=file]", [str(path) for path in paths])
    with page.expect_navigation():
        page.click("form.upload-form button[type=submit]")


@pytest.mark.slow
def test_page_shows_uploads_move_from_local_to_remote(
    page: Any, example: Example, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    files = {
        "harbour.png": make_png(37, 99, 235),
        "meadow.png": make_png(16, 185, 129),
        "notes.txt": b"Saved locally first, moved by the worker.\n",
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    expect(page.locator("h1")).to_have_text("Queued storage gallery")

    upload(page, [tmp_path / name for name in files])

    rows = page.locator("tr.upload")
    expect(rows).to_have_count(3)
    row = rows.filter(has_text="harbour.png")

    # Transfers wait a moment before they start, so the first state the page
    # shows is the local one.
    expect(row.locator(".served-from")).to_have_text("local")
    local_href = row.locator("a.url").get_attribute("href")
    assert local_href is not None and "/media/local/" in local_href
    assert example.fetch(local_href) == files["harbour.png"]

    expect(row).to_have_attribute(
        "data-status", "transferred", timeout=TRANSFER_TIMEOUT_MS
    )
    expect(row.locator(".badge")).to_have_text("remote")
    expect(row.locator(".served-from")).to_have_text("remote")
    href = row.locator("a.url").get_attribute("href")
    assert href is not None and "/media/remote/" in href
    assert example.fetch(href) == files["harbour.png"]

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
    assert example.fetch(text_href) == files["notes.txt"]


@pytest.mark.slow
def test_failed_transfer_shows_its_error_and_retry_moves_the_file(
    page: Any, example: Example, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    content = b"This one cannot reach the remote storage at first.\n"
    path = tmp_path / "blocked.txt"
    path.write_bytes(content)
    # A file where the remote storage needs its uploads/ folder makes every
    # attempt fail; the example gives up after two quick retries.
    blocker = example.var_dir / "remote" / "uploads"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("not a folder")

    upload(page, [path])
    row = page.locator("tr.upload").filter(has_text="blocked.txt")
    expect(row).to_have_attribute("data-status", "failed", timeout=TRANSFER_TIMEOUT_MS)
    expect(row.locator(".badge")).to_have_text("failed")
    expect(row.locator(".error")).to_be_visible()
    expect(row.locator(".error")).to_have_text(re.compile(r"\S"))
    expect(row.locator(".served-from")).to_have_text("local")
    local_href = row.locator("a.url").get_attribute("href")
    assert local_href is not None
    assert example.fetch(local_href) == content

    blocker.unlink()
    row.locator("form.retry button").click()

    expect(row).to_have_attribute(
        "data-status", "transferred", timeout=TRANSFER_TIMEOUT_MS
    )
    expect(row.locator("form.retry")).to_be_hidden()
    expect(row.locator(".error")).to_be_hidden()
    href = row.locator("a.url").get_attribute("href")
    assert href is not None and "/media/remote/" in href
    assert example.fetch(href) == content
