"""Outages: the remote, the broker and the cache go away; transactions roll back;
the local disk fills up.

Every fault is real: the S3 endpoint and Redis (the broker and the cache) are
stopped, frozen or killed, the disk is a 1 MiB tmpfs. The outcome is read from
the S3 endpoint with boto3, from the local directory and from Redis itself.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage
from django.core.management import call_command
from django.db import connections as db_connections
from django.db import transaction
from django.test import override_settings

from queued_storage.backends import QueuedS3Storage
from queued_storage.models import StoredFile
from queued_storage.signals import file_queued, transfer_failed
from queued_storage.state import Status
from queued_storage.tasks import Transfer
from tests.conftest import wait_for
from tests.reliability_app import S3_CLIENT
from tests.testapp.models import Document

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "queued-storage-tests"
#: ``manage.py`` of the test project: Django's command line, with the Celery
#: app loaded as a project's package ``__init__`` loads it.
MANAGE = (
    "import sys, tests.celery_app; "
    "from django.core.management import execute_from_command_line; "
    "execute_from_command_line(['manage.py', *sys.argv[1:]])"
)

pytestmark = pytest.mark.django_db(transaction=True)


# Fixtures and helpers ---------------------------------------------------------


@pytest.fixture
def storage(tmp_path, unique):
    """A queued S3 storage of this test alone, quick to notice a dead endpoint."""
    return QueuedS3Storage(
        local_options={"location": str(tmp_path / "local"), "base_url": "/local/"},
        remote_options={
            "location": f"reliability/{unique}",
            "client_config": S3_CLIENT,
        },
        reference=f"reliability-{unique}",
    )


@pytest.fixture
def s3(servers):
    """Return the S3 endpoint; bring it back, with the bucket, after the test."""
    server = servers["s3"]
    yield server
    if not server.is_running():
        restore_s3(server)


def restore_s3(server):
    server.start()
    server.make_bucket(BUCKET)


@pytest.fixture
def broker(servers):
    """Return the Redis server (broker and cache); bring it back after the test."""
    server = servers["redis"]
    yield server
    server.resume()
    server.start()


@pytest.fixture
def queue(unique, broker):
    """Send transfers to a queue nobody consumes; return a function counting them."""
    name = f"reliability-{unique}"
    client = redis.Redis.from_url(broker.url_for(0))
    # Saves send their messages themselves, which these tests count.
    with override_settings(QUEUED_STORAGE_QUEUE=name, QUEUED_STORAGE_OUTBOX=False):
        yield lambda: client.llen(name)
    client.delete(name)


@pytest.fixture
def failures():
    """Collect the ``transfer_failed`` signals sent during a test."""
    seen = []

    def receiver(sender, **kwargs):
        seen.append(kwargs)

    transfer_failed.connect(receiver)
    yield seen
    transfer_failed.disconnect(receiver)


@pytest.fixture
def log(caplog):
    caplog.set_level(logging.INFO, logger="queued_storage")
    return caplog


def remote_object(s3_client, storage, name):
    """Return the bytes S3 holds for *name* of *storage*, or ``None``."""
    key = f"{storage.remote.location}/{name}"
    try:
        return s3_client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    except s3_client.exceptions.NoSuchKey:
        return None


def read(storage, name):
    with storage.open(name) as handle:
        return handle.read()


def status(storage, name):
    return StoredFile.objects.get(storage=storage.reference, name=name).status


def attempt_times(log, name):
    """Return when each attempt to transfer *name* started, in order."""
    return [
        record.created
        for record in log.records
        if record.msg.startswith("Transferring") and record.args[0] == name
    ]


# The remote is down -----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(60)
@override_settings(
    QUEUED_STORAGE_RETRIES=6, QUEUED_STORAGE_RETRY_DELAY=1,
    QUEUED_STORAGE_RETRY_BACKOFF_MAX=2,
)  # fmt: skip
def test_remote_outage_backs_off_serves_locally_then_transfers(
    celery_worker, storage, s3, s3_client, log
):
    s3.stop()
    name = storage.save("down.txt", ContentFile(b"kept while S3 is away"))
    wait_for(lambda: len(attempt_times(log, name)) >= 3, timeout=20)
    assert status(storage, name) in (Status.PENDING, Status.TRANSFERRING)
    assert read(storage, name) == b"kept while S3 is away"
    assert storage.url(name) == f"/local/{name}"
    restore_s3(s3)
    wait_for(lambda: status(storage, name) == Status.TRANSFERRED, timeout=20)
    assert remote_object(s3_client, storage, name) == b"kept while S3 is away"
    # Retry number n waits RETRY_DELAY * 2**n, capped at RETRY_BACKOFF_MAX,
    # times a jitter in [0.5, 1]. Between two attempts also lie botocore's own
    # retries of the refused connection and the machine's load, so only the
    # lower bounds are tight here; test_backoff_is_exponential_jittered_and_capped
    # checks the delays themselves.
    times = attempt_times(log, name)
    delays = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    assert delays[0] >= 0.5
    assert delays[1] >= 1.0
    assert all(delay <= 6 for delay in delays)
    retried = [r for r in log.records if r.msg.startswith("Transfer of %r failed, re")]
    assert retried and "Could not connect" in retried[0].getMessage()


def test_backoff_is_exponential_jittered_and_capped():
    task = Transfer()
    with override_settings(
        QUEUED_STORAGE_RETRY_DELAY=10, QUEUED_STORAGE_RETRY_BACKOFF_MAX=100
    ):
        for retries, ceiling in [
            (0, 10),
            (1, 20),
            (2, 40),
            (3, 80),
            (4, 100),
            (9, 100),
        ]:
            drawn = [task.backoff(retries) for _ in range(200)]
            assert ceiling / 2 <= min(drawn) and max(drawn) <= ceiling
            assert statistics.pstdev(drawn) > ceiling / 20  # Jittered, not fixed.


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_remote_outage_longer_than_the_retries_marks_the_file_failed(
    celery_worker, storage, s3, s3_client, failures, log
):
    s3.stop()
    name = storage.save("gone.txt", ContentFile(b"still here"))
    wait_for(lambda: status(storage, name) == Status.FAILED, timeout=30)
    row = StoredFile.objects.get(storage=storage.reference, name=name)
    # The first try and QUEUED_STORAGE_RETRIES (2 in the tests) retries.
    assert row.attempts == 3
    assert "Could not connect" in row.last_error
    assert storage.get_state(name).status == Status.FAILED
    assert read(storage, name) == b"still here"
    assert storage.url(name) == f"/local/{name}"
    assert [(f["name"], f["attempts"]) for f in failures] == [(name, 3)]
    assert "Could not connect" in failures[0]["error"]
    for_good = [r for r in log.records if "failed for good" in r.msg]
    assert len(for_good) == 1 and for_good[0].levelno == logging.ERROR
    assert "Could not connect" in for_good[0].getMessage()
    restore_s3(s3)
    assert remote_object(s3_client, storage, name) is None


# The broker is down -----------------------------------------------------------

#: The cache of the tests, with the socket timeouts a production cache needs
#: so that a frozen Redis costs a read or a save a bounded wait.
BOUNDED_CACHES = {
    **settings.CACHES,
    "default": {
        **settings.CACHES["default"],
        "OPTIONS": {"socket_timeout": 0.5, "socket_connect_timeout": 0.5},
    },
}


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.parametrize("fault", ["stopped", "frozen"])
@override_settings(CACHES=BOUNDED_CACHES, QUEUED_STORAGE_OUTBOX=False)
def test_save_succeeds_while_the_broker_is_down_and_reconcile_recovers(
    celery_worker, storage, broker, s3_client, fault, log
):
    """A refused connection (stopped) and one never answered (frozen) alike:
    the save returns in bounded time, the file is served locally and stays
    pending, and ``reconcile`` moves it once the broker is back."""
    if fault == "stopped":
        broker.stop()
    else:
        broker.pause()
    started = time.monotonic()
    name = storage.save("broker-down.txt", ContentFile(b"saved anyway"))
    elapsed = time.monotonic() - started
    assert elapsed < 6.0
    assert read(storage, name) == b"saved anyway"
    assert storage.exists(name)
    assert status(storage, name) == Status.PENDING
    assert any("Could not queue the transfer" in r.msg for r in log.records)
    if fault == "stopped":
        broker.start()
    else:
        broker.resume()
    assert status(storage, name) == Status.PENDING
    call_command(
        "queued_storage", "reconcile", "--older-than", "0", stdout=io.StringIO()
    )
    wait_for(lambda: status(storage, name) == Status.TRANSFERRED, timeout=45)
    assert remote_object(s3_client, storage, name) == b"saved anyway"
    assert read(storage, name) == b"saved anyway"


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_broker_killed_during_a_burst_of_saves_loses_no_file(
    celery_worker, broker, s3_client, unique
):
    """Kill Redis (broker and cache) while four threads save; every save
    succeeds, and after ``manage.py queued_storage reconcile`` every file is
    on the remote with its bytes."""
    saved, errors = {}, []

    def burst(thread):
        try:
            for i in range(10):
                data = f"{unique} thread {thread} file {i}".encode()
                file = ContentFile(data, name=f"{unique}-{thread}-{i}.txt")
                try:
                    saved[Document.objects.create(file=file).file.name] = data
                except Exception as exc:
                    errors.append(exc)
                time.sleep(0.05)
        finally:
            db_connections.close_all()

    threads = [threading.Thread(target=burst, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    wait_for(lambda: len(saved) >= 8, timeout=30)
    broker.kill()
    time.sleep(1.0)
    broker.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert len(saved) == 40
    command = [sys.executable, "-c", MANAGE, "queued_storage", "reconcile",
               "--older-than", "0", "--storage", "s3"]  # fmt: skip
    result = subprocess.run(
        command, cwd=ROOT, env={**os.environ, "QS_TEST_WORKER": "1"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    storage = Document._meta.get_field("file").storage

    def unfinished():
        rows = StoredFile.objects.filter(storage="s3", name__in=list(saved))
        return {
            r.name: (r.status, r.last_error) for r in rows if r.status != "transferred"
        }

    try:
        wait_for(lambda: not unfinished(), timeout=60)
    except AssertionError:
        raise AssertionError(f"Not transferred: {unfinished()}") from None
    for name, data in saved.items():
        assert s3_client.get_object(Bucket=BUCKET, Key=name)["Body"].read() == data
        assert storage.using_remote(name)


# Transactions -----------------------------------------------------------------


def test_rolled_back_save_queues_nothing_and_records_nothing(queue, unique):
    sent = []
    file_queued.connect(
        receiver := lambda sender, **kwargs: sent.append(kwargs["name"])
    )
    try:
        with pytest.raises(RuntimeError), transaction.atomic():
            doc = Document.objects.create(file=ContentFile(b"x", name=f"{unique}.txt"))
            name = doc.file.name
            assert StoredFile.objects.filter(storage="s3", name=name).exists()
            raise RuntimeError("rolled back")
        assert not StoredFile.objects.filter(storage="s3", name=name).exists()
        assert queue() == 0
        assert sent == []
        # Outside a transaction the message is in the broker once save() returns.
        doc = Document.objects.create(file=ContentFile(b"y", name=f"{unique}.txt"))
        assert queue() == 1
        assert sent == [doc.file.name]
        assert StoredFile.objects.get(storage="s3", name=doc.file.name).status == (
            Status.PENDING
        )
    finally:
        file_queued.disconnect(receiver)


def test_save_in_a_committed_transaction_queues_on_commit(queue, unique):
    with transaction.atomic():
        doc = Document.objects.create(file=ContentFile(b"x", name=f"{unique}.txt"))
        assert queue() == 0
    assert queue() == 1
    assert StoredFile.objects.filter(storage="s3", name=doc.file.name).exists()


# The cache is flushed or unreachable --------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_reads_find_the_right_copy_when_the_cache_is_flushed_or_down(
    celery_worker, tmp_path, unique, broker, s3_client
):
    storage = QueuedS3Storage(
        local_options={"location": str(tmp_path / "local"), "base_url": "/local/"},
        remote_options={
            "location": f"reliability/{unique}",
            "client_config": S3_CLIENT,
        },
        reference=f"reliability-{unique}",
        delayed=True,
    )
    cache = redis.Redis.from_url(broker.url_for(1))

    def cached(name):
        return cache.exists(f":1:{storage.get_cache_key(name)}")

    name = storage.save("cached.txt", ContentFile(b"first local, then remote"))
    assert cached(name)
    cache.flushdb()
    assert read(storage, name) == b"first local, then remote"
    assert storage.url(name) == f"/local/{name}"
    assert cached(name)  # Rebuilt from the ledger by the read.
    assert storage.get_state(name).status == Status.PENDING

    storage.transfer(name)
    wait_for(lambda: status(storage, name) == Status.TRANSFERRED, timeout=20)
    cache.flushdb()
    os.remove(storage.local.path(name))  # Only the remote copy can answer now.
    assert read(storage, name) == b"first local, then remote"
    assert storage.url(name).startswith(storage.remote.endpoint_url)
    assert cached(name)

    broker.stop()
    assert read(storage, name) == b"first local, then remote"
    assert storage.exists(name) and storage.using_remote(name)
    other = storage.save("while-down.txt", ContentFile(b"saved without a cache"))
    assert read(storage, other) == b"saved without a cache"
    assert storage.url(other) == f"/local/{other}"
    assert status(storage, other) == Status.PENDING
    storage.delete(other)
    assert not storage.exists(other)
    assert not os.path.exists(storage.local.path(other))
    broker.start()
    assert storage.get_state(other).status == Status.DELETED
    assert storage.get_state(name).status == Status.TRANSFERRED


# The local disk is full -----------------------------------------------------------


class QuotaFileSystemStorage(FileSystemStorage):
    """A file system storage that fails like a full disk past 1 MiB in all.

    Used only where no tmpfs can be mounted (the tests are not run as root).
    """

    quota = 2**20

    def _save(self, name, content):
        used = sum(
            f.stat().st_size for f in Path(self.location).rglob("*") if f.is_file()
        )
        return super()._save(name, _Quota(content, self.quota - used))


class _Quota(File):
    def __init__(self, content, room):
        super().__init__(content, content.name)
        self.room = room

    def chunks(self, chunk_size=None):
        for chunk in self.file.chunks(chunk_size):
            self.room -= len(chunk)
            if self.room < 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            yield chunk


@pytest.fixture
def tiny_disk(tmp_path):
    """Return ``(local storage class, directory)`` of a disk with 1 MiB of room."""
    directory = tmp_path / "tiny"
    directory.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(directory)]
    if subprocess.run(mount, capture_output=True).returncode != 0:
        yield f"{__name__}.QuotaFileSystemStorage", directory
        return
    try:
        yield "django.core.files.storage.FileSystemStorage", directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=True)


def test_disk_full_during_the_local_write_leaves_nothing_behind(
    tiny_disk, queue, s3_client, unique
):
    backend, directory = tiny_disk
    storage = QueuedS3Storage(
        local=backend,
        local_options={"location": str(directory)},
        remote_options={"location": f"reliability/{unique}"},
        reference=f"reliability-{unique}",
    )
    with pytest.raises(OSError) as raised:
        storage.save("big.bin", ContentFile(os.urandom(2 * 2**20)))
    assert raised.value.errno == errno.ENOSPC
    assert [p for p in directory.rglob("*") if p.is_file()] == []
    assert not StoredFile.objects.filter(storage=storage.reference).exists()
    assert queue() == 0
    assert not s3_client.list_objects_v2(
        Bucket=BUCKET, Prefix=f"reliability/{unique}/"
    ).get("Contents")
    # The room the failed write took is free again.
    name = storage.save("fits.bin", ContentFile(os.urandom(900 * 2**10)))
    assert (directory / name).stat().st_size == 900 * 2**10
    assert queue() == 1
