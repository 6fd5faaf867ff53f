#!/usr/bin/env python3
"""Walk through the example site as a visitor would, with the standard library.

Upload a picture through the site's form, fetch it from the local storage,
wait for the worker (Celery's or the task framework's) to move it, then fetch
it from the remote storage. With ``--sweep``, run on the machine that serves
the site, also run ``manage.py queued_storage sweep`` until the local copy,
older than the storage's retention, is removed, and check that the file is
still served from the remote storage. Exit with status 0 when every step
worked, 1 otherwise.

    python demo.py http://127.0.0.1:8000/
    python demo.py --sweep http://127.0.0.1:8000/
"""

import argparse
import http.cookiejar
import json
import re
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zlib
from pathlib import Path
from typing import Any

MANAGE = Path(__file__).resolve().parent / "manage.py"


class DemoError(Exception):
    """A step of the demo did not give what it should have."""


def make_png(width: int = 96, height: int = 96) -> bytes:
    """Return a small PNG picture: a diagonal gradient."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter type: none
        for x in range(width):
            rows += bytes((40 + x * 2, 90 + y, 200 - (x + y) // 2))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(rows), 9))
        + chunk(b"IEND", b"")
    )


def encode_multipart(
    fields: dict[str, str], files: dict[str, tuple[str, bytes, str]]
) -> tuple[bytes, str]:
    """Return the body and content type of a multipart/form-data request."""
    boundary = uuid.uuid4().hex
    lines: list[bytes] = []
    for name, value in fields.items():
        lines += [
            f"--{boundary}".encode(),
            f'Content-Disposition: form-data; name="{name}"'.encode(),
            b"",
            value.encode(),
        ]
    for name, (filename, content, content_type) in files.items():
        lines += [
            f"--{boundary}".encode(),
            (
                f'Content-Disposition: form-data; name="{name}"; filename="{filename}"'
            ).encode(),
            f"Content-Type: {content_type}".encode(),
            b"",
            content,
        ]
    lines += [f"--{boundary}--".encode(), b""]
    return b"\r\n".join(lines), f"multipart/form-data; boundary={boundary}"


class Site:
    """A visitor of the example site, keeping its cookies between requests."""

    def __init__(self, base_url: str) -> None:
        if urllib.parse.urlsplit(base_url).scheme not in ("http", "https"):
            raise DemoError(f"{base_url!r} is not an http:// or https:// address")
        self.base_url = base_url.rstrip("/") + "/"
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def url(self, path: str) -> str:
        return urllib.parse.urljoin(self.base_url, path)

    def get(self, path: str) -> tuple[bytes, str]:
        with self.opener.open(self.url(path), timeout=30) as response:
            return response.read(), response.geturl()

    def get_json(self, path: str) -> Any:
        return json.loads(self.get(path)[0])

    def wait_until_up(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.get("")
                return
            except (urllib.error.URLError, ConnectionError) as error:
                if time.monotonic() > deadline:
                    raise DemoError(
                        f"the site at {self.base_url} is not up: {error}"
                    ) from error
                time.sleep(0.25)

    def upload(self, filename: str, content: bytes, content_type: str) -> int:
        """Send *content* through the upload form; return the new upload's id."""
        page = self.get("")[0].decode()
        match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        if not match:
            raise DemoError("the upload form has no CSRF token")
        body, body_type = encode_multipart(
            {"csrfmiddlewaretoken": match.group(1)},
            {"files": (filename, content, content_type)},
        )
        request = urllib.request.Request(  # noqa: S310 (scheme checked above)
            self.base_url,
            data=body,
            headers={"Content-Type": body_type, "Referer": self.base_url},
            method="POST",
        )
        with self.opener.open(request, timeout=30) as response:
            final_url = response.geturl()
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(final_url).query)
        ids = query.get("uploaded", [""])[0].split(",")
        if not ids[0].isdigit():
            raise DemoError(f"the form did not accept the file (ended at {final_url})")
        return int(ids[0])

    def describe(self, upload_id: int) -> dict[str, Any]:
        for upload in self.get_json("api/uploads/")["uploads"]:
            if upload["id"] == upload_id:
                return upload  # type: ignore[no-any-return]
        raise DemoError(f"upload #{upload_id} is missing from api/uploads/")


STEPS = 4


def step(number: int, text: str) -> None:
    print(f"[{number}/{STEPS}] {text}", flush=True)


def detail(text: str) -> None:
    print(f"      {text}", flush=True)


