"""The queued storage: save locally now, serve remotely once transferred."""

from __future__ import annotations

import logging
import os
import re
import secrets
from collections.abc import Callable, Iterable
from typing import Any

from django.core.files import File, locks
from django.db import transaction
from django.utils.deconstruct import deconstructible

from . import enqueue as sending
from .base import QueuedStorageBase
from .conf import settings
from .enqueue import transfer_queue as transfer_queue  # where it used to be
from .inline import run_transfer
from .s3_urls import url_builder
from .signals import file_queued
from .state import FileState, Status

logger = logging.getLogger("queued_storage")


@deconstructible(path="queued_storage.backends.QueuedStorage")
class QueuedStorage(QueuedStorageBase):
    """A storage that saves to *local* at once and moves files to *remote*.

    ``local`` and ``remote`` are dotted paths of storage classes, built with
    ``local_options`` and ``remote_options`` on first use, or aliases of the
    ``STORAGES`` setting (a value that is a key of ``STORAGES`` is an alias;
    anything else is imported as a dotted path). Until a file's transfer has
    finished it is served from the local storage, afterwards from the remote.
    """

    # Saving ----------------------------------------------------------------

    @property
    def overwrites(self) -> bool:
        """Return whether the local storage replaces files saved again."""
        local = self.local
        return bool(
            getattr(local, "_allow_overwrite", False)
            or getattr(local, "file_overwrite", False)
        )

    def is_name_available(self, name: str, max_length: int | None = None) -> bool:
        """Return whether *name* is free on the local and the remote storage."""
        if not self.local.is_name_available(name, max_length=max_length):
            return False
        if self.overwrites:
            return True
        if settings.QUEUED_STORAGE_NAME_CHECK == "remote":
            try:
                return not self.remote.exists(name)
            except Exception as exc:
                # An upload must not fail because the remote is down. The
                # error's text is left out: some backends put passwords in it.
                logger.warning(
                    "The remote could not say whether %r is free (%s); "
                    "deciding from the recorded states.", name, type(exc).__name__,
                    extra={"file_name": name, "storage": self.reference},
                )  # fmt: skip
        return not self.state.in_use(name)

    def get_available_name(self, name: str, max_length: int | None = None) -> str:
        """Return a name free on both storages, based on *name*."""
        self.validate_name(name)
        return self.validate_name(super().get_available_name(name, max_length))

    def get_valid_name(self, name: str) -> str:
        return self.local.get_valid_name(name)

    def get_alternative_name(self, file_root: str, file_ext: str) -> str:
        return self.local.get_alternative_name(file_root, file_ext)

    def generate_filename(self, filename: str | os.PathLike[str]) -> str:
        return self.local.generate_filename(filename)

    def save(
        self, name: str | None, content: Any, max_length: int | None = None
    ) -> str:
        """Save *content* locally, record its state, and queue its transfer.

        The state is recorded under the name the file was actually saved as.
        The transfer is queued when the current database transaction commits
        (at once outside a transaction), unless the storage is delayed; with
        ``QUEUED_STORAGE_OUTBOX``, the dispatcher queues it instead.
        """
        if name is None:
            name = content.name
        if not hasattr(content, "chunks"):
            content = File(content, name)
        name = self.get_available_name(self.validate_name(name), max_length)
        try:
            saved = self.local.save(name, content, max_length)
        except Exception:
            self._remove_partial(name)
            raise
        name = self.validate_name(saved)
        version = secrets.token_hex(8)
        size = getattr(content, "size", None)
        content_type = _content_type(content)
        state = FileState(Status.PENDING, version, size, content_type=content_type)
        outbox = self.uses_outbox()
        self.state.record(name, state, host=sending.this_host(), outbox=outbox)
        transaction.on_commit(
            lambda: self._queued(name, version, outbox), using=self.state.db
        )
        return name

    def uses_outbox(self) -> bool:
        """Return whether a save leaves its transfer message to the dispatcher."""
        return bool(
            settings.QUEUED_STORAGE_OUTBOX and self.state.ledger and not self.delayed
        )

    def _remove_partial(self, name: str) -> None:
        """Remove what a failed local write left under *name*.

        Django's ``FileSystemStorage`` keeps the part it wrote when the disk
        fills up midway. A file that another save has recorded, or is still
        writing (it holds a lock on the file), is left alone.
        """
        try:
            state = self.state.get(name)
            if state is not None and not state.is_deleted:
                return
            try:
                path = self.local.path(name)
            except NotImplementedError:
                self.local.delete(name)
                return
            with open(path, "rb") as partial:
                if locks.lock(partial, locks.LOCK_EX | locks.LOCK_NB):
                    os.remove(path)
        except FileNotFoundError:
            pass
        except Exception as exc:
            logger.warning(
                "Could not remove what the failed save of %r left: %s", name, exc,
                extra={"file_name": name, "storage": self.reference},
            )  # fmt: skip

    def _queued(self, name: str, version: str, outbox: bool = False) -> None:
        if self.delayed:
            then = "its transfer waits for transfer()"
        else:
            then = "the dispatcher queues it" if outbox else "queuing it"
        logger.info(
            "Saved %r locally; %s.", name, then,
            extra={"file_name": name, "storage": self.reference, "status": "pending"},
        )  # fmt: skip
        if outbox or (not self.delayed and self.enqueue(name, version) is None):
            return
        file_queued.send(type(self), name=name, storage=self, version=version)

    def transfer(
        self, name: str, cache_key: str | None = None, *, now: bool = False
    ) -> Any:
        """Queue the transfer of *name* again, for example after it failed.

        Return the Celery result, or ``None`` when the file is already remote
        or the message could not be sent. *cache_key* is accepted for
        compatibility and ignored: the key derives from the name.

        With *now*, transfer it in this process instead, without a broker,
        through the same task a worker runs, in one attempt; return the
        file's :class:`~queued_storage.status.FileState` afterwards.
        """
        self.validate_name(name)
        state = self.get_state(name)
        if state is None or state.is_deleted:
            raise FileNotFoundError(f"{name!r} is not in {type(self).__name__}.")
        if state.is_remote:
            return state if now else None
        # With a queue per host, the transfer goes to the host holding the file.
        host = (
            self.state.host_of(name) if settings.QUEUED_STORAGE_PER_HOST_QUEUE else ""
        )
        if state.status != Status.PENDING or not state.version:
            state = FileState(
                Status.PENDING, secrets.token_hex(8), state.size,
                content_type=state.content_type,
            )  # fmt: skip
            self.state.record(name, state, host=host or sending.this_host())
        if now:
            return run_transfer(self, name, state.version)
        return self.enqueue(name, state.version, host=host or None)

    def enqueue(self, name: str, version: str, host: str | None = None) -> Any:
        """Send the signed transfer message for *name* at *version*.

        A broker that cannot be reached is logged, not raised: the file stays
        pending and ``manage.py queued_storage reconcile`` queues it again.
        With per-host queues, *host* names the host that holds the local copy
        (this one by default).
        """
        return sending.send(self, name, version, host)

    # Reading ---------------------------------------------------------------

    def open(self, name: str, mode: str = "rb") -> File:
        return self.get_storage(self.validate_name(name)).open(name, mode)

    def exists(self, name: str) -> bool:
        state = self.get_state(self.validate_name(name))
        if state is None or state.is_deleted:
            return False
        return state.is_remote or self.local.exists(name)

    def size(self, name: str) -> int:
        state = self.get_state(self.validate_name(name))
        if state is not None and state.is_remote and state.size is not None:
            return state.size
        return self.get_storage(name).size(name)

    def url(self, name: str | None) -> str:
        checked = self.validate_name(name)
        return self._url_of(self.get_storage(checked))(checked)

    def urls(self, names: Iterable[str]) -> dict[str, str]:
        """Return the URL of each of *names*, with one cache round trip."""
        states = self.get_states([self.validate_name(name) for name in names])
        remote, local = self._url_of(self.remote), self.local.url
        return {
            name: (remote if s is not None and s.is_remote else local)(name)
            for name, s in states.items()
        }

    def url_for_state(self, name: str, state: FileState | None) -> str:
        """Return the URL of *name* in *state*, read before, without a look-up."""
        checked = self.validate_name(name)
        if state is not None and state.is_remote:
            return self._url_of(self.remote)(checked)
        return self.local.url(checked)

    def _url_of(self, storage: Any) -> Callable[[str], str]:
        """Return the ``url`` function of *storage*, or a faster equivalent."""
        if storage is self.remote:
            return url_builder(storage) or storage.url
        return storage.url

    def path(self, name: str) -> str:
        return self.get_storage(self.validate_name(name)).path(name)

    def listdir(self, path: str) -> tuple[list[str], list[str]]:
        """List *path* on both storages, without duplicates."""
        dirs: dict[str, None] = {}
        files: dict[str, None] = {}
        for storage in (self.local, self.remote):
            try:
                found_dirs, found_files = storage.listdir(path)
            except FileNotFoundError:
                continue
            dirs.update(dict.fromkeys(found_dirs))
            files.update(dict.fromkeys(found_files))
        return list(dirs), list(files)

    def get_accessed_time(self, name: str) -> Any:
        return self.get_storage(self.validate_name(name)).get_accessed_time(name)

    def get_created_time(self, name: str) -> Any:
        return self.get_storage(self.validate_name(name)).get_created_time(name)

    def get_modified_time(self, name: str) -> Any:
        return self.get_storage(self.validate_name(name)).get_modified_time(name)

    # Deleting --------------------------------------------------------------

    def delete(self, name: str) -> None:
        """Delete *name* from both storages and mark it deleted.

        The state changes first, so that a transfer still in flight gives up
        and removes what it uploaded.
        """
        self.validate_name(name)
        self.state.forget(name)
        logger.info(
            "Deleting %r from both storages.", name,
            extra={"file_name": name, "storage": self.reference, "status": "deleted"},
        )  # fmt: skip
        errors = []
        for storage in (self.local, self.remote):
            try:
                storage.delete(name)
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


