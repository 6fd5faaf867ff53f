"""The example project does not teach unsafe serving.

Against the real example (``run.sh --no-demo``: Django's server and a Celery
worker), an anonymous visitor's HTML and SVG uploads are downloads from the
site's origin, never pages; the public feed carries no error text or server
path; uploads over the size limit are refused; retry needs the page's CSRF
token and a failed file, and queues nothing otherwise; DEBUG is off.
"""

import contextlib
import http.cookiejar
import json
import queue
import re
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.test_example import RUN, example_environ, stop

pytestmark = pytest.mark.slow
START_TIMEOUT = 120
PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02"
    b"\x00\x00\x00\x90wS\xde\x00\x00\x00\x0cIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe\x02"
    b"\xfe\xa75\x81\x84\x00\x00\x00\x00IEND\xaeB`\x82"
)
HTML = b"<html><script>document.title = document.cookie</script></html>"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'


@dataclass
class Site:
    url: str
    var_dir: Path
    opener: Any

    def get(self, path: str) -> Any:
        return self.opener.open(urllib.parse.urljoin(self.url, path), timeout=30)

    def csrf_token(self) -> str:
        with self.get("") as response:
            page = response.read().decode()
        return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)[1]

    def post(
        self, path: str, fields: dict[str, str], files: dict[str, bytes] | None = None
    ) -> tuple[int, bytes]:
        """POST a multipart form; return the status and the body."""
        boundary = uuid.uuid4().hex
        parts = []
        for key, value in fields.items():
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"'
                f"\r\n\r\n{value}\r\n".encode()
            )
        for filename, content in (files or {}).items():
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
                f'filename="{filename}"\r\nContent-Type: application/octet-stream'
                "\r\n\r\n".encode()
                + content
                + b"\r\n"
            )
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        request = urllib.request.Request(  # noqa: S310 - the example's http URL.
            urllib.parse.urljoin(self.url, path),
            data=body,
            headers={
                "Content-Type": f"multipart/form-data; boundary={boundary}",
                "Referer": self.url,
            },
        )
        try:
            with self.opener.open(request, timeout=60) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def upload(self, files: dict[str, bytes]) -> int:
        token = self.csrf_token()
        return self.post("", {"csrfmiddlewaretoken": token}, files)[0]

    def feed(self) -> str:
        with self.get("api/uploads/") as response:
            return response.read().decode()

    def uploads(self) -> dict[str, dict[str, Any]]:
        return {u["basename"]: u for u in json.loads(self.feed())["uploads"]}

    def wait_for_status(self, basename: str, status: str, timeout: float = 90) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            upload = self.uploads().get(basename)
            if upload is not None and upload["status"] == status:
                return upload
            time.sleep(0.2)
        raise AssertionError(f"{basename} never became {status}: {self.uploads()}")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """Run the example's server and worker once for the whole module."""
    var_dir = (tmp_path_factory.mktemp("example") / "var").resolve()
    env = example_environ(var_dir)
    env["EXAMPLE_TRANSFER_DELAY"] = "0"
    for name in ("EXAMPLE_DEBUG", "EXAMPLE_SECRET_KEY", "EXAMPLE_MAX_UPLOAD_BYTES"):
        env.pop(name, None)
    process = subprocess.Popen(
        ["bash", str(RUN), "--no-demo"],
        env=env,
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
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        yield Site(found.group(1), var_dir, opener)
    finally:
        leftovers = stop(process, var_dir)
        reader.join(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
    assert leftovers == [], "run.sh left its worker or server running"


@contextlib.contextmanager
def remote_blocked(site: Site) -> Iterator[None]:
    """Make every transfer fail: a file stands where the remote needs a folder."""
    folder = site.var_dir / "remote" / "uploads"
    aside = folder.with_name("uploads-aside")
    folder.parent.mkdir(parents=True, exist_ok=True)
    if folder.exists():
        folder.rename(aside)
    folder.write_text("not a folder")
    try:
        yield
    finally:
        folder.unlink()
        if aside.exists():
            aside.rename(folder)


def headers_of(site: Site, url: str) -> tuple[bytes, Any]:
    with site.get(url) as response:
        return response.read(), response.headers


def test_uploaded_html_and_svg_are_downloads_never_pages_of_the_site(site):
    tag = uuid.uuid4().hex[:6]
    files = {f"page-{tag}.html": HTML, f"drawing-{tag}.svg": SVG, f"dot-{tag}.png": PNG}
    assert site.upload(files) == 200  # Redirected to the page.
    for where in ("local", "remote"):
        for basename, content in files.items():
            upload = (
                site.uploads()[basename]
                if where == "local"
                else site.wait_for_status(basename, "transferred")
            )
            if where == "local" and upload["served_from"] != "local":
                continue  # Already moved: the remote case checks it.
            assert f"/media/{where}/" in upload["url"]
            body, headers = headers_of(site, upload["url"])
            assert body == content
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert "sandbox" in headers["Content-Security-Policy"]
            if basename.endswith(".png"):
                assert headers["Content-Type"] == "image/png"
                assert headers["Content-Disposition"].startswith("inline")
            else:
                assert headers["Content-Disposition"] == (
                    f'attachment; filename="{basename}"'
                )


def test_public_feed_shows_no_error_text_or_server_path(site):
    tag = uuid.uuid4().hex[:6]
    with remote_blocked(site):
        assert site.upload({f"blocked-{tag}.txt": b"blocked"}) == 200
        upload = site.wait_for_status(f"blocked-{tag}.txt", "failed")
    feed = site.feed()
    assert str(site.var_dir) not in feed and "/tmp" not in feed
    assert "Error" not in feed and "Errno" not in feed
    assert (
        upload["error"] == "The last attempt failed; the worker's log has the details."
    )


def test_upload_over_the_size_limit_is_refused_before_it_is_stored(site):
    tag = uuid.uuid4().hex[:6]
    status, body = site.post(
        "",
        {"csrfmiddlewaretoken": site.csrf_token()},
        {f"big-{tag}.bin": b"\0" * (5 * 2**20 + 1)},
    )
    assert status == 413 and b"limited to 5242880 bytes" in body
    assert f"big-{tag}.bin" not in site.uploads()
    assert not list((site.var_dir / "local").rglob(f"big-{tag}*"))


def test_anonymous_retry_needs_the_csrf_token_and_a_failed_file(site):
    tag = uuid.uuid4().hex[:6]
    assert site.upload({f"fine-{tag}.txt": b"fine"}) == 200
    fine = site.wait_for_status(f"fine-{tag}.txt", "transferred")
    # No token: refused by the CSRF check.
    assert site.post(fine["retry_url"], {})[0] == 403
    # A file that did not fail: nothing to retry, nothing queued.
    status, body = site.post(
        fine["retry_url"], {"csrfmiddlewaretoken": site.csrf_token()}
    )
    assert (status, body) == (409, b"Only a failed transfer can be retried.")
    assert site.uploads()[f"fine-{tag}.txt"]["status"] == "transferred"
    # A failed file is queued again once, and is then pending, not failed.
    with remote_blocked(site):
        assert site.upload({f"stuck-{tag}.txt": b"stuck"}) == 200
        stuck = site.wait_for_status(f"stuck-{tag}.txt", "failed")
    token = site.csrf_token()
    assert site.post(stuck["retry_url"], {"csrfmiddlewaretoken": token})[0] == 200
    site.wait_for_status(f"stuck-{tag}.txt", "transferred")


def test_debug_is_off_and_the_secret_key_is_this_runs_own(site):
    try:
        site.get("no-such-page/")
    except urllib.error.HTTPError as error:
        page = error.read().decode()
        assert error.code == 404
    assert "URLconf" not in page and "DEBUG = True" not in page
    key = (site.var_dir / "secret-key").read_text()
    assert len(key) >= 50 and "example-only" not in key
    assert (site.var_dir / "secret-key").stat().st_mode & 0o077 == 0
