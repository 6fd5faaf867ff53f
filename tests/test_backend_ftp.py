"""QueuedFTPStorage against a pyftpdlib server, moved by a real worker."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from queued_storage.backends import QueuedFTPStorage
from tests import backend_roundtrip as roundtrip
from tests.services import FTPServer

pytestmark = roundtrip.MARKS

BASE_URL = "https://ftp.example.test/media/"


@pytest.fixture(scope="module")
def ftp() -> Iterator[FTPServer]:
    with FTPServer() as server:
        # FTPStorage changes into its directory on login: it must exist.
        (server.root / "media").mkdir()
        yield server


@pytest.fixture
def stored(ftp: FTPServer) -> roundtrip.Stored:
    """What the server keeps under ``/media``."""
    return roundtrip.files_under(ftp.root / "media")


@pytest.fixture
def storage(ftp: FTPServer, tmp_path: Path, unique: str) -> Iterator[QueuedFTPStorage]:
    storage = QueuedFTPStorage(
        local_options=roundtrip.local_options(tmp_path),
        remote_options={"location": ftp.location("media/"), "base_url": BASE_URL},
        reference=f"ftp-test-{unique}",
    )
    yield storage
    if storage.remote._connection is not None:
        storage.remote.disconnect()


def download(ftp: FTPServer, name: str) -> bytes:
    """Return *name* as the server sends it to a client of its own."""
    received = io.BytesIO()
    client: Any = ftp.client()
    try:
        client.retrbinary(f"RETR /media/{name}", received.write)
    finally:
        client.quit()
    return received.getvalue()


def test_round_trip_serves_locally_then_over_ftp(
    ftp: FTPServer, storage: QueuedFTPStorage, stored: roundtrip.Stored, unique: str
) -> None:
    body = f"queued over FTP {unique}\n".encode()
    name = roundtrip.check_round_trip(
        storage,
        f"docs/{unique}.txt",
        body,
        stored,
        base_url=BASE_URL,
        module="storages.backends.ftp",
    )
    assert download(ftp, name) == body


def test_delete_removes_both_copies(
    storage: QueuedFTPStorage, stored: roundtrip.Stored, unique: str
) -> None:
    roundtrip.check_delete_removes_both_copies(storage, f"docs/{unique}.txt", stored)


def test_binary_content_survives_the_transfer(
    ftp: FTPServer, storage: QueuedFTPStorage, stored: roundtrip.Stored, unique: str
) -> None:
    body = bytes(range(256)) * 512 + b"\r\n\n\r"
    name = roundtrip.save_transferred(storage, f"bin/{unique}.dat", body, stored)

    assert download(ftp, name) == body
    with storage.open(name) as remote_file:
        assert remote_file.read() == body
