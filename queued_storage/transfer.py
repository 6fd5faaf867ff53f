"""Copy one file from a local storage to a remote one, and verify the copy.

This module knows nothing of Celery, the cache or settings: it takes two
storages and a name, so it can be called from a task, a management command
or a test alike.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

from django.core.files.storage import Storage

from .exceptions import (
    LocalFileMissing,
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
    otherwise.
    """
    try:
        return local.size(name)
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
    with local.open(name, "rb") as content:
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
