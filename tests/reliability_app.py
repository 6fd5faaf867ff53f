"""Queued storages that misbehave on purpose, for the reliability tests.

Worker processes started with ``celery -A tests.reliability_app`` run the
suite's Celery app with these storages built, so that the messages the tests
send name storages the workers know; the tests import the same module and
build the same storages under the same references. The faults live in the
local storages, so the remote is the plain ``S3Storage`` users have. Every
local directory lies under ``MEDIA_ROOT``'s sibling ``-reliability``, where
the test process and its workers find the same files.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
from pathlib import Path
from typing import Any

from botocore.config import Config
from django.conf import settings
from django.core.files import File
from django.core.files.storage import FileSystemStorage

from queued_storage.backends import QueuedS3Storage
from tests.celery_app import app

__all__ = [
    "app",
    "crash_storage",
    "history_storage",
    "host_storage",
    "shared_storage",
    "slow_storage",
]

ROOT = Path(settings.MEDIA_ROOT + "-reliability")
MARKERS = ROOT / "markers"
#: A bucket with versioning on, where every upload leaves a version to count.
VERSIONED_BUCKET = "queued-storage-versions"

#: Fail fast while the endpoint is down: one attempt, short timeouts.
S3_CLIENT = Config(
    retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=1, read_timeout=20
)


class Throttled(File):
    """A local file whose reads take as long as *rate* bytes a second allows."""

    def __init__(self, file: Any, name: str, rate: float) -> None:
        super().__init__(file, name)
        self.rate = rate

    def read(self, size: int = -1) -> bytes:
        data: bytes = self.file.read(size)
        time.sleep(len(data) / self.rate)
        return data


class SlowFileSystemStorage(FileSystemStorage):
    """A file system storage read at ``read_rate`` bytes a second.

    A transfer of a large file then takes long enough for a test to act
    while it is in flight.
    """

    def __init__(self, read_rate: float = 20 * 2**20, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.read_rate = read_rate

    def _open(self, name: str, mode: str = "rb") -> File:
        return Throttled(open(self.path(name), mode), name, self.read_rate)


def crash_marker(name: str) -> Path:
    """Return the file that records that a transfer of *name* crashed."""
    MARKERS.mkdir(parents=True, exist_ok=True)
    return MARKERS / f"{hashlib.sha256(name.encode()).hexdigest()[:16]}.crashed"


class CrashingFile(File):
    """A local file whose worker process dies when it is closed, read to the end.

    The transfer closes it after the upload, so the object is complete on S3
    but the process is gone before the task could record that, as after a
    power cut or an out-of-memory kill. Only the first transfer of a name
    crashes, and only in a worker process.
    """

    def close(self) -> None:
        at_end = self.file.tell() >= os.fstat(self.file.fileno()).st_size
        super().close()
        marker = crash_marker(self.name)
        if at_end and os.environ.get("QS_TEST_WORKER") and not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)


class CrashingFileSystemStorage(FileSystemStorage):
    def _open(self, name: str, mode: str = "rb") -> File:
        return CrashingFile(open(self.path(name), mode), name)


def _queued(kind: str, location: dict[str, Any], **options: Any) -> Any:
    remote = {"location": f"reliability/{kind}", "client_config": S3_CLIENT}
    return QueuedS3Storage(
        local_options=location,
        remote_options={**remote, **options.pop("remote_options", {})},
        reference=f"reliability-{kind}",
        **options,
    )


slow_storage = _queued(
    "slow",
    {"location": str(ROOT / "slow")},
    local="tests.reliability_app.SlowFileSystemStorage",
)
crash_storage = _queued(
    "crash",
    {"location": str(ROOT / "crash")},
    local="tests.reliability_app.CrashingFileSystemStorage",
    remote_options={"bucket_name": VERSIONED_BUCKET},
)
#: Each worker of the per-host tests sees its own directory, as on another host.
host_storage = _queued(
    "host", {"location": os.environ.get("QS_TEST_HOST_DIR", str(ROOT / "host"))}
)
#: Saving a name again replaces the local copy. Requests give up after 3 s,
#: so that a frozen endpoint holds a read or a transfer no longer.
history_storage = _queued(
    "history",
    {"location": str(ROOT / "history"), "allow_overwrite": True},
    remote_options={"client_config": S3_CLIENT.merge(Config(read_timeout=3))},
)
#: A directory that every process of a test writes to.
shared_storage = _queued("shared", {"location": str(ROOT / "shared")})
