"""QueuedAzureStorage against Azurite's Blob service, moved by a real worker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from queued_storage.backends import QueuedAzureStorage
from tests import backend_roundtrip as roundtrip
from tests.services import AzuriteServer

pytestmark = roundtrip.MARKS

CONTAINER = "media"


@pytest.fixture(scope="module")
def azurite() -> Iterator[AzuriteServer]:
    with AzuriteServer() as server:
        server.make_container(CONTAINER, public=True)
        yield server


@pytest.fixture
def stored(azurite: AzuriteServer) -> roundtrip.Stored:
    """What the container holds."""

    def stored(name: str) -> bytes | None:
        found = blob(azurite, name)
        return found.download_blob().readall() if found.exists() else None

    return stored


def make_storage(
    azurite: AzuriteServer, tmp_path: Path, unique: str, **remote_options: Any
) -> QueuedAzureStorage:
    return QueuedAzureStorage(
        local_options=roundtrip.local_options(tmp_path),
        remote_options={
            "connection_string": azurite.connection_string,
            "azure_container": CONTAINER,
            **remote_options,
        },
        reference=f"azure-test-{unique}",
    )


def blob(azurite: AzuriteServer, name: str) -> Any:
    return azurite.client().get_blob_client(CONTAINER, name)


def test_round_trip_serves_locally_then_from_azure(
    azurite: AzuriteServer, stored: roundtrip.Stored, tmp_path: Path, unique: str
) -> None:
    storage = make_storage(azurite, tmp_path, unique)
    body = f"queued to Azure {unique}\n".encode()
    name = roundtrip.check_round_trip(
        storage,
        f"docs/{unique}.txt",
        body,
        stored,
        base_url=f"{azurite.endpoint_url}/{CONTAINER}/",
        module="storages.backends.azure_storage",
    )
    assert roundtrip.fetch(storage.url(name)) == body
    settings = blob(azurite, name).get_blob_properties().content_settings
    assert settings.content_type == "text/plain"


def test_delete_removes_both_copies(
    azurite: AzuriteServer, stored: roundtrip.Stored, tmp_path: Path, unique: str
) -> None:
    storage = make_storage(azurite, tmp_path, unique)
    roundtrip.check_delete_removes_both_copies(storage, f"docs/{unique}.txt", stored)


def test_cache_control_and_signed_urls_apply_to_the_remote(
    azurite: AzuriteServer, stored: roundtrip.Stored, tmp_path: Path, unique: str
) -> None:
    storage = make_storage(
        azurite,
        tmp_path,
        unique,
        location="uploads",
        expiration_secs=120,
        cache_control="public, max-age=600",
    )
    body = bytes(range(256)) * 64
    name = roundtrip.save_transferred(storage, f"private/{unique}.bin", body, stored)

    url = storage.url(name)
    base = f"{azurite.endpoint_url}/{CONTAINER}/uploads/{name}?"
    assert url.startswith(base) and "sig=" in url
    assert roundtrip.fetch(url) == body
    settings = blob(azurite, f"uploads/{name}").get_blob_properties().content_settings
    assert settings.cache_control == "public, max-age=600"
    assert stored(name) is None


def test_declared_content_type_reaches_a_blob_without_an_extension(
    azurite: AzuriteServer, stored: roundtrip.Stored, tmp_path: Path, unique: str
) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    storage = make_storage(azurite, tmp_path, unique)
    upload = SimpleUploadedFile(unique, b"\x89PNG\r\n\x1a\n", content_type="image/png")
    name = roundtrip.save_transferred(storage, f"avatars/{unique}", upload, stored)
    settings = blob(azurite, name).get_blob_properties().content_settings
    assert settings.content_type == "image/png"
