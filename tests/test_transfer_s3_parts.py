"""Large files to S3 in parts uploaded at once, against the real moto server.

The parts are read into reused buffers and hashed and uploaded by several
threads; these tests check that the object and its ETag are exact, that no
more parts than allowed are in memory at once, and that a failure of any
part, or a local copy that ends early, aborts the upload and leaves nothing.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage

from queued_storage import transfer_s3
from queued_storage.exceptions import VerificationFailed
from queued_storage.transfer import transfer_file

BUCKET = "queued-storage-tests"
MIB = 1024 * 1024
PART = 5 * MIB


@pytest.fixture
def local(tmp_path):
    return FileSystemStorage(location=str(tmp_path / "local"))


@pytest.fixture
def remote(unique):
    from storages.backends.s3 import S3Storage

    # Parts of S3's smallest size keep the files of these tests small.
    storage = S3Storage(location=f"parts-{unique}")
    storage.transfer_config.multipart_threshold = PART
    storage.transfer_config.multipart_chunksize = PART
    return storage


def data_of(size: int) -> bytes:
    """Return *size* bytes that differ from part to part."""
    block = hashlib.sha256(str(size).encode()).digest() * 2048  # 64 KiB
    return b"".join(
        bytes([i % 251]) + block[1:] for i in range(-(-size // len(block)))
    )[:size]


def multipart_etag(data: bytes) -> str:
    parts = [
        hashlib.md5(data[i : i + PART], usedforsecurity=False).digest()
        for i in range(0, len(data), PART)
    ]
    combined = hashlib.md5(b"".join(parts), usedforsecurity=False).hexdigest()
    return f"{combined}-{len(parts)}"


def uploads_left(s3_client: Any, remote: Any) -> list[Any]:
    found = s3_client.list_multipart_uploads(
        Bucket=BUCKET, Prefix=remote._normalize_name("")
    )
    return list(found.get("Uploads", []))


class PartWatch:
    """Record, from the client's events, the parts sent and how many at once."""

    def __init__(self, client: Any, fail_part: int | None = None) -> None:
        self.client, self.fail_part = client, fail_part
        self.lock = threading.Lock()
        self.sending = self.most = 0
        self.threads: set[int] = set()
        self.parts: list[int] = []

    def before(self, params: dict[str, Any], **kwargs: Any) -> None:
        number = params["PartNumber"]
        with self.lock:
            self.parts.append(number)
            self.threads.add(threading.get_ident())
            self.sending += 1
            self.most = max(self.most, self.sending)
        if number == self.fail_part:
            with self.lock:
                self.sending -= 1
            # What a lost connection does; a real server cannot be made to
            # drop only one part of an upload.
            raise EndpointConnectionError(endpoint_url="http://part.invalid")

    def after(self, **kwargs: Any) -> None:
        with self.lock:
            self.sending -= 1

    def __enter__(self) -> PartWatch:
        events = self.client.meta.events
        events.register("provide-client-params.s3.UploadPart", self.before)
        events.register("after-call.s3.UploadPart", self.after)
        return self

    def __exit__(self, *exc: Any) -> None:
        events = self.client.meta.events
        events.unregister("provide-client-params.s3.UploadPart", self.before)
        events.unregister("after-call.s3.UploadPart", self.after)


def test_parts_go_up_from_several_threads_and_the_etag_is_exact(
    local, remote, s3_client
):
    data = data_of(5 * PART + 12345)  # Six parts, the last a short one.
    local.save("many-parts.bin", ContentFile(data))
    with PartWatch(remote.connection.meta.client) as watch:
        result = transfer_file("many-parts.bin", local, remote)
    assert result.uploaded and result.size == len(data)
    assert sorted(watch.parts) == [1, 2, 3, 4, 5, 6]
    assert len(watch.threads) > 1
    assert result.checksum == multipart_etag(data)
    key = remote._normalize_name("many-parts.bin")
    assert s3_client.get_object(Bucket=BUCKET, Key=key)["Body"].read() == data
    head = s3_client.head_object(Bucket=BUCKET, Key=key)
    assert head["ETag"].strip('"') == multipart_etag(data)
    assert uploads_left(s3_client, remote) == []


def test_no_more_parts_than_the_in_flight_limit_are_held(
    local, remote, s3_client, monkeypatch
):
    monkeypatch.setattr(transfer_s3, "IN_FLIGHT", 2 * PART)
    made: list[int] = []
    real_read_into = transfer_s3.read_into

    def read_into(content: Any, buffer: bytearray) -> None:
        made.append(id(buffer))
        real_read_into(content, buffer)

    monkeypatch.setattr(transfer_s3, "read_into", read_into)
    data = data_of(7 * PART)
    local.save("bounded.bin", ContentFile(data))
    with PartWatch(remote.connection.meta.client) as watch:
        result = transfer_file("bounded.bin", local, remote)
    assert result.checksum == multipart_etag(data)
    assert watch.most <= 2
    # Seven parts went through two buffers, reused.
    assert len(made) == 7 and len(set(made)) <= 2
    key = remote._normalize_name("bounded.bin")
    assert s3_client.get_object(Bucket=BUCKET, Key=key)["Body"].read() == data


def test_a_failed_part_aborts_the_upload_and_leaves_nothing(local, remote, s3_client):
    data = data_of(8 * PART)
    local.save("lost-part.bin", ContentFile(data))
    with PartWatch(remote.connection.meta.client, fail_part=3) as watch:
        with pytest.raises(EndpointConnectionError):
            transfer_file("lost-part.bin", local, remote)
    assert 3 in watch.parts
    assert uploads_left(s3_client, remote) == []
    assert not remote.exists("lost-part.bin")
    # Once the part goes through, the same file uploads whole.
    assert transfer_file("lost-part.bin", local, remote).checksum == (
        multipart_etag(data)
    )


class ShrinkingFile(io.FileIO):
    """A file that another process cuts short when its third read starts."""

    reads = 0

    def readinto(self, buffer: Any) -> int | None:
        self.reads += 1
        if self.reads == 3:
            os.truncate(self.name, 2 * PART + 100)
        return super().readinto(buffer)


class ShrinkingStorage(FileSystemStorage):
    def open(self, name: str, mode: str = "rb") -> Any:
        return File(ShrinkingFile(self.path(name), "rb"), name)


def test_a_local_copy_cut_short_while_read_fails_verification_and_aborts(
    tmp_path, remote, s3_client
):
    local = ShrinkingStorage(location=str(tmp_path / "shrinking"))
    local.save("cut.bin", ContentFile(data_of(5 * PART)))
    with pytest.raises(VerificationFailed, match="ended after"):
        transfer_file("cut.bin", local, remote)
    assert uploads_left(s3_client, remote) == []
    assert not remote.exists("cut.bin")
