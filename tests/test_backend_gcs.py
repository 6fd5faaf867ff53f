"""QueuedGoogleCloudStorage against gcp-storage-emulator, moved by a real worker.

google-cloud-storage finds the emulator through ``STORAGE_EMULATOR_HOST``,
set for this module only; the storage's own options carry the bucket, the
project and anonymous credentials.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.db import transaction
from google.auth.credentials import AnonymousCredentials

from queued_storage.backends import QueuedGoogleCloudStorage
from tests.conftest import wait_for
from tests.services import GCSServer
from tests.services.gcs import PROJECT

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("celery_worker"),
]

BUCKET = "queued-storage-gcs"


@pytest.fixture(scope="module")
def gcs() -> Iterator[GCSServer]:
    with GCSServer() as server, pytest.MonkeyPatch.context() as patch:
        for variable, value in server.environ().items():
            patch.setenv(variable, value)
        server.make_bucket(BUCKET)
        yield server


def make_storage(
    tmp_path: Path, unique: str, **remote_options: Any
) -> QueuedGoogleCloudStorage:
    return QueuedGoogleCloudStorage(
        local_options={"location": str(tmp_path / "local"), "base_url": "/local/"},
        remote_options={
            "bucket_name": BUCKET,
            "project_id": PROJECT,
            "credentials": AnonymousCredentials(),
            "querystring_auth": False,
            **remote_options,
        },
        reference=f"gcs-test-{unique}",
    )


def blob(gcs: GCSServer, name: str) -> Any:
    return gcs.client().bucket(BUCKET).get_blob(name)


def save_pending(
    storage: QueuedGoogleCloudStorage, gcs: GCSServer, name: str, body: bytes
) -> str:
    """Save *body*, check it is served locally, and let it be queued."""
    with transaction.atomic():
        name = storage.save(name, ContentFile(body))
        assert storage.using_local(name)
        assert storage.url(name) == f"/local/{name}"
        with storage.open(name) as local_file:
            assert local_file.read() == body
        assert blob(gcs, name) is None
    return name


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310
        return response.read()


def test_round_trip_serves_locally_then_from_gcs(
    gcs: GCSServer, tmp_path: Path, unique: str
) -> None:
    storage = make_storage(tmp_path, unique)
    body = f"queued to Google Cloud Storage {unique}\n".encode()
    name = save_pending(storage, gcs, f"docs/{unique}.txt", body)
    assert Path(storage.local.path(name)).read_bytes() == body

    wait_for(lambda: storage.using_remote(name))

    url = storage.url(name)
    assert url == f"{gcs.endpoint_url}/{BUCKET}/{name}"
    assert fetch(url) == body
    with storage.open(name) as remote_file:
        assert type(remote_file).__module__ == "storages.backends.gcloud"
        assert remote_file.read() == body
    assert storage.size(name) == len(body)
    stored = blob(gcs, name)
    assert stored.content_type == "text/plain"
    assert stored.download_as_bytes() == body


def test_delete_removes_both_copies(
    gcs: GCSServer, tmp_path: Path, unique: str
) -> None:
    storage = make_storage(tmp_path, unique)
    name = save_pending(storage, gcs, f"docs/{unique}.txt", b"gone")
    wait_for(lambda: storage.using_remote(name))
    local_path = Path(storage.local.path(name))
    assert local_path.is_file() and blob(gcs, name) is not None

    storage.delete(name)

    assert not local_path.exists()
    assert blob(gcs, name) is None
    assert not storage.exists(name)


def test_object_parameters_and_custom_endpoint_apply_to_the_remote(
    gcs: GCSServer, tmp_path: Path, unique: str
) -> None:
    storage = make_storage(
        tmp_path,
        unique,
        location="media",
        custom_endpoint="https://storage.example.test",
        object_parameters={"cache_control": "public, max-age=600"},
    )
    name = save_pending(storage, gcs, f"img/{unique}.json", b'{"ok": true}')
    wait_for(lambda: storage.using_remote(name))

    assert storage.url(name) == f"https://storage.example.test/media/{name}"
    # Read the metadata before downloading: a download replaces it with
    # what the emulator's response headers say.
    stored = blob(gcs, f"media/{name}")
    assert stored.cache_control == "public, max-age=600"
    assert stored.content_type == "application/json"
    assert stored.download_as_bytes() == b'{"ok": true}'
    assert blob(gcs, name) is None
