"""Moving an existing site's files: 1,200 files, interrupted, then resumed."""

import os
import pty
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from queued_storage.models import StoredFile
from queued_storage.state import Status

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "queued-storage-tests"
#: More files than one of the import's lookup batches (500 names) on each side
#: of the kill at half way.
COUNT = 1200
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def start_import(site, prefix):
    """Run ``manage.py queued_storage import`` on a terminal; return (process, fd)."""
    primary, replica = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "django", "queued_storage", "import",
         "--storage", "s3-import-tty"],
        cwd=ROOT,
        stdin=replica,
        stdout=replica,
        stderr=replica,
        env={
            **os.environ,
            "QS_TEST_WORKER": "1",
            "QS_TEST_IMPORT_DIR": str(site),
            "QS_TEST_IMPORT_PREFIX": prefix,
        },
    )  # fmt: skip
    os.close(replica)
    return process, primary


def read_until(primary, process, stop=None, timeout=240):
    """Read the terminal until *stop* says so, the process ends, or time runs out."""
    output = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = os.read(primary, 65536)
        except OSError:
            break
        if not chunk:
            break
        output += chunk.decode(errors="replace")
        if stop is not None and stop(output):
            break
    return output


def progress(output):
    counts = re.findall(r"\] (\d+)/(\d+) ", output)
    return int(counts[-1][0]) if counts else 0


def remote_count(s3_client, prefix):
    pages = s3_client.get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET, Prefix=prefix + "/"
    )
    return sum(len(page.get("Contents", ())) for page in pages)


def test_import_of_twelve_hundred_files_resumes_after_a_kill(
    tmp_path, s3_client, unique
):
    site = tmp_path / "site"
    for i in range(COUNT):
        path = site / f"d{i % 20:02d}" / f"file-{i:04d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"content of file {i}\n".encode())
    prefix = f"bulk-{unique}"

    process, primary = start_import(site, prefix)
    first = read_until(primary, process, stop=lambda out: progress(out) >= COUNT // 2)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    os.close(primary)
    assert progress(first) >= COUNT // 2, first[-2000:]
    assert "\r[" in first and f"/{COUNT} " in first  # A bar redrawn in place.
    moved = remote_count(s3_client, prefix)
    assert COUNT // 2 - 5 <= moved < COUNT

    process, primary = start_import(site, prefix)
    second = read_until(primary, process)
    assert process.wait(timeout=60) == 0, second[-2000:]
    os.close(primary)
    done = re.search(r"Moved (\d+) files; (\d+) already remote; 0 failed", second)
    assert done, second[-2000:]
    assert int(done[1]) + int(done[2]) == COUNT
    assert int(done[2]) >= COUNT // 2 - 5
    assert remote_count(s3_client, prefix) == COUNT
    rows = StoredFile.objects.filter(storage="s3-import-tty")
    assert rows.filter(status=Status.TRANSFERRED).count() == COUNT
    body = s3_client.get_object(Bucket=BUCKET, Key=f"{prefix}/d07/file-1127.txt")[
        "Body"
    ]
    assert body.read() == b"content of file 1127\n"
