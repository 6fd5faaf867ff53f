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
import select
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

from botocore.config import Config
from django.conf import settings
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage
from kombu import Queue

from queued_storage.backends import QueuedS3Storage, QueuedStorage
from tests.celery_app import app

__all__ = [
    "app",
    "lease_storage",
    "crash_storage",
    "history_storage",
    "host_storage",
    "shared_storage",
    "slow_storage",
]


def quorum_queue(name: str, delivery_limit: int) -> Queue:
    """Return a RabbitMQ quorum queue that drops a message after that many
    deliveries."""
    arguments = {"x-queue-type": "quorum", "x-delivery-limit": delivery_limit}
    return Queue(name, routing_key=name, queue_arguments=arguments)


if os.environ.get("QS_TEST_QUEUE"):
    # What a worker queues itself (a transfer sent again) goes to the queue
    # that the test's own messages go to.
    app.conf.task_default_queue = os.environ["QS_TEST_QUEUE"]
    if os.environ.get("QS_TEST_QUORUM_LIMIT"):
        app.conf.task_queues = [
            quorum_queue(
                os.environ["QS_TEST_QUEUE"], int(os.environ["QS_TEST_QUORUM_LIMIT"])
            )
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

    def readinto(self, buffer: Any) -> int:
        # Multipart uploads read parts into reused buffers.
        count: int = self.file.readinto(buffer)
        time.sleep(count / self.rate)
        return count


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


class SlowRemoteStorage(FileSystemStorage):
    """A remote that takes ``upload_seconds`` for each upload, chunk by chunk.

    It keeps a journal of the uploads it started and finished, per name, so
    that a test counts them at the remote; while a file named like the
    upload's with ``.down`` exists in ``MARKERS``, it refuses the upload, as a
    remote that is down.
    """

    def __init__(self, upload_seconds: float = 6.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.upload_seconds = upload_seconds

    def _save(self, name: str, content: Any) -> str:
        journal(name, "start")
        if outage_marker(name).exists():
            raise OSError(f"the remote refuses {name!r}: it is down")
        chunks = list(content.chunks(64 * 1024))
        for _chunk in chunks:
            time.sleep(self.upload_seconds / len(chunks))
        saved = super()._save(name, ContentFile(b"".join(chunks)))
        journal(name, "done")
        return str(saved)


def _marker_stem(name: str) -> Path:
    MARKERS.mkdir(parents=True, exist_ok=True)
    return MARKERS / hashlib.sha256(name.encode()).hexdigest()[:16]


def journal(name: str, event: str) -> None:
    """Append *event* to the upload journal of *name*."""
    with _marker_stem(name).with_suffix(".uploads").open("a") as fh:
        fh.write(f"{event} {os.getpid()}\n")


def uploads(name: str) -> dict[str, int]:
    """Return how many uploads of *name* the slow remote started and finished."""
    path = _marker_stem(name).with_suffix(".uploads")
    lines = path.read_text().split() if path.exists() else []
    return {"start": lines.count("start"), "done": lines.count("done")}


def outage_marker(name: str) -> Path:
    """Return the file whose presence makes the slow remote refuse *name*."""
    return _marker_stem(name).with_suffix(".down")


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


class S3Proxy:
    """A TCP proxy to the S3 endpoint that mistreats uploads carrying *marker*.

    With *damage*, the marker's first byte is changed on its way, as by a
    faulty network card or middlebox: the length stays, only a checksum can
    tell. With *delay*, the first request that carries the marker is held
    for that many seconds, as on a congested path.
    """

    def __init__(
        self, port: int, marker: bytes, *, damage: bool = False, delay: float = 0.0
    ) -> None:
        self.target = ("127.0.0.1", port)
        self.marker = marker
        self.damage = damage
        self.delay = delay
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for args in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self.pump, args=args, daemon=True).start()

    def mistreat(self, data: bytes) -> bytes:
        if self.marker not in data:
            return data
        if self.delay:
            delay, self.delay = self.delay, 0.0
            time.sleep(delay)
        if self.damage:
            damaged = bytes([self.marker[0] ^ 0xFF]) + self.marker[1:]
            data = data.replace(self.marker, damaged)
        return data

    def pump(self, source: socket.socket, sink: socket.socket, upload: bool) -> None:
        held = b""
        try:
            while True:
                # Bytes that may begin a marker wait briefly for the rest of it.
                ready, _, _ = select.select([source], [], [], 0.05 if held else None)
                data = source.recv(65536) if ready else b""
                if ready and not data:
                    break
                data, held = held + data, b""
                if upload:
                    data = self.mistreat(data)
                    for keep in range(min(len(self.marker) - 1, len(data)), 0, -1):
                        if ready and self.marker.startswith(data[-keep:]):
                            data, held = data[:-keep], data[-keep:]
                            break
                sink.sendall(data)
            sink.sendall(held)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            source.close()  # The other direction's pump closes the sink.

    def close(self) -> None:
        self.server.close()


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
#: Saving a name again replaces the local copy; in a worker process uploads
#: go through the proxy that QS_TEST_S3_PROXY names, if any.
proxied_storage = _queued(
    "proxied",
    {"location": str(ROOT / "proxied"), "allow_overwrite": True},
    remote_options={"endpoint_url": os.environ.get("QS_TEST_S3_PROXY")}
    if os.environ.get("QS_TEST_S3_PROXY")
    else {},
)
#: A file-system pair whose remote takes seconds per upload and counts them.
lease_storage = QueuedStorage(
    local="django.core.files.storage.FileSystemStorage",
    remote="tests.reliability_app.SlowRemoteStorage",
    local_options={"location": str(ROOT / "lease-local")},
    remote_options={
        "location": str(ROOT / "lease-remote"),
        "upload_seconds": float(os.environ.get("QS_TEST_UPLOAD_SECONDS", "6")),
    },
    reference="reliability-lease",
)
