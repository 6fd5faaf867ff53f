"""Copy one file from a local storage to a remote one, and verify the copy.

This module knows nothing of Celery, the cache or settings: it takes two
storages and a name, so it can be called from a task, a management command
or a test alike.
"""

from __future__ import annotations

import copy
import errno
import logging
import os
import stat
from dataclasses import dataclass
from typing import Any

from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage

from .exceptions import (
    LocalFileChanged,
    LocalFileMissing,
    LocalFileUnsafe,
    NameChanged,
    RemoteConflict,
    VerificationFailed,
)

logger = logging.getLogger("queued_storage")


def declaring(remote: Storage, content_type: str) -> Storage:
    """Return *remote*, or a copy of it that gives the object *content_type*.

    Most backends take the type from the file's ``content_type``. Google
    Cloud Storage's takes it from the name or from its ``object_parameters``
    only, so an upload named without an extension would land as
    ``application/octet-stream``: a shallow copy (sharing the client) gets
    the declared type among its object parameters, unless they set one.
    """
    params = getattr(remote, "object_parameters", None)
    if (
        not content_type
        or type(remote).__module__ != "storages.backends.gcloud"
        or not isinstance(params, dict)
        or "content_type" in params
    ):
        return remote
    clone = copy.copy(remote)
    clone.object_parameters = {**params, "content_type": content_type}  # type: ignore[attr-defined]
    return clone


@dataclass(frozen=True)
class TransferResult:
    """The outcome of a transfer that succeeded."""

    name: str
    size: int
    #: ``False`` when the remote already held a matching copy (a transfer
    #: interrupted after its upload, or a message delivered twice).
    uploaded: bool
    #: The remote's checksum of what was uploaded (an S3 ETag), if it has one.
    checksum: str = ""


def _describe(storage: Storage) -> str:
    cls = type(storage)
    return f"{cls.__module__}.{cls.__qualname__}"


def local_size(
    name: str, local: Storage, remote: Storage, expected: int | None = None
) -> int | TransferResult:
    """Return the size of the local copy of *name*.

    Return a finished :class:`TransferResult` instead when the local copy is
    gone but the remote holds the file (a ``TransferAndDelete`` may have
    removed it after the upload) with the *expected* size, when known; raise
    otherwise. A local copy whose size is not the *expected* one was changed
    or replaced since it was saved: it raises
    :class:`~queued_storage.exceptions.LocalFileChanged`, and is not
    uploaded.
    """
    try:
        found = local.size(name)
    except (FileNotFoundError, OSError) as exc:
        if remote.exists(name):
            found = remote.size(name)
            if expected is None or found == expected:
                return TransferResult(name, found, uploaded=False)
        raise LocalFileMissing(
            f"The local copy of {name!r} cannot be read by this worker "
            f"({_describe(local)}: {exc}). Workers must see the local storage of "
            "the web process that saved the file: share the volume, or route "
            "transfers to a queue per host (QUEUED_STORAGE_PER_HOST_QUEUE)."
        ) from exc
    check_size(name, found, expected)
    return found


def check_size(name: str, found: int, expected: int | None) -> None:
    """Raise unless the local copy's *found* size is the *expected* one."""
    if expected is not None and found != expected:
        raise LocalFileChanged(
            f"The local copy of {name!r} has {found} bytes, but {expected} were "
            "saved: it was changed or replaced after the save, and was not "
            "uploaded. Save the file again to transfer its new content."
        )


#: Flags that make ``os.open()`` refuse a symbolic link instead of following it.
_NO_FOLLOW = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_FOLDER = _NO_FOLLOW | getattr(os, "O_DIRECTORY", 0)


def follows_no_links(local: Storage) -> bool:
    """Return whether :func:`open_local` opens *local*'s files link by link.

    That is the case for Django's ``FileSystemStorage`` and subclasses that
    find and open files as it does, on systems that can open relative to a
    folder.
    """
    cls = type(local)
    return (
        isinstance(local, FileSystemStorage)
        and all(
            getattr(cls, method, None) is getattr(FileSystemStorage, method, None)
            for method in ("open", "_open", "path")
        )
        and os.open in os.supports_dir_fd
        and bool(getattr(os, "O_NOFOLLOW", 0))
    )


