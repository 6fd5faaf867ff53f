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
from django.core.files.base import ContentFile
from django.db import transaction
from django.test import override_settings

from queued_storage.backends import QueuedSFTPStorage
from queued_storage.status import Status
from tests.conftest import wait_for
from tests.services import SFTPServer

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("celery_worker"),
]

BASE_URL = "https://files.example.test/media/"


@pytest.fixture(scope="module")
def sftp() -> Iterator[SFTPServer]:
    with SFTPServer() as server:
        yield server


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
        local_options={"location": str(tmp_path / "local"), "base_url": "/local/"},
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


def save_pending(
    storage: QueuedSFTPStorage, sftp: SFTPServer, name: str, body: bytes
) -> str:
    """Save *body*, check it is served locally, and let it be queued."""
    with transaction.atomic():
        name = storage.save(name, ContentFile(body))
        assert storage.using_local(name)
        assert storage.url(name) == f"/local/{name}"
        with storage.open(name) as local_file:
            assert local_file.read() == body
        assert not on_server(sftp, name).exists()
    return name


def test_round_trip_serves_locally_then_over_sftp(
    sftp: SFTPServer, storage: QueuedSFTPStorage, unique: str
) -> None:
    body = f"queued over SFTP {unique}\n".encode()
    name = save_pending(storage, sftp, f"docs/{unique}.txt", body)
    assert Path(storage.local.path(name)).read_bytes() == body

    wait_for(lambda: storage.using_remote(name))

    assert storage.url(name) == f"{BASE_URL}{name}"
    with storage.open(name) as remote_file:
        assert type(remote_file).__module__ == "storages.backends.sftpstorage"
        assert remote_file.read() == body
    assert storage.size(name) == len(body)
    assert on_server(sftp, name).read_bytes() == body


def test_delete_removes_both_copies(
    sftp: SFTPServer, storage: QueuedSFTPStorage, unique: str
) -> None:
    name = save_pending(storage, sftp, f"docs/{unique}.txt", b"gone")
    wait_for(lambda: storage.using_remote(name))
    local_path = Path(storage.local.path(name))
    assert local_path.is_file() and on_server(sftp, name).is_file()

    storage.delete(name)

    assert not local_path.exists()
    assert not on_server(sftp, name).exists()
    assert not storage.exists(name)


def test_file_and_directory_modes_apply_on_the_server(
    sftp: SFTPServer, tmp_path: Path, unique: str
) -> None:
    storage = make_storage(sftp, tmp_path, unique, file_mode=0o640, dir_mode=0o750)
    try:
        name = save_pending(storage, sftp, f"modes-{unique}/deep/file.bin", b"\0" * 99)
        wait_for(lambda: storage.using_remote(name))
        stored = on_server(sftp, name)
        assert stat.S_IMODE(stored.stat().st_mode) == 0o640
        assert stat.S_IMODE(stored.parent.stat().st_mode) == 0o750
        assert stored.read_bytes() == b"\0" * 99
    finally:
        storage.remote.close()


def test_a_host_key_that_does_not_match_fails_the_transfer(
    sftp: SFTPServer, tmp_path: Path, unique: str
) -> None:
    import asyncssh

    impostor = tmp_path / "known_hosts"
    other_key = asyncssh.generate_private_key("ssh-ed25519").export_public_key()
    impostor.write_text(f"[{sftp.host}]:{sftp.port} {other_key.decode().strip()}\n")
    storage = make_storage(sftp, tmp_path, unique, known_host_file=str(impostor))
    # Checking the name on the remote would already refuse the host: let the
    # transfer be what meets it.
    with override_settings(QUEUED_STORAGE_NAME_CHECK="state"):
        name = save_pending(storage, sftp, f"docs/{unique}.txt", b"never sent")

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
    assert not on_server(sftp, name).exists()
