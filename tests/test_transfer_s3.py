"""Transfers to S3 through the storage's own client, against moto's server.

What the common paths of ``tests/test_performance_paths.py`` leave out: a
local copy that changes while it is read, a name the storage would clean,
parts sent one at a time or with the checksum the storage asks for, an
object already there, a server error, a damaged upload, and the check of
an upload already made.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

import pytest
from botocore.exceptions import ClientError
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, InMemoryStorage

from queued_storage.exceptions import NameChanged, VerificationFailed
from queued_storage.transfer import remote_matches, transfer_file
from tests.test_performance_paths import BUCKET, MIB, body_of, key, s3_requests

#: Three parts of 5 MiB, 5 MiB and 1 MiB with a 5 MiB part size.
ELEVEN_MIB = bytes(range(256)) * (44 * 1024)


@pytest.fixture
def local(tmp_path):
    return FileSystemStorage(location=str(tmp_path / "local"))


def s3_storage(
    unique: str, *, parts: bool = False, threads: bool = True, **options: Any
) -> Any:
    """Return an S3 storage; with *parts*, files above 5 MiB go in 5 MiB parts."""
    from boto3.s3.transfer import TransferConfig
    from storages.backends.s3 import S3Storage

    if parts:
        options["transfer_config"] = TransferConfig(
            multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB,
            use_threads=threads,
        )  # fmt: skip
    return S3Storage(location=f"transfer-s3-{unique}", **options)


@pytest.fixture
def remote(unique):
    return s3_storage(unique)


def exists(s3_client: Any, remote: Any, name: str) -> bool:
    found = s3_client.list_objects_v2(Bucket=BUCKET, Prefix=key(remote, name))
    return bool(found.get("Contents"))


class MisreportedSize(InMemoryStorage):
    """A local storage whose copy changes between its measure and its read."""

    delta = 0

    def size(self, name: str) -> int:
        return super().size(name) + self.delta


@pytest.mark.parametrize(
    ("delta", "data", "message"),
    [
        (7, b"x" * 100, "ended after 100 of 107 bytes"),
        (-7, b"x" * 100, "grew while it was read"),
        (MIB, ELEVEN_MIB, "ended after"),
        (-MIB, ELEVEN_MIB, "grew while it was read"),
    ],
    ids=["shrunk", "grown", "shrunk-in-parts", "grown-in-parts"],
)
def test_a_local_copy_changing_while_read_is_not_uploaded(
    unique, s3_client, delta, data, message
):
    remote = s3_storage(unique, parts=True)
    local = MisreportedSize()
    local.delta = delta
    local.save("changing.bin", ContentFile(data))
    with pytest.raises(VerificationFailed, match=message):
        transfer_file("changing.bin", local, remote)
    assert not exists(s3_client, remote, "changing.bin")
    uploads = s3_client.list_multipart_uploads(Bucket=BUCKET, Prefix=key(remote, ""))
    assert uploads.get("Uploads", []) == []


def test_a_name_the_storage_would_clean_is_refused_before_any_request(local, remote):
    local.save("dir/plain.txt", ContentFile(b"x"))
    with s3_requests(remote) as sent, pytest.raises(NameChanged, match="cleaning"):
        transfer_file("dir\\plain.txt", local, remote)
    assert sent == []


def test_without_threads_the_parts_go_up_one_at_a_time(local, unique, s3_client):
    remote = s3_storage(unique, parts=True, threads=False)
    local.save("serial.bin", ContentFile(ELEVEN_MIB))
    client = remote.connection.meta.client
    in_flight, most, lock = [0], [0], threading.Lock()

    def started(**kwargs: Any) -> None:
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])

    def finished(**kwargs: Any) -> None:
        with lock:
            in_flight[0] -= 1

    client.meta.events.register("before-call.s3.UploadPart", started)
    client.meta.events.register("after-call.s3.UploadPart", finished)
    try:
        with s3_requests(remote) as sent:
            result = transfer_file("serial.bin", local, remote)
    finally:
        client.meta.events.unregister("before-call.s3.UploadPart", started)
        client.meta.events.unregister("after-call.s3.UploadPart", finished)
    assert result.uploaded
    assert sent.count("UploadPart") == 3
    assert most[0] == 1
    assert body_of(s3_client, remote, "serial.bin") == ELEVEN_MIB


def test_parts_carry_the_checksum_the_storage_asks_for(local, unique, s3_client):
    remote = s3_storage(
        unique, parts=True, object_parameters={"ChecksumAlgorithm": "SHA256"}
    )
    local.save("summed.bin", ContentFile(ELEVEN_MIB))
    client = remote.connection.meta.client
    asked: list[tuple[str, Any]] = []

    def record(params: dict[str, Any], model: Any, **kwargs: Any) -> None:
        if model.name == "UploadPart":
            asked.append((model.name, params.get("ChecksumAlgorithm")))
        elif model.name == "CompleteMultipartUpload":
            for part in params["MultipartUpload"]["Parts"]:
                asked.append((model.name, "ChecksumSHA256" in part))

    client.meta.events.register("provide-client-params.s3", record)
    try:
        result = transfer_file("summed.bin", local, remote)
    finally:
        client.meta.events.unregister("provide-client-params.s3", record)
    assert result.uploaded
    assert [a for a in asked if a[0] == "UploadPart"] == [("UploadPart", "SHA256")] * 3
    assert body_of(s3_client, remote, "summed.bin") == ELEVEN_MIB


def test_a_large_file_already_there_is_not_read_or_sent_again(local, remote):
    data = b"L" * (12 * MIB)
    local.save("again.bin", ContentFile(data))
    assert transfer_file("again.bin", local, remote).uploaded
    with s3_requests(remote) as sent:
        result = transfer_file("again.bin", local, remote)
    assert (result.uploaded, result.size) == (False, len(data))
    assert sent == ["HeadObject"]


def test_an_error_of_the_server_is_raised_and_nothing_counts_as_done(local, unique):
    remote = s3_storage(unique, bucket_name=f"no-such-bucket-{unique}")
    local.save("nowhere.txt", ContentFile(b"x"))
    with pytest.raises(ClientError, match="NoSuchBucket"):
        transfer_file("nowhere.txt", local, remote)


def damage_etag(remote: Any, operation: str) -> Any:
    """Make S3 seem to answer *operation* with an ETag of other bytes."""

    def damaged(parsed: dict[str, Any], **kwargs: Any) -> None:
        if "ETag" in parsed:
            parsed["ETag"] = '"00000000000000000000000000000000"'

    remote.connection.meta.client.meta.events.register(
        f"after-call.s3.{operation}", damaged
    )
    return damaged


def test_an_upload_with_a_wrong_etag_is_removed_and_fails(local, remote, s3_client):
    local.save("damaged.txt", ContentFile(b"bytes that were read"))
    handler = damage_etag(remote, "PutObject")
    try:
        with pytest.raises(VerificationFailed, match="it was removed"):
            transfer_file("damaged.txt", local, remote)
    finally:
        remote.connection.meta.client.meta.events.unregister(
            "after-call.s3.PutObject", handler
        )
    assert not exists(s3_client, remote, "damaged.txt")
    # Nothing is left in the way of the retry.
    assert transfer_file("damaged.txt", local, remote).uploaded


def test_with_kms_encryption_the_size_checks_an_etag_that_is_no_md5(
    local, unique, s3_client
):
    remote = s3_storage(unique, object_parameters={"ServerSideEncryption": "aws:kms"})
    local.save("kms.txt", ContentFile(b"encrypted at rest"))
    handler = damage_etag(remote, "PutObject")
    try:
        result = transfer_file("kms.txt", local, remote)
    finally:
        remote.connection.meta.client.meta.events.unregister(
            "after-call.s3.PutObject", handler
        )
    assert (result.uploaded, result.size) == (True, len(b"encrypted at rest"))
    assert body_of(s3_client, remote, "kms.txt") == b"encrypted at rest"


def test_the_check_of_an_upload_compares_the_bytes(local, remote, s3_client):
    local.save("checked.txt", ContentFile(b"local bytes"))
    assert not remote_matches("checked.txt", local, remote)
    result = transfer_file("checked.txt", local, remote)
    assert remote_matches("checked.txt", local, remote)
    assert remote_matches("checked.txt", local, remote, result.checksum)
    other = hashlib.md5(b"other", usedforsecurity=False).hexdigest()
    assert not remote_matches("checked.txt", local, remote, other)
    s3_client.put_object(
        Bucket=BUCKET, Key=key(remote, "checked.txt"), Body=b"other bytes"
    )
    assert not remote_matches("checked.txt", local, remote)
    # A local copy that is gone leaves nothing to compare: a match.
    local.delete("checked.txt")
    assert remote_matches("checked.txt", local, remote)


def test_without_django_storages_no_remote_takes_the_s3_path(remote, monkeypatch):
    import sys

    from queued_storage import transfer_s3

    assert transfer_s3.applies_to(remote)
    monkeypatch.setitem(sys.modules, "storages.backends.s3", None)
    assert not transfer_s3.applies_to(remote)