def open_local(name: str, local: Storage, size: int) -> File:
    """Open the local copy of *name*, which was measured at *size* bytes.

    In a ``FileSystemStorage`` the path is opened one segment at a time
    below the storage's root, refusing symbolic links (a link swapped in
    after the save would have another file uploaded), then checked to be a
    regular file of *size* bytes. Raise
    :class:`~queued_storage.exceptions.LocalFileUnsafe` or
    :class:`~queued_storage.exceptions.LocalFileChanged`. Other storages
    open the file their own way.
    """
    if not (isinstance(local, FileSystemStorage) and follows_no_links(local)):
        return local.open(name, "rb")
    *folders, filename = name.split("/")
    # The root itself may be a link, which the operator chose.
    parent = os.open(local.location, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        for folder in folders:
            inner = _open_below(parent, folder, _FOLDER, name)
            os.close(parent)
            parent = inner
        fd = _open_below(parent, filename, _NO_FOLLOW | os.O_NONBLOCK, name)
    finally:
        os.close(parent)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise LocalFileUnsafe(
                f"The local copy of {name!r} is not a regular file; it was not "
                "uploaded."
            )
        check_size(name, info.st_size, size)
        os.set_blocking(fd, True)
        opened = File(os.fdopen(fd, "rb"), name)
    except BaseException:
        os.close(fd)
        raise
    opened.size = info.st_size
    return opened


def _open_below(parent: int, part: str, flags: int, name: str) -> int:
    try:
        return os.open(part, flags, dir_fd=parent)
    except OSError as exc:
        # Linux says ENOTDIR for a link opened as a folder, ELOOP for one
        # opened as a file; FreeBSD says EMLINK.
        if exc.errno in (errno.ELOOP, errno.EMLINK) or _is_link(parent, part):
            raise LocalFileUnsafe(
                f"The local copy of {name!r} is a symbolic link or is reached "
                "through one; it was not uploaded. Links inside the local "
                "storage are never followed: a link placed there after the save "
                "could have another file uploaded."
            ) from exc
        raise


def conflict(name: str, remote: Storage) -> RemoteConflict:
    return RemoteConflict(
        f"{_describe(remote)} already holds a different object named "
        f"{name!r}; it was not overwritten. Remove or rename it there, "
        "then retry the transfer."
    )


def transfer_file(
    name: str,
    local: Storage,
    remote: Storage,
    *,
    replace: bool = False,
    content_type: str = "",
    conditional_writes: bool = True,
    size: int | None = None,
) -> TransferResult:
    """Copy *name* from *local* to *remote* under the same name, streaming it.

    The remote copy is verified to have the local copy's size before this
    returns. A remote object already under *name* with the same size counts
    as done; one of another size raises
    :class:`~queued_storage.exceptions.RemoteConflict`. With *replace* (the
    local storage replaces files saved again) the remote object may be an
    older version of any size, and is replaced. A missing local copy with a
    remote one of the recorded *size* (when known) also counts as done, since
    a ``TransferAndDelete`` may have removed it after the upload.
    *content_type*, the type the upload declared, is offered to the remote
    (the local copy alone knows only its name).

    An ``S3Storage`` remote is written with its own client, bucket and object
    parameters in as few requests as the file allows (see
    :mod:`queued_storage.transfer_s3`). With *conditional_writes* false it
    asks whether the key exists before writing, for S3-compatible servers
    that ignore ``If-None-Match``.
    """
    from . import transfer_s3

    if transfer_s3.applies_to(remote):
        return transfer_s3.transfer(
            name, local, remote, replace=replace, content_type=content_type,
            conditional=conditional_writes, expected=size,
        )  # fmt: skip
    found = local_size(name, local, remote, size)
    if isinstance(found, TransferResult):
        return found
    size = found
    if remote.exists(name):
        if replace:
            # Perhaps an older version of the same size: only bytes could tell.
            remote.delete(name)
        elif remote.size(name) == size:
            return TransferResult(name, size, uploaded=False)
        else:
            raise conflict(name, remote)
    with open_local(name, local, size) as content:
        if content_type:
            content.content_type = content_type
        stored = declaring(remote, content_type).save(name, content)
    if stored != name:
        # The copy under the other name was made just now by this call.
        remote.delete(stored)
        raise NameChanged(
            f"{_describe(remote)} stored {name!r} as {stored!r}; the copy was "
            "removed. The remote must keep names unchanged (check its "
            "file_overwrite or get_available_name behaviour)."
        )
    verify_size(name, remote.size(name), size)
    return TransferResult(name, size, uploaded=True)


def remote_matches(
    name: str, local: Storage, remote: Storage, checksum: str = ""
) -> bool:
    """Return whether *remote* holds the bytes of the local copy of *name*.

    An S3 remote compares its MD5 ETag with *checksum* (one a transfer
    returned) or else with the local copy's; other remotes compare sizes.
    A local copy that is gone leaves nothing to compare: that counts as a
    match.
    """
    from . import transfer_s3

    if transfer_s3.applies_to(remote):
        return transfer_s3.matches(name, local, remote, checksum or None)
    try:
        size = local.size(name)
    except OSError:
        return True
    return bool(remote.exists(name)) and remote.size(name) == size


def verify_size(name: str, remote_size: Any, size: int) -> None:
    """Raise unless the remote copy of *name* has the local copy's *size*."""
    if remote_size != size:
        raise VerificationFailed(
            f"The remote copy of {name!r} has {remote_size} bytes, "
            f"the local one {size}."
        )


def _is_link(parent: int, part: str) -> bool:
    """Return whether *part*, in the folder open as *parent*, is a link."""
    try:
        info = os.stat(part, dir_fd=parent, follow_symlinks=False)
    except OSError:
        return False
    return stat.S_ISLNK(info.st_mode)
