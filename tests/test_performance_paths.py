"""The requests each hot path makes, counted against the real services.

Timing is left to ``benchmarks/run.py``; these tests pin down what the
figures rest on: how many Redis round trips and S3 requests a save, a read
and a transfer cost.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage
from django.test import override_settings
from redis.connection import AbstractConnection

from queued_storage.backends import QueuedS3Storage
from queued_storage.exceptions import RemoteConflict
from queued_storage.state import FileState, Status
from queued_storage.transfer import transfer_file

BUCKET = "queued-storage-tests"
MIB = 1024 * 1024

pytestmark = pytest.mark.django_db(transaction=True)


@contextmanager
def redis_round_trips() -> Iterator[list[int]]:
    """Count what this thread writes to Redis; a pipeline counts once."""
    counter, caller = [0], threading.get_ident()
    original = AbstractConnection.send_packed_command

    def send_packed_command(self: Any, *args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() == caller:
            counter[0] += 1
        return original(self, *args, **kwargs)

    AbstractConnection.send_packed_command = send_packed_command
    try:
        yield counter
    finally:
        AbstractConnection.send_packed_command = original


@contextmanager
def s3_requests(remote: Any) -> Iterator[list[str]]:
    """Record the operations the S3 storage *remote* sends, in order."""
    sent: list[str] = []

    def before_send(event_name: str = "", **kwargs: Any) -> None:
        sent.append(event_name.rsplit(".", 1)[-1])

    clients = {
        id(c): c
        for c in (remote.connection.meta.client, remote.unsigned_connection.meta.client)
    }
    for client in clients.values():
        client.meta.events.register("before-send.s3", before_send)
    try:
        yield sent
    finally:
        for client in clients.values():
            client.meta.events.unregister("before-send.s3", before_send)


@pytest.fixture
def storage(tmp_path, unique):
    queue = f"performance-{unique}"
    with override_settings(QUEUED_STORAGE_QUEUE=queue):
        yield QueuedS3Storage(
            local_options={"location": str(tmp_path / "local"), "base_url": "/local/"},
            remote_options={"location": f"perf-{unique}"},
            reference=f"perf-{unique}",
        )


@pytest.fixture
def local(tmp_path):
    return FileSystemStorage(location=str(tmp_path / "local"))


@pytest.fixture
def remote(unique):
    from storages.backends.s3 import S3Storage

    return S3Storage(location=f"direct-{unique}")


def md5(data: bytes) -> Any:
    return hashlib.md5(data, usedforsecurity=False)


def key(remote: Any, name: str) -> str:
    return remote._normalize_name(name)


def body_of(s3_client: Any, remote: Any, name: str) -> bytes:
    response = s3_client.get_object(Bucket=BUCKET, Key=key(remote, name))
    return response["Body"].read()


# Saving -----------------------------------------------------------------------


@pytest.mark.parametrize("ledger", [True, False])
def test_save_with_state_check_asks_no_remote(storage, ledger):
    with override_settings(
        QUEUED_STORAGE_NAME_CHECK="state", QUEUED_STORAGE_LEDGER=ledger
    ):
        storage.save("warm-up.txt", ContentFile(b"w"))
        with redis_round_trips() as trips, s3_requests(storage.remote) as sent:
            name = storage.save("new.txt", ContentFile(b"x"))
    assert name == "new.txt"
    assert sent == []
    # With the ledger, the ledger says whether the name is taken: the cache
    # write and the message are all that go to Redis.
    assert trips[0] <= (2 if ledger else 3)


@override_settings(QUEUED_STORAGE_NAME_CHECK="remote")
def test_save_with_remote_check_asks_the_remote_once(storage):
    storage.save("warm-up.txt", ContentFile(b"w"))
    with redis_round_trips() as trips, s3_requests(storage.remote) as sent:
        storage.save("new.txt", ContentFile(b"x"))
    assert sent == ["HeadObject"]
    assert trips[0] <= 2


def test_state_check_with_the_ledger_sees_names_the_cache_lost(storage):
    from django.core.cache import caches

    with override_settings(QUEUED_STORAGE_NAME_CHECK="state"):
        first = storage.save("kept.txt", ContentFile(b"1"))
        caches["default"].delete(storage.get_cache_key(first))
        storage.local.delete(first)
        second = storage.save("kept.txt", ContentFile(b"2"))
    assert (first, second != first) == ("kept.txt", True)


# Reading ----------------------------------------------------------------------


def transferred(storage: Any, name: str, size: int = 5) -> None:
    storage.state.record(name, FileState(Status.TRANSFERRED, "v" * 16, size))


@pytest.mark.parametrize("method", ["url", "exists", "size"])
def test_read_of_a_known_state_is_one_cache_round_trip_and_no_request(storage, method):
    transferred(storage, "seen.txt")
    with redis_round_trips() as trips, s3_requests(storage.remote) as sent:
        result = getattr(storage, method)("seen.txt")
    assert (trips[0], sent) == (1, [])
    assert (
        result
        == {"url": storage.remote.url("seen.txt"), "exists": True, "size": 5}[method]
    )


def test_urls_reads_every_state_in_one_round_trip(storage):
    names = [f"many/{i}.txt" for i in range(50)]
    for name in names:
        transferred(storage, name)
    with redis_round_trips() as trips, s3_requests(storage.remote) as sent:
        urls = storage.urls(names)
    assert (trips[0], sent) == (1, [])
    assert urls == {name: storage.remote.url(name) for name in names}


# Transferring to S3 -------------------------------------------------------------


def test_small_file_is_one_put(local, remote, s3_client):
    local.save("small.txt", ContentFile(b"hello"))
    with s3_requests(remote) as sent:
        result = transfer_file("small.txt", local, remote, content_type="text/x-test")
    assert sent == ["PutObject"]
    assert (result.uploaded, result.size) == (True, 5)
    head = s3_client.head_object(Bucket=BUCKET, Key=key(remote, "small.txt"))
    assert head["ContentType"] == "text/x-test"
    assert head["ETag"].strip('"') == md5(b"hello").hexdigest()


def test_same_object_already_there_counts_as_done(local, remote):
    local.save("twice.txt", ContentFile(b"same"))
    transfer_file("twice.txt", local, remote)
    with s3_requests(remote) as sent:
        result = transfer_file("twice.txt", local, remote)
    assert not result.uploaded
    assert sent == ["PutObject", "HeadObject"]


def test_different_object_of_the_same_size_is_not_overwritten(local, remote, s3_client):
    local.save("theirs.txt", ContentFile(b"ours"))
    s3_client.put_object(Bucket=BUCKET, Key=key(remote, "theirs.txt"), Body=b"them")
    with pytest.raises(RemoteConflict, match="was not overwritten"):
        transfer_file("theirs.txt", local, remote)
    assert body_of(s3_client, remote, "theirs.txt") == b"them"


def test_replace_overwrites_in_one_put(local, remote, s3_client):
    local.save("newer.txt", ContentFile(b"newer"))
    s3_client.put_object(Bucket=BUCKET, Key=key(remote, "newer.txt"), Body=b"old")
    with s3_requests(remote) as sent:
        assert transfer_file("newer.txt", local, remote, replace=True).uploaded
    assert sent == ["PutObject"]
    assert body_of(s3_client, remote, "newer.txt") == b"newer"


def test_without_conditional_writes_the_key_is_asked_first(local, remote, s3_client):
    local.save("asked.txt", ContentFile(b"a"))
    with s3_requests(remote) as sent:
        transfer_file("asked.txt", local, remote, conditional_writes=False)
    assert sent == ["HeadObject", "PutObject"]
    s3_client.put_object(Bucket=BUCKET, Key=key(remote, "asked.txt"), Body=b"bb")
    with pytest.raises(RemoteConflict):
        transfer_file("asked.txt", local, remote, conditional_writes=False)
    assert body_of(s3_client, remote, "asked.txt") == b"bb"


def test_large_file_goes_in_parts_with_its_etag_checked(local, remote, s3_client):
    data = bytes(range(256)) * (48 * 1024)  # 12 MiB: two parts of 8 MiB and 4 MiB
    local.save("large.bin", ContentFile(data))
    with s3_requests(remote) as sent:
        result = transfer_file("large.bin", local, remote)
    assert result.uploaded and result.size == len(data)
    assert sent == [
        "HeadObject", "CreateMultipartUpload", "UploadPart", "UploadPart",
        "CompleteMultipartUpload",
    ]  # fmt: skip
    assert body_of(s3_client, remote, "large.bin") == data
    parts = [md5(data[: 8 * MIB]).digest(), md5(data[8 * MIB :]).digest()]
    expected = f"{md5(b''.join(parts)).hexdigest()}-2"
    head = s3_client.head_object(Bucket=BUCKET, Key=key(remote, "large.bin"))
    assert head["ETag"].strip('"') == expected


class FailingFile:
    """A local file whose second read fails, as a disk error would."""

    def __init__(self, handle: Any) -> None:
        self.handle, self.reads = handle, 0

    def read(self, size: int = -1) -> bytes:
        self.reads += 1
        if self.reads == 2:
            raise OSError("read error")
        return self.handle.read(size)

    def __enter__(self) -> FailingFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.handle.close()


class FailingStorage(FileSystemStorage):
    def open(self, name: str, mode: str = "rb") -> Any:
        return FailingFile(super().open(name, mode))


def test_failed_multipart_upload_is_aborted(tmp_path, remote, s3_client):
    local = FailingStorage(location=str(tmp_path / "failing"))
    local.save("broken.bin", ContentFile(b"z" * (12 * MIB)))
    with pytest.raises(OSError, match="read error"):
        transfer_file("broken.bin", local, remote)
    uploads = s3_client.list_multipart_uploads(Bucket=BUCKET, Prefix=key(remote, ""))
    assert uploads.get("Uploads", []) == []
    assert not remote.exists("broken.bin")


def test_missing_local_copy_with_the_remote_one_counts_as_done(
    local, remote, s3_client
):
    s3_client.put_object(Bucket=BUCKET, Key=key(remote, "moved.txt"), Body=b"moved")
    result = transfer_file("moved.txt", local, remote)
    assert (result.uploaded, result.size) == (False, 5)
