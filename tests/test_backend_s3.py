"""QueuedS3Storage against moto's S3 server, moved by a real Celery worker.

Each test saves inside a transaction, so that the file is still pending and
served locally until the commit queues its transfer; then the worker moves
it and the file is served from S3.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile

from queued_storage.backends import QueuedS3BotoStorage, QueuedS3Storage
from tests import backend_roundtrip as roundtrip

pytestmark = roundtrip.MARKS

BUCKET = settings.AWS_STORAGE_BUCKET_NAME


@pytest.fixture
def stored(s3_client: Any) -> roundtrip.Stored:
    """What the bucket holds."""

    def stored(name: str) -> bytes | None:
        try:
            found = s3_client.get_object(Bucket=BUCKET, Key=name)
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("404", "NoSuchKey"):
                return None
            raise
        return found["Body"].read()

    return stored


def make_storage(tmp_path: Path, unique: str, **remote_options: Any) -> QueuedS3Storage:
    return QueuedS3Storage(
        local_options=roundtrip.local_options(tmp_path),
        remote_options=remote_options,
        reference=f"s3-test-{unique}",
    )


def test_round_trip_serves_locally_then_from_s3(
    tmp_path: Path, unique: str, stored: roundtrip.Stored, servers: dict[str, Any]
) -> None:
    storage = make_storage(tmp_path, unique)
    body = f"queued to S3 {unique}\n".encode()
    name = roundtrip.check_round_trip(
        storage,
        f"docs/{unique}.txt",
        body,
        stored,
        base_url=f"{servers['s3'].endpoint_url}/{BUCKET}/",
        module="storages.backends.s3",
    )
    assert roundtrip.fetch(storage.url(name)) == body


def test_delete_removes_both_copies(
    tmp_path: Path, unique: str, stored: roundtrip.Stored
) -> None:
    storage = make_storage(tmp_path, unique)
    roundtrip.check_delete_removes_both_copies(storage, f"docs/{unique}.txt", stored)


def test_object_parameters_and_content_type_reach_the_object(
    tmp_path: Path, unique: str, s3_client: Any, stored: roundtrip.Stored
) -> None:
    storage = make_storage(
        tmp_path,
        unique,
        object_parameters={
            "CacheControl": "max-age=86400, public",
            "ContentDisposition": 'attachment; filename="report.pdf"',
        },
    )
    upload = SimpleUploadedFile(
        f"{unique}.pdf", b"%PDF-1.4 not really", content_type="application/pdf"
    )
    name = roundtrip.save_transferred(storage, f"reports/{unique}.pdf", upload, stored)

    head = s3_client.head_object(Bucket=BUCKET, Key=name)
    assert head["CacheControl"] == "max-age=86400, public"
    assert head["ContentDisposition"] == 'attachment; filename="report.pdf"'
    assert head["ContentType"] == "application/pdf"
    assert head["ContentLength"] == len(b"%PDF-1.4 not really")


def test_declared_content_type_reaches_the_object(
    tmp_path: Path, unique: str, s3_client: Any, stored: roundtrip.Stored
) -> None:
    storage = make_storage(tmp_path, unique)
    upload = SimpleUploadedFile(unique, b"\x89PNG\r\n\x1a\n", content_type="image/png")
    name = roundtrip.save_transferred(storage, f"avatars/{unique}", upload, stored)

    head = s3_client.head_object(Bucket=BUCKET, Key=name)
    assert head["ContentType"] == "image/png"


def test_custom_domain_urls_once_transferred(
    tmp_path: Path, unique: str, stored: roundtrip.Stored
) -> None:
    storage = make_storage(tmp_path, unique, custom_domain="cdn.example.test")
    name = roundtrip.save_transferred(storage, f"img/{unique}.txt", b"cdn", stored)

    assert storage.url(name) == f"https://cdn.example.test/{name}"
    assert storage.urls([name]) == {name: f"https://cdn.example.test/{name}"}


def test_signed_urls_fetch_the_remote_bytes(
    tmp_path: Path, unique: str, stored: roundtrip.Stored, servers: dict[str, Any]
) -> None:
    storage = make_storage(
        tmp_path,
        unique,
        querystring_auth=True,
        querystring_expire=120,
        signature_version="s3v4",
    )
    body = bytes(range(256)) * 64
    name = roundtrip.save_transferred(storage, f"private/{unique}.bin", body, stored)

    url = storage.url(name)
    assert url.startswith(f"{servers['s3'].endpoint_url}/{BUCKET}/{name}?")
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=120" in url
    assert roundtrip.fetch(url) == body


def test_boto_name_is_the_same_class() -> None:
    assert QueuedS3BotoStorage is QueuedS3Storage


def test_acl_and_declared_content_type_reach_the_object_of_an_inline_transfer(
    tmp_path: Path, unique: str, s3_client: Any
) -> None:
    storage = QueuedS3Storage(
        local_options=roundtrip.local_options(tmp_path),
        remote_options={"default_acl": "public-read"},
        reference=f"s3-inline-{unique}",
        delayed=True,  # No worker takes it: this process transfers it.
    )
    upload = SimpleUploadedFile(unique, b"GIF89a", content_type="image/gif")
    name = storage.save(f"inline/{unique}", upload)
    assert storage.transfer(name, now=True).is_remote

    head = s3_client.head_object(Bucket=BUCKET, Key=name)
    assert head["ContentType"] == "image/gif"
    grants = s3_client.get_object_acl(Bucket=BUCKET, Key=name)["Grants"]
    assert any(
        grant["Grantee"].get("URI", "").endswith("/global/AllUsers")
        and grant["Permission"] == "READ"
        for grant in grants
    )
