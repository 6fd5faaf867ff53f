"""What the tests of the remote backends check on every backend alike.

Each backend's tests describe their server with a *stored* function: the
bytes the server holds under a name, or ``None`` when it holds nothing
there. Files are saved inside a transaction, so that they are still pending
and served locally until the commit queues their transfer; then a real
worker moves them and they are served from the remote.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.files.base import ContentFile, File
from django.db import transaction

from queued_storage.backends import QueuedStorage
from tests.conftest import wait_for

#: The bytes a server holds under a name, or ``None`` if it holds none.
Stored = Callable[[str], bytes | None]

#: The ``pytestmark`` of every module whose files a real worker moves.
MARKS = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("celery_worker"),
]


def local_options(tmp_path: Path) -> dict[str, Any]:
    """Return the options of the local storage, under *tmp_path*."""
    return {"location": str(tmp_path / "local"), "base_url": "/local/"}


def files_under(root: Path) -> Stored:
    """Return a *stored* function for a server that keeps files in *root*."""

    def stored(name: str) -> bytes | None:
        path = root / name
        # A directory in the file's place is read, and fails the test.
        return path.read_bytes() if path.exists() else None

    return stored


def fetch(url: str) -> bytes:
    """Return what an HTTP client gets from *url*."""
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310
        return response.read()


def save_pending(
    storage: QueuedStorage, name: str, content: bytes | File, stored: Stored
) -> str:
    """Save *content*, check it is served locally, and let it be queued."""
    file = ContentFile(content) if isinstance(content, bytes) else content
    with transaction.atomic():
        name = storage.save(name, file)
        assert storage.using_local(name)
        assert storage.url(name) == f"/local/{name}"
        file.seek(0)
        body = file.read()
        with storage.open(name) as local_file:
            assert local_file.read() == body
        assert stored(name) is None
    return name


def save_transferred(
    storage: QueuedStorage, name: str, content: bytes | File, stored: Stored
) -> str:
    """Save *content* as :func:`save_pending` does; wait until it is remote."""
    name = save_pending(storage, name, content, stored)
    wait_for(lambda: storage.using_remote(name))
    return name


def check_round_trip(
    storage: QueuedStorage,
    name: str,
    body: bytes,
    stored: Stored,
    *,
    base_url: str,
    module: str,
) -> str:
    """Save *body* and follow it from the local storage to the remote.

    Once moved, the file's URL is *base_url* and its name, it opens as a
    file of the remote backend's *module*, and the server holds *body*.
    """
    name = save_pending(storage, name, body, stored)
    assert Path(storage.local.path(name)).read_bytes() == body

    wait_for(lambda: storage.using_remote(name))

    assert storage.url(name) == f"{base_url}{name}"
    with storage.open(name) as remote_file:
        assert type(remote_file).__module__ == module
        assert remote_file.read() == body
    assert storage.size(name) == len(body)
    assert stored(name) == body
    return name


def check_delete_removes_both_copies(
    storage: QueuedStorage, name: str, stored: Stored
) -> None:
    """Move a file to the remote, delete it, and check both copies are gone."""
    name = save_transferred(storage, name, b"gone", stored)
    local_path = Path(storage.local.path(name))
    assert local_path.is_file() and stored(name) == b"gone"

    storage.delete(name)

    assert not local_path.exists()
    assert stored(name) is None
    assert not storage.exists(name)