_CONTENT_TYPE = re.compile(r"[\w!#$&^.+-]{1,127}/[\w!#$&^.+-]{1,127}(;[ -~]*)?")


def _content_type(content: Any) -> str:
    """Return the content type *content* declares, if it is a sane one.

    It comes from the uploading client: anything malformed or too long for
    the ledger is dropped, and the remote guesses from the name instead.
    """
    value = getattr(content, "content_type", None)
    if isinstance(value, str) and len(value) <= 255 and _CONTENT_TYPE.fullmatch(value):
        return value
    return ""


_FILE_SYSTEM = "django.core.files.storage.FileSystemStorage"


class QueuedFileSystemStorage(QueuedStorage):
    """A queued storage whose local storage is a ``FileSystemStorage``."""

    local = _FILE_SYSTEM


class QueuedS3Storage(QueuedFileSystemStorage):
    """Save to the file system, then move to S3 (django-storages, boto3)."""

    remote = "storages.backends.s3.S3Storage"


#: The name this class had when the S3 backend was built on boto.
QueuedS3BotoStorage = QueuedS3Storage


class QueuedGoogleCloudStorage(QueuedFileSystemStorage):
    """Save to the file system, then move to Google Cloud Storage."""

    remote = "storages.backends.gcloud.GoogleCloudStorage"


