"""QueuedFTPStorage against a pyftpdlib server, moved by a real worker."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.db import transaction

from queued_storage.backends import QueuedFTPStorage
from tests.conftest import wait_for
from tests.services import FTPServer

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("celery_worker"),
]

BASE_URL = "https://ftp.example.test/media/"


@pytest.fixture(scope="module")
def ftp() -> Iterator[FTPServer]:
    with FTPServer() as server:
        # FTPStorage changes into its directory on login: it must exist.
        (server.root / "media").mkdir()
        yield server


@pytest.fixture
def storage(ftp: FTPServer, tmp_path: Path, unique: str) -> Iterator[QueuedFTPStorage]:
    storage = QueuedFTPStorage(
        local_options={"location": str(tmp_path / "local"), "base_url": "/local/"},
        remote_options={"location": ftp.location("media/"), "base_url": BASE_URL},
        reference=f"ftp-test-{unique}",
    )
    yield storage
    if storage.remote._connection is not None:
        storage.remote.disconnect()


def on_server(ftp: FTPServer, name: str) -> Path:
    """Return where the server keeps *name*, stored under ``/media``."""
    return ftp.root / "media" / name


def download(ftp: FTPServer, name: str) -> bytes:
    """Return *name* as the server sends it to a client of its own."""
    received = io.BytesIO()
    client: Any = ftp.client()
    try:
        client.retrbinary(f"RETR /media/{name}", received.write)
    finally:
        client.quit()
    return received.getvalue()


def save_pending(
    storage: QueuedFTPStorage, ftp: FTPServer, name: str, body: bytes
) -> str:
    """Save *body*, check it is served locally, and let it be queued."""
    with transaction.atomic():
        name = storage.save(name, ContentFile(body))
        assert storage.using_local(name)
        assert storage.url(name) == f"/local/{name}"
        with storage.open(name) as local_file:
            assert local_file.read() == body
        assert not on_server(ftp, name).exists()
    return name


def test_round_trip_serves_locally_then_over_ftp(
    ftp: FTPServer, storage: QueuedFTPStorage, unique: str
) -> None:
    body = f"queued over FTP {unique}\n".encode()
    name = save_pending(storage, ftp, f"docs/{unique}.txt", body)
    assert Path(storage.local.path(name)).read_bytes() == body

    wait_for(lambda: storage.using_remote(name))

    assert storage.url(name) == f"{BASE_URL}{name}"
    with storage.open(name) as remote_file:
        assert type(remote_file).__module__ == "storages.backends.ftp"
        assert remote_file.read() == body
    assert storage.size(name) == len(body)
    assert download(ftp, name) == body
    assert on_server(ftp, name).read_bytes() == body


def test_delete_removes_both_copies(
    ftp: FTPServer, storage: QueuedFTPStorage, unique: str
) -> None:
    name = save_pending(storage, ftp, f"docs/{unique}.txt", b"gone")
    wait_for(lambda: storage.using_remote(name))
    local_path = Path(storage.local.path(name))
    assert local_path.is_file() and on_server(ftp, name).is_file()

    storage.delete(name)

    assert not local_path.exists()
    assert not on_server(ftp, name).exists()
    assert not storage.exists(name)


def test_binary_content_survives_the_transfer(
    ftp: FTPServer, storage: QueuedFTPStorage, unique: str
) -> None:
    body = bytes(range(256)) * 512 + b"\r\n\n\r"
    name = save_pending(storage, ftp, f"bin/{unique}.dat", body)
    wait_for(lambda: storage.using_remote(name))

    assert download(ftp, name) == body
    with storage.open(name) as remote_file:
        assert remote_file.read() == body
