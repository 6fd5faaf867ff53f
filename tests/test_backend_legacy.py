"""The classes whose django-storages backend is gone: kept for imports only.

Built without ``remote=`` they say which backend was removed and what to
pass instead; given a remote they work like any queued storage.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.files.base import ContentFile
from django.db import transaction

from queued_storage.backends import (
    QueuedCloudFilesStorage,
    QueuedCouchDBStorage,
    QueuedDatabaseStorage,
    QueuedFileSystemStorage,
    QueuedGridFSStorage,
    QueuedMogileFSStorage,
)
from tests.conftest import wait_for

FS = "django.core.files.storage.FileSystemStorage"

REMOVED = {
    QueuedCouchDBStorage: "storages.backends.couchdb.CouchDBStorage",
    QueuedDatabaseStorage: "storages.backends.database.DatabaseStorage",
    QueuedMogileFSStorage: "storages.backends.mogile.MogileFSStorage",
    QueuedGridFSStorage: "storages.backends.mongodb.GridFSStorage",
    QueuedCloudFilesStorage: "storages.backends.mosso.CloudFilesStorage",
}

legacy = pytest.mark.parametrize(
    "cls", list(REMOVED), ids=[cls.__name__ for cls in REMOVED]
)


@legacy
def test_kept_as_file_system_queued_storages(cls: type) -> None:
    assert issubclass(cls, QueuedFileSystemStorage)
    assert cls.local == FS


@legacy
def test_without_remote_names_the_removed_backend_and_the_fix(cls: type) -> None:
    with pytest.raises(ImproperlyConfigured) as raised:
        cls()
    message = str(raised.value)
    assert message.startswith(f"{cls.__name__}'s remote backend {REMOVED[cls]} ")
    assert "was removed from django-storages" in message
    assert "Pass remote='dotted.path.of.a.Storage'" in message
    assert "remote_options" in message


@legacy
def test_options_alone_are_not_enough(cls: type, tmp_path: Path) -> None:
    with pytest.raises(ImproperlyConfigured, match=REMOVED[cls]):
        cls(remote_options={"location": str(tmp_path)})


@legacy
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("celery_worker")
def test_with_an_explicit_remote_the_file_moves(
    cls: type, tmp_path: Path, unique: str
) -> None:
    storage = cls(
        remote=FS,
        local_options={"location": str(tmp_path / "local"), "base_url": "/local/"},
        remote_options={"location": str(tmp_path / "remote"), "base_url": "/remote/"},
        reference=f"legacy-test-{unique}",
    )
    body = f"{cls.__name__} {unique}".encode()
    with transaction.atomic():
        name = storage.save(f"docs/{unique}.txt", ContentFile(body))
        assert storage.url(name) == f"/local/{name}"
        assert not (tmp_path / "remote" / name).exists()

    wait_for(lambda: storage.using_remote(name))

    assert storage.url(name) == f"/remote/{name}"
    assert (tmp_path / "remote" / name).read_bytes() == body
    with storage.open(name) as remote_file:
        assert Path(remote_file.name).is_relative_to(tmp_path / "remote")
        assert remote_file.read() == body

    storage.delete(name)

    assert not (tmp_path / "local" / name).exists()
    assert not (tmp_path / "remote" / name).exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("celery_worker")
def test_a_storages_alias_serves_as_the_remote(tmp_path: Path, unique: str) -> None:
    storage = QueuedCouchDBStorage(
        remote="remote_s3",
        local_options={"location": str(tmp_path / "local")},
        reference=f"legacy-alias-test-{unique}",
    )
    name = storage.save(f"docs/{unique}.txt", ContentFile(b"via the alias"))
    wait_for(lambda: storage.using_remote(name))

    assert type(storage.remote).__name__ == "S3Storage"
    with storage.open(name) as remote_file:
        assert remote_file.read() == b"via the alias"
    storage.delete(name)
    assert not storage.remote.exists(name)
