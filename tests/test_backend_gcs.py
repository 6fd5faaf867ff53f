"""QueuedGoogleCloudStorage against gcp-storage-emulator, moved by a real worker.

google-cloud-storage finds the emulator through ``STORAGE_EMULATOR_HOST``,
set for this module only; the storage's own options carry the bucket, the
project and anonymous credentials.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.auth.credentials import AnonymousCredentials

from queued_storage.backends import QueuedGoogleCloudStorage
from tests import backend_roundtrip as roundtrip
from tests.services import GCSServer
from tests.services.gcs import PROJECT

pytestmark = roundtrip.MARKS

BUCKET = "queued-storage-gcs"


@pytest.fixture(scope="module")
def gcs() -> Iterator[GCSServer]:
    with GCSServer() as server, pytest.MonkeyPatch.context() as patch:
        for variable, value in server.environ().items():
            patch.setenv(variable, value)
        server.make_bucket(BUCKET)
        yield server


@pytest.fixture
def stored(gcs: GCSServer) -> roundtrip.Stored:
    """What the bucket holds."""

    def stored(name: str) -> bytes | None:
        found = blob(gcs, name)
        return None if found is None else found.download_as_bytes()

    return stored


def make_storage(
    tmp_path: Path, unique: str, **remote_options: Any
) -> QueuedGoogleCloudStorage:
    return QueuedGoogleCloudStorage(
        local_options=roundtrip.local_options(tmp_path),
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


def test_round_trip_serves_locally_then_from_gcs(
    gcs: GCSServer, stored: roundtrip.Stored, tmp_path: Path, unique: str
) -> None:
    storage = make_storage(tmp_path, unique)
    body = f"queued to Google Cloud Storage {unique}\n".encode()
    name = roundtrip.check_round_trip(
        storage,
        f"docs/{unique}.txt",
        body,
        stored,
        base_url=f"{gcs.endpoint_url}/{BUCKET}/",
        module="storages.backends.gcloud",
    )
    assert roundtrip.fetch(storage.url(name)) == body
    assert blob(gcs, name).content_type == "text/plain"


def test_delete_removes_both_copies(
    stored: roundtrip.Stored, tmp_path: Path, unique: str
) -> None:
    storage = make_storage(tmp_path, unique)
    roundtrip.check_delete_removes_both_copies(storage, f"docs/{unique}.txt", stored)


def test_object_parameters_and_custom_endpoint_apply_to_the_remote(
    gcs: GCSServer, stored: roundtrip.Stored, tmp_path: Path, unique: str
) -> None:
    storage = make_storage(
        tmp_path,
        unique,
        location="media",
        custom_endpoint="https://storage.example.test",
        object_parameters={"cache_control": "public, max-age=600"},
    )
    name = roundtrip.save_transferred(
        storage, f"img/{unique}.json", b'{"ok": true}', stored
    )

    assert storage.url(name) == f"https://storage.example.test/media/{name}"
    # Read the metadata before downloading: a download replaces it with
    # what the emulator's response headers say.
    metadata = blob(gcs, f"media/{name}")
    assert metadata.cache_control == "public, max-age=600"
    assert metadata.content_type == "application/json"
    assert stored(f"media/{name}") == b'{"ok": true}'
    assert stored(name) is None


def test_declared_content_type_reaches_a_blob_without_an_extension(
    gcs: GCSServer, stored: roundtrip.Stored, tmp_path: Path, unique: str
) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    storage = make_storage(tmp_path, unique)
    upload = SimpleUploadedFile(unique, b"\x89PNG\r\n\x1a\n", content_type="image/png")
    name = roundtrip.save_transferred(storage, f"avatars/{unique}", upload, stored)
    assert blob(gcs, name).content_type == "image/png"