class QueuedAzureStorage(QueuedFileSystemStorage):
    """Save to the file system, then move to Azure Blob Storage."""

    remote = "storages.backends.azure_storage.AzureStorage"


class QueuedFTPStorage(QueuedFileSystemStorage):
    """Save to the file system, then move to an FTP server."""

    remote = "storages.backends.ftp.FTPStorage"


class QueuedSFTPStorage(QueuedFileSystemStorage):
    """Save to the file system, then move to an SFTP server."""

    remote = "storages.backends.sftpstorage.SFTPStorage"


class QueuedCouchDBStorage(QueuedFileSystemStorage):
    """Kept for imports; django-storages no longer has a CouchDB backend."""

    removed_remote = "storages.backends.couchdb.CouchDBStorage"


class QueuedDatabaseStorage(QueuedFileSystemStorage):
    """Kept for imports; django-storages no longer has a database backend."""

    removed_remote = "storages.backends.database.DatabaseStorage"


class QueuedMogileFSStorage(QueuedFileSystemStorage):
    """Kept for imports; django-storages no longer has a MogileFS backend."""

    removed_remote = "storages.backends.mogile.MogileFSStorage"


class QueuedGridFSStorage(QueuedFileSystemStorage):
    """Kept for imports; django-storages no longer has a GridFS backend."""

    removed_remote = "storages.backends.mongodb.GridFSStorage"


class QueuedCloudFilesStorage(QueuedFileSystemStorage):
    """Kept for imports; django-storages no longer has a Cloud Files backend."""

    removed_remote = "storages.backends.mosso.CloudFilesStorage"
