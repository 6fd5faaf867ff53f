"""QueuedAzureStorage against Azurite's Blob service, moved by a real worker."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.db import transaction

from queued_storage.backends import QueuedAzureStorage
from tests.conftest import wait_for
from tests.services import AzuriteServer

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("celery_worker"),
]

CONTAINER = "media"


@pytest.fixture(scope="module")
def azurite() -> Iterator[AzuriteServer]:
    with AzuriteServer() as server:
        server.make_container(CONTAINER, public=True)
        yield server


def make_storage(
    azurite: AzuriteServer, tmp_path: Path, unique: str, **remote_options: Any
) -> QueuedAzureStorage:
    return QueuedAzureStorage(
        local_options={"location": str(tmp_path / "local"), "base_url": "/local/"},
        remote_options={
            "connection_string": azurite.connection_string,
            "azure_container": CONTAINER,
            **remote_options,
        },
        reference=f"azure-test-{unique}",
    )


def blob(azurite: AzuriteServer, name: str) -> Any:
    return azurite.client().get_blob_client(CONTAINER, name)


def save_pending(
    storage: QueuedAzureStorage, azurite: AzuriteServer, name: str, body: bytes
) -> str:
    """Save *body*, check it is served locally, and let it be queued."""
    with transaction.atomic():
        name = storage.save(name, ContentFile(body))
        assert storage.using_local(name)
        assert storage.url(name) == f"/local/{name}"
        with storage.open(name) as local_file:
            assert local_file.read() == body
        assert not blob(azurite, name).exists()
    return name


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310
        return response.read()


def test_round_trip_serves_locally_then_from_azure(
    azurite: AzuriteServer, tmp_path: Path, unique: str
) -> None:
    storage = make_storage(azurite, tmp_path, unique)
    body = f"queued to Azure {unique}\n".encode()
    name = save_pending(storage, azurite, f"docs/{unique}.txt", body)
    assert Path(storage.local.path(name)).read_bytes() == body

    wait_for(lambda: storage.using_remote(name))

    url = storage.url(name)
    assert url == f"{azurite.endpoint_url}/{CONTAINER}/{name}"
    assert fetch(url) == body
    with storage.open(name) as remote_file:
        assert type(remote_file).__module__ == "storages.backends.azure_storage"
        assert remote_file.read() == body
    assert storage.size(name) == len(body)
    stored = blob(azurite, name)
    assert stored.get_blob_properties().content_settings.content_type == "text/plain"
    assert stored.download_blob().readall() == body


def test_delete_removes_both_copies(
    azurite: AzuriteServer, tmp_path: Path, unique: str
) -> None:
    storage = make_storage(azurite, tmp_path, unique)
    name = save_pending(storage, azurite, f"docs/{unique}.txt", b"gone")
    wait_for(lambda: storage.using_remote(name))
    local_path = Path(storage.local.path(name))
    assert local_path.is_file() and blob(azurite, name).exists()

    storage.delete(name)

    assert not local_path.exists()
    assert not blob(azurite, name).exists()
    assert not storage.exists(name)


def test_cache_control_and_signed_urls_apply_to_the_remote(
    azurite: AzuriteServer, tmp_path: Path, unique: str
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
    name = save_pending(storage, azurite, f"private/{unique}.bin", body)
    wait_for(lambda: storage.using_remote(name))

    url = storage.url(name)
    base = f"{azurite.endpoint_url}/{CONTAINER}/uploads/{name}?"
    assert url.startswith(base) and "sig=" in url
    assert fetch(url) == body
    settings = blob(azurite, f"uploads/{name}").get_blob_properties().content_settings
    assert settings.cache_control == "public, max-age=600"
    assert not blob(azurite, name).exists()