def fetch_and_compare(site: Site, upload: dict[str, Any], expected: bytes) -> None:
    url = site.url(upload["url"])
    detail(url)
    content = site.get(url)[0]
    if content != expected:
        raise DemoError(
            f"{url} gave {len(content)} bytes that differ from the "
            f"{len(expected)} bytes uploaded"
        )
    detail(f"fetched {len(content)} bytes, identical to the uploaded file")


def manage(*args: str) -> str:
    """Run ``manage.py`` of the example with *args*; return what it printed."""
    done = subprocess.run(  # noqa: S603 (this interpreter, fixed arguments)
        [sys.executable, str(MANAGE), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise DemoError(f"manage.py {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout


def is_gone(site: Site, url: str) -> bool:
    """Return whether *url* answers 404 Not Found."""
    try:
        site.get(url)
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return True
        raise
    return False


def sweep(
    site: Site, local_url: str, upload: dict[str, Any], content: bytes, timeout: float
) -> None:
    """Sweep until the local copy of *upload* is removed; it stays served."""
    step(5, "The sweep removes the local copy once the retention has passed:")
    for line in manage("queued_storage", "status").splitlines():
        if "held locally" in line:
            detail(f"status: {line.strip()}")
    started = time.monotonic()
    while True:
        report = [
            line.strip()
            for line in manage("queued_storage", "sweep").splitlines()
            if "removed" in line and "removed 0 " not in line
        ]
        if report:
            for line in report:
                detail(f"sweep: {line}")
            break
        if time.monotonic() - started > timeout:
            raise DemoError(
                f"the sweep removed no local copy in {timeout:.0f} s; is "
                "local_retention set on the storage?"
            )
        time.sleep(0.5)
    if not is_gone(site, local_url):
        raise DemoError(f"the local copy at {local_url} is still served")
    detail(f"{site.url(local_url)} is gone (404): the local copy was removed")
    fetch_and_compare(site, upload, content)


def run(base_url: str, timeout: float, with_sweep: bool = False) -> None:
    global STEPS
    STEPS = 5 if with_sweep else 4
    site = Site(base_url)
    site.wait_until_up(timeout=30)

    content = make_png()
    filename = "queued-storage-demo.png"
    step(1, f"Uploading {filename} ({len(content)} bytes) through the form:")
    detail(site.base_url)
    upload_id = site.upload(filename, content, "image/png")
    upload = site.describe(upload_id)
    detail(f"upload #{upload_id} saved as {upload['name']}, status: {upload['status']}")

    step(2, "Served from the local storage at once:")
    if upload["served_from"] != "local":
        raise DemoError(
            f"expected the new upload on the local storage, but it is served "
            f"from {upload['served_from']!r} (status {upload['status']!r})"
        )
    local_url = upload["url"]
    fetch_and_compare(site, upload, content)

    step(3, "Waiting for the worker to move it to the remote storage...")
    started = time.monotonic()
    statuses = [upload["status"]]
    while upload["status"] != "transferred":
        if upload["status"] == "failed":
            raise DemoError(f"the transfer failed: {upload['error']}")
        if time.monotonic() - started > timeout:
            raise DemoError(
                f"still {upload['status']!r} after {timeout:.0f} s; "
                "is the worker running?"
            )
        time.sleep(0.2)
        upload = site.describe(upload_id)
        if upload["status"] != statuses[-1]:
            statuses.append(upload["status"])
    detail(f"status: {' -> '.join(statuses)} ({time.monotonic() - started:.1f} s)")

    step(4, "Served from the remote storage:")
    if upload["served_from"] != "remote" or upload["url"] == local_url:
        raise DemoError(
            f"the transferred file is still served from {upload['url']} "
            f"({upload['served_from']})"
        )
    fetch_and_compare(site, upload, content)
    if with_sweep:
        sweep(site, local_url, upload, content, timeout)
    print(
        "Demo passed: the file was served from the local storage at once, "
        "then from the remote storage"
        + (", and its local copy was swept." if with_sweep else "."),
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="address of the running example site")
    parser.add_argument(
        "--timeout",
        type=float,
        default=60,
        help="seconds to wait for the transfer (default: %(default)s)",
    )
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="then run manage.py queued_storage sweep until the local copy goes",
    )
    args = parser.parse_args(argv)
    try:
        run(args.url, args.timeout, with_sweep=args.sweep)
    except (DemoError, urllib.error.URLError, OSError) as error:
        print(f"Demo failed: {error}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
