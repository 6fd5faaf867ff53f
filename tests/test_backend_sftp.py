"""QueuedSFTPStorage against an SSH server on loopback, moved by a real worker.

The server logs in with a key made for this run only and the storage trusts
only the server's own host key. What the server stored is read from the
directory it serves.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from queued_storage.backends import QueuedSFTPStorage
from queued_storage.status import Status
from tests import backend_roundtrip as roundtrip
from tests.conftest import wait_for
from tests.services import SFTPServer

pytestmark = roundtrip.MARKS

BASE_URL = "https://files.example.test/media/"


@pytest.fixture(scope="module")
def sftp() -> Iterator[SFTPServer]:
    with SFTPServer() as server:
        yield server


@pytest.fixture
def stored(sftp: SFTPServer) -> roundtrip.Stored:
    """What the server keeps under ``/media``."""
    return roundtrip.files_under(sftp.root / "media")


@pytest.fixture
def storage(
    sftp: SFTPServer, tmp_path: Path, unique: str
) -> Iterator[QueuedSFTPStorage]:
    storage = make_storage(sftp, tmp_path, unique)
    yield storage
    storage.remote.close()


def make_storage(
    sftp: SFTPServer, tmp_path: Path, unique: str, **remote_options: Any
) -> QueuedSFTPStorage:
    return QueuedSFTPStorage(
        local_options=roundtrip.local_options(tmp_path),
        remote_options={
            **sftp.storage_options(root_path="/media"),
            "base_url": BASE_URL,
            **remote_options,
        },
        reference=f"sftp-test-{unique}",
    )


def on_server(sftp: SFTPServer, name: str) -> Path:
    """Return where the server keeps *name*, stored under ``/media``."""
    return sftp.root / "media" / name


def test_round_trip_serves_locally_then_over_sftp(
    storage: QueuedSFTPStorage, stored: roundtrip.Stored, unique: str
) -> None:
    roundtrip.check_round_trip(
        storage,
        f"docs/{unique}.txt",
        f"queued over SFTP {unique}\n".encode(),
        stored,
        base_url=BASE_URL,
        module="storages.backends.sftpstorage",
    )


def test_delete_removes_both_copies(
    storage: QueuedSFTPStorage, stored: roundtrip.Stored, unique: str
) -> None:
    roundtrip.check_delete_removes_both_copies(storage, f"docs/{unique}.txt", stored)


def test_file_and_directory_modes_apply_on_the_server(
    sftp: SFTPServer, stored: roundtrip.Stored, tmp_path: Path, unique: str
) -> None:
    storage = make_storage(sftp, tmp_path, unique, file_mode=0o640, dir_mode=0o750)
    try:
        name = roundtrip.save_transferred(
            storage, f"modes-{unique}/deep/file.bin", b"\0" * 99, stored
        )
        path = on_server(sftp, name)
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o750
        assert stored(name) == b"\0" * 99
    finally:
        storage.remote.close()


def test_a_host_key_that_does_not_match_fails_the_transfer(
    sftp: SFTPServer, stored: roundtrip.Stored, tmp_path: Path, unique: str
) -> None:
    import asyncssh

    impostor = tmp_path / "known_hosts"
    other_key = asyncssh.generate_private_key("ssh-ed25519").export_public_key()
    impostor.write_text(f"[{sftp.host}]:{sftp.port} {other_key.decode().strip()}\n")
    storage = make_storage(sftp, tmp_path, unique, known_host_file=str(impostor))
    # Checking the name on the remote would already refuse the host: let the
    # transfer be what meets it.
    with override_settings(QUEUED_STORAGE_NAME_CHECK="state"):
        name = roundtrip.save_pending(
            storage, f"docs/{unique}.txt", b"never sent", stored
        )

    failed = wait_for(
        lambda: (
            (s := storage.get_state(name)) is not None
            and s.status == Status.FAILED
            and s
        ),
        timeout=60,
    )
    assert "BadHostKeyException" in failed.error
    assert failed.attempts == 3
    assert storage.url(name) == f"/local/{name}"
    assert stored(name) is None
