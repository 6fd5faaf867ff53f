"""Remove a local copy only if it is still the one that was transferred.

With a local storage that overwrites files saved again, a new save of a name
can land while ``TransferAndDelete`` finishes the transfer of the previous
version. Deleting by name would then remove the new bytes. The copy is first
moved aside, atomically, so that a save from then on writes a new file;
then, once any writer that already had it open is done (it holds a lock
while it writes), its identity is compared with the one taken before the
upload. A copy that changed is put back.
"""

from __future__ import annotations

import logging
import os
import secrets
from contextvars import ContextVar
from typing import Any

from django.core.files import locks
from django.core.files.storage import InMemoryStorage

#: What tells one version of a local file from another: device, inode, size
#: and modification time in nanoseconds (a rewrite in place changes the
#: last, a replacement by rename the inode).
Identity = tuple[int, int, int, int]


#: The local storage, the name and the identity of the copy that the transfer
#: running in this context read, taken before its upload began: what the local
#: retention compares with before removing that copy.
uploading: ContextVar[tuple[Any, str, Identity | None] | None] = ContextVar(
    "queued_storage_uploading", default=None
)


def identity_read(local: Any, name: str) -> Identity | None:
    """Return the identity the running transfer read of *name*, if it did."""
    read = uploading.get()
    if read is None or read[0] is not local or read[1] != name:
        return None
    return read[2]


def unchanged(path: str, expected: Identity) -> bool:
    """Return whether the file at *path* still has the identity *expected*.

    A save writing into it holds a lock: this waits for it first.
    """
    with open(path, "rb") as handle:
        locks.lock(handle, locks.LOCK_EX)
        return _identity(os.fstat(handle.fileno())) == expected


def disk_path(local: Any, name: str) -> str | None:
    """Return the path of *name* on disk, or ``None`` for a storage without one.

    ``InMemoryStorage`` answers ``path()`` with a place under ``MEDIA_ROOT``
    where none of its files is: a real file found there belongs to someone
    else and must never be measured, moved or removed for it.
    """
    if isinstance(local, InMemoryStorage):
        return None
    try:
        return str(local.path(name))
    except (NotImplementedError, AttributeError):
        return None


def _identity(stat: os.stat_result) -> Identity:
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def identity(local: Any, name: str) -> Identity | None:
    """Return the identity of the local copy of *name*, if it has a path."""
    path = disk_path(local, name)
    if path is None:
        return None
    try:
        return _identity(os.stat(path))
    except OSError:
        return None


def delete_if_unchanged(local: Any, name: str, expected: Identity | None) -> bool:
    """Delete the local copy of *name* if its identity is still *expected*.

    Return whether it is gone. Without a path or an *expected* identity the
    copy is deleted by name, as the storage does.
    """
    path = disk_path(local, name)
    if path is None or expected is None:
        local.delete(name)
        return True
    aside = os.path.join(os.path.dirname(path), f".qs-deleting-{secrets.token_hex(8)}")
    try:
        move_aside(path, aside)
    except FileNotFoundError:
        return True
    try:
        # A save that opened the file before it moved writes on under a
        # lock: wait for it, then look.
        if unchanged(aside, expected):
            os.remove(aside)
            return True
        _put_back(aside, path)
        return False
    except BaseException:
        _put_back(aside, path)
        raise


def move_aside(path: str, aside: str) -> None:
    """Rename *path* to *aside*: from here on, the copy is out of reads' way."""
    os.rename(path, aside)


def _put_back(aside: str, path: str) -> None:
    """Move *aside* back to *path*, unless a newer save wrote *path* since."""
    try:
        os.link(aside, path)
    except FileExistsError:
        pass  # The newer file stays; the one aside was overwritten anyway.
    except OSError:
        if not os.path.exists(path):
            os.rename(aside, path)
            return
    try:
        os.remove(aside)
    except FileNotFoundError:
        pass


def delete_transferred(queued: Any, name: str, expected: Identity | None) -> bool:
    """Delete the local copy of *name* if it is the one that was transferred.

    The ledger (or, without it, the cache) must still record *name* as
    served from the remote, and the copy must still have the identity
    *expected* that it had when its upload began: a save that replaced it
    meanwhile keeps its bytes. Return whether the copy was deleted.
    """
    current = queued.state.get(name, durable=True)
    if current is None or not current.is_remote:
        removed = False  # Saved again or deleted: not this transfer's copy.
    else:
        removed = delete_if_unchanged(queued.local, name, expected)
    if not removed:
        logging.getLogger("queued_storage").info(
            "Kept the local copy of %r: it changed after its upload.", name,
            extra={"file_name": name, "storage": queued.reference},
        )  # fmt: skip
    return removed
