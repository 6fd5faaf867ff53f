"""QueuedS3Storage against moto's S3 server, moved by a real Celery worker.

Each test saves inside a transaction, so that the file is still pending and
served locally until the commit queues its transfer; then the worker moves
it and the file is served from S3.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction

from queued_storage.backends import QueuedS3BotoStorage, QueuedS3Storage
from tests.conftest import wait_for

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("celery_worker"),
]

BUCKET = settings.AWS_STORAGE_BUCKET_NAME


def make_storage(tmp_path: Path, unique: str, **remote_options: Any) -> QueuedS3Storage:
    return QueuedS3Storage(
        local_options={"location": str(tmp_path / "local"), "base_url": "/local/"},
        remote_options=remote_options,
        reference=f"s3-test-{unique}",
    )


def save_pending(storage: QueuedS3Storage, name: str, content: Any, s3: Any) -> str:
    """Save *content*, check it is served locally, and let it be queued."""
    with transaction.atomic():
        name = storage.save(name, content)
        assert storage.using_local(name)
        assert storage.url(name) == f"/local/{name}"
        content.seek(0)
        with storage.open(name) as local_file:
            assert local_file.read() == content.read()
        assert not stored_on_s3(s3, name)
    return name


def stored_on_s3(s3: Any, name: str) -> bool:
    try:
        s3.head_object(Bucket=BUCKET, Key=name)
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("404", "NoSuchKey"):
            return False
        raise
    return True


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310
        return response.read()


def test_round_trip_serves_locally_then_from_s3(
    tmp_path: Path, unique: str, s3_client: Any, servers: dict[str, Any]
) -> None:
    storage = make_storage(tmp_path, unique)
    body = f"queued to S3 {unique}\n".encode()
    name = save_pending(storage, f"docs/{unique}.txt", ContentFile(body), s3_client)
    local_path = Path(storage.local.path(name))
    assert local_path.read_bytes() == body

    wait_for(lambda: storage.using_remote(name))

    url = storage.url(name)
    assert url == f"{servers['s3'].endpoint_url}/{BUCKET}/{name}"
    assert fetch(url) == body
    with storage.open(name) as remote_file:
        assert type(remote_file).__module__ == "storages.backends.s3"
        assert remote_file.read() == body
    assert storage.size(name) == len(body)
    assert s3_client.get_object(Bucket=BUCKET, Key=name)["Body"].read() == body


def test_delete_removes_both_copies(
    tmp_path: Path, unique: str, s3_client: Any
) -> None:
    storage = make_storage(tmp_path, unique)
    name = save_pending(storage, f"docs/{unique}.txt", ContentFile(b"gone"), s3_client)
    wait_for(lambda: storage.using_remote(name))
    local_path = Path(storage.local.path(name))
    assert local_path.is_file() and stored_on_s3(s3_client, name)

    storage.delete(name)

    assert not local_path.exists()
    assert not stored_on_s3(s3_client, name)
    assert not storage.exists(name)


def test_object_parameters_and_content_type_reach_the_object(
    tmp_path: Path, unique: str, s3_client: Any
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
    name = save_pending(storage, f"reports/{unique}.pdf", upload, s3_client)
    wait_for(lambda: storage.using_remote(name))

    head = s3_client.head_object(Bucket=BUCKET, Key=name)
    assert head["CacheControl"] == "max-age=86400, public"
    assert head["ContentDisposition"] == 'attachment; filename="report.pdf"'
    assert head["ContentType"] == "application/pdf"
    assert head["ContentLength"] == len(b"%PDF-1.4 not really")


def test_declared_content_type_reaches_the_object(
    tmp_path: Path, unique: str, s3_client: Any
) -> None:
    storage = make_storage(tmp_path, unique)
    upload = SimpleUploadedFile(unique, b"\x89PNG\r\n\x1a\n", content_type="image/png")
    name = save_pending(storage, f"avatars/{unique}", upload, s3_client)
    wait_for(lambda: storage.using_remote(name))

    head = s3_client.head_object(Bucket=BUCKET, Key=name)
    assert head["ContentType"] == "image/png"


def test_custom_domain_urls_once_transferred(
    tmp_path: Path, unique: str, s3_client: Any
) -> None:
    storage = make_storage(tmp_path, unique, custom_domain="cdn.example.test")
    name = save_pending(storage, f"img/{unique}.txt", ContentFile(b"cdn"), s3_client)
    wait_for(lambda: storage.using_remote(name))

    assert storage.url(name) == f"https://cdn.example.test/{name}"
    assert storage.urls([name]) == {name: f"https://cdn.example.test/{name}"}


def test_signed_urls_fetch_the_remote_bytes(
    tmp_path: Path, unique: str, s3_client: Any, servers: dict[str, Any]
) -> None:
    storage = make_storage(
        tmp_path,
        unique,
        querystring_auth=True,
        querystring_expire=120,
        signature_version="s3v4",
    )
    body = bytes(range(256)) * 64
    name = save_pending(storage, f"private/{unique}.bin", ContentFile(body), s3_client)
    wait_for(lambda: storage.using_remote(name))

    url = storage.url(name)
    assert url.startswith(f"{servers['s3'].endpoint_url}/{BUCKET}/{name}?")
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=120" in url
    assert fetch(url) == body


def test_boto_name_is_the_same_class() -> None:
    assert QueuedS3BotoStorage is QueuedS3Storage
