"""The queued storage: save locally now, serve remotely once transferred."""

from __future__ import annotations

import copy
import logging
import os
import re
import secrets
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import Any

from django.core.files import File, locks
from django.core.files.storage import FileSystemStorage, Storage
from django.utils.deconstruct import deconstructible

from . import directories, leases, ledger_access, local_copy
from . import enqueue as sending
from .base import QueuedStorageBase
from .compat import Deprecated08, remember_result
from .conf import settings
from .enqueue import transfer_queue as transfer_queue  # where it used to be
from .exceptions import NameTaken
from .inline import run_transfer
from .runners import RUNNERS, Runner, get_runner, runner_path
from .s3_urls import url_builder
from .signals import file_queued
from .state import FileState, StateStore, Status

logger = logging.getLogger("queued_storage")


@deconstructible(path="queued_storage.backends.QueuedStorage")
class QueuedStorage(Deprecated08, QueuedStorageBase):
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
        """Return whether *name* is free on the local and the remote storage.

        A name recorded for a file that is not deleted (pending,
        transferring, failed or transferred, saved by any host) is never
        free, whatever :setting:`QUEUED_STORAGE_NAME_CHECK` says; with
        ``"remote"``, the remote storage must also not have it. Within
        ``save()`` with the ledger, the write that records the file checks
        the recorded names, in the same statement (another name is chosen
        when it refuses).
        """
        if not self.local.is_name_available(name, max_length=max_length):
            return False
        if self.overwrites:
            return True
        if not (_SAVING.get() and self.state.ledger) and self.state.in_use(name):
            # In save(), the ledger's exclusive write that records the file
            # answers the same question in the same statement.
            return False
        if self.name_check() == "remote":
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
        return True

    def name_check(self) -> str:
        """Return how a name is checked free on the remote, as of now.

        :setting:`QUEUED_STORAGE_NAME_CHECK` when set; otherwise ``"state"``
        with the ledger, which records every name saved, and ``"remote"``
        without it.
        """
        chosen = settings.QUEUED_STORAGE_NAME_CHECK
        if chosen is None:
            return "state" if self.state.ledger else "remote"
        return str(chosen)

    def get_available_name(self, name: str, max_length: int | None = None) -> str:
        """Return a name free on both storages, based on *name*."""
        name = self.validate_name(name)
        return self.validate_name(super().get_available_name(name, max_length))

    def get_valid_name(self, name: str) -> str:
        return self.local.get_valid_name(name)

    def get_alternative_name(self, file_root: str, file_ext: str) -> str:
        return self.local.get_alternative_name(file_root, file_ext)

    def generate_filename(self, filename: str | os.PathLike[str]) -> str:
        if type(self).get_valid_name is not QueuedStorage.get_valid_name:
            # A subclass's own get_valid_name() decides, as in Django's storages.
            return super().generate_filename(filename)
        return self.local.generate_filename(filename)

    def save(
        self, name: str | None, content: Any, max_length: int | None = None
    ) -> str:
        """Save *content* locally, record its state, and queue its transfer.

        The state is recorded under the name the file was actually saved as.
        The transfer is queued when the current database transaction commits
        (at once outside a transaction), unless the storage is delayed; with
        ``QUEUED_STORAGE_OUTBOX``, the dispatcher queues it instead. Without
        the ledger, a save touches no database: only a transaction already
        open in this thread delays the transfer.
        """
        if name is None:
            name = content.name
        if not hasattr(content, "chunks"):
            content = File(content, name)
        store = self.state
        saving = _SAVING.set(True)
        try:
            name = self._name_to_save(self.validate_name(name), max_length, store)
        finally:
            _SAVING.reset(saving)
        if not self.delayed:
            # A misspelt runner name is refused before anything is written.
            runner_path(self.runner_name())
        local, chosen = _recording_names(self.local)
        try:
            saved = local.save(name, content, max_length)
        except Exception:
            # The local storage may have moved to another name when this one
            # was taken meanwhile: what it wrote is under the last it chose.
            # Without a choice it wrote nothing, or nothing this call can name.
            if chosen:
                self._remove_partial(chosen[-1])
            raise
        try:
            if saved != name:  # The name checked above needs no second check.
                name = self.validate_name(saved)
            version = secrets.token_hex(8)
            size = self._written_size(name)
            content_type = _content_type(content)
            state = FileState(Status.PENDING, version, size, content_type=content_type)
            outbox = self.uses_outbox()
            remember_result(self, None)  # Until the transfer is queued.
        except BaseException:
            # Nothing recorded means nothing would ever move or clean this copy.
            self._discard(saved)
            raise
        name = self._record_saved(name, state, outbox, max_length, store)
        ledger_access.on_commit(
            lambda: self._queued(name, version, outbox),
            using=store.db,
            ledger=store.ledger,
        )
        return name

    def _name_to_save(
        self, name: str, max_length: int | None, store: StateStore
    ) -> str:
        """Return the name to save as: *name*, checked, if free, else another.

        What :meth:`get_available_name` returns. When only the local storage
        has a say (the ``"state"`` check with the ledger, whose write checks
        the recorded names, and no subclass changing how names are chosen),
        a name free there is kept without the round of Django's general
        algorithm around it.
        """
        if (
            _naming_is_ours(type(self))
            and store.ledger
            and self.name_check() == "state"
            and self.local.is_name_available(name, max_length=max_length)
        ):
            return name
        return self.get_available_name(name, max_length)

    def _record_saved(
        self,
        name: str,
        state: FileState,
        outbox: bool,
        max_length: int | None,
        store: StateStore,
    ) -> str:
        """Record the file just saved locally as *name*; return its final name.

        Another save (on another host, with a disk of its own) may have
        checked the same name free, and recorded it first: the ledger then
        refuses to replace that live file's row, and this save's local copy
        moves to another free name. Unless the local storage replaces files
        by design, the first save keeps its name and its bytes.
        """
        host, exclusive = sending.this_host(), not self.overwrites
        for _ in range(_NAME_ATTEMPTS):
            try:
                recorded = store.record(
                    name, state, host=host, outbox=outbox, exclusive=exclusive
                )
            except Exception:
                # Unrecorded, the file would never be transferred nor cleaned.
                self._discard(name)
                raise
            if recorded:
                return name
            try:
                name = self._move_local(name, max_length)
            except Exception:
                self.local.delete(name)  # This save's copy, under a taken name.
                raise
        self.local.delete(name)
        raise NameTaken(
            f"Could not find a free name for {name!r} after {_NAME_ATTEMPTS} "
            "tries: other saves kept taking them. Nothing was kept."
        )

    def _move_local(self, name: str, max_length: int | None) -> str:
        """Move this save's local copy of *name* to a free name; return it."""
        new = self.get_available_name(name, max_length)
        if self._linked(name, new):
            saved = new
        else:
            saved = self._copied(name, new, max_length)
        try:
            moved = self.validate_name(saved)
        except BaseException:
            self._discard(saved)
            raise
        self.local.delete(name)
        logger.info(
            "%r was taken by another save meanwhile; saved as %r instead.", name,
            moved, extra={"file_name": moved, "storage": self.reference},
        )  # fmt: skip
        return moved

    def _linked(self, name: str, new: str) -> bool:
        """Give the local copy of *name* the name *new* too; return whether done.

        A hard link in the same folder costs no copy of the bytes, whatever
        the file's size, and fails if *new* was taken meanwhile. A local
        storage without paths, one whose own ``_save()`` must see every
        write, or a file system without links, is copied.
        """
        own_save = getattr(type(self.local), "_save", None)
        if own_save is not getattr(FileSystemStorage, "_save", None):
            return False
        source = local_copy.disk_path(self.local, name)
        target = local_copy.disk_path(self.local, new)
        if source is None or target is None:
            return False
        if os.path.dirname(source) != os.path.dirname(target):
            return False
        try:
            os.link(source, target)
        except OSError:
            return False
        return True

    def _copied(self, name: str, new: str, max_length: int | None) -> str:
        """Write a copy of the local *name* under *new* (or the name chosen)."""
        local, chosen = _recording_names(self.local)
        try:
            with self.local.open(name, "rb") as content:
                return str(local.save(new, content, max_length))
        except Exception:
            # As in save(): what a failed write left is under its last choice.
            if chosen:
                self._remove_partial(chosen[-1])
            raise

    def _written_size(self, name: str) -> int | None:
        """Return the size in bytes of the local copy of *name*, if known.

        The content's own ``size`` may count characters (a ``ContentFile`` of
        text) or be unknowable (a stream that cannot seek); the stored copy
        is what the remote will hold. The worker records what it uploaded.
        """
        try:
            return int(self.local.size(name))
        except Exception:
            return None

    def uses_outbox(self) -> bool:
        """Return whether a save leaves its transfer message to the dispatcher.

        :setting:`QUEUED_STORAGE_OUTBOX` ``None`` (the default) means yes
        with the ledger and the Celery runner, whose worker nodes run the
        dispatcher; the other runners send from ``save()``. Never for a
        delayed storage, nor without the ledger.
        """
        outbox = settings.QUEUED_STORAGE_OUTBOX
        if outbox is False or self.delayed or not self.state.ledger:
            return False
        if outbox is None:
            return runner_path(self.runner_name()) == RUNNERS["celery"]
        return bool(outbox)

    def _remove_partial(self, name: str) -> None:
        """Remove what a failed local write left under *name*.

        *name* is the name the local storage chose for this write, never
        the one ``save()`` was asked for, which a concurrent save may hold.
        Django's ``FileSystemStorage`` keeps the part it wrote when the disk
        fills up midway. A file that another save has recorded, or is still
        writing (it holds a lock on the file), is left alone.
        """
        try:
            state = self.state.get(name)
            if state is not None and not state.is_deleted:
                return
            path = local_copy.disk_path(self.local, name)
            if path is None:
                self.local.delete(name)
                return
            with open(path, "rb") as partial:
                if locks.lock(partial, locks.LOCK_EX | locks.LOCK_NB):
                    os.remove(path)
        except FileNotFoundError:
            pass
        except Exception as exc:
            logger.warning(
                "Could not remove what the failed save of %r left: %s",
                name, self.redact(str(exc)),
                extra={"file_name": name, "storage": self.reference},
            )  # fmt: skip

    def _discard(self, name: str) -> None:
        """Remove the local copy of *name*, whose state could not be recorded."""
        try:
            self.local.delete(name)
        except Exception as exc:
            logger.warning(
                "Could not remove %r, saved but not recorded: %s", name, exc,
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
        result = None if outbox or self.delayed else self.enqueue(name, version)
        remember_result(self, result)
        if outbox or (not self.delayed and result is None):
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
        through the same task a worker runs, in one attempt (a retry waiting
        for its time is tried at once; a transfer a worker holds is left to
        it); return the file's :class:`~queued_storage.status.FileState`
        afterwards.
        """
        name = self.validate_name(name)
        # The ledger, when on, decides: not a cache entry that others may write.
        state = self.state.get(name, durable=True) or self.get_state(name)
        if state is None or state.is_deleted:
            raise FileNotFoundError(f"{name!r} is not in {type(self).__name__}.")
        if state.is_remote:
            return state if now else None
        # With a queue per host, the transfer goes to the host holding the file.
        host = (
            self.state.host_of(name) if settings.QUEUED_STORAGE_PER_HOST_QUEUE else ""
        )
        if (
            now
            and state.status == Status.TRANSFERRING
            and leases.is_held(self.state, name, state.version)
        ):
            return state  # A worker holds it: its outcome is the file's.
        if state.status != Status.PENDING or not state.version:
            state = FileState(
                Status.PENDING, secrets.token_hex(8), state.size,
                content_type=state.content_type,
            )  # fmt: skip
            self.state.record(name, state, host=host or sending.this_host())
        if now:
            if self.state.ledger:
                # A retry waiting for its time is tried at once.
                self.state.compare_and_set(
                    name, state.version, state, only_from=(Status.PENDING,)
                )
            return run_transfer(self, name, state.version)
        return self.enqueue(name, state.version, host=host or None)

    def enqueue(self, name: str, version: str, host: str | None = None) -> Any:
        """Send the signed transfer message for *name* at *version*.

        The storage's runner sends it (Celery unless the ``runner`` option
        or ``QUEUED_STORAGE_RUNNER`` says otherwise). A broker that cannot be
        reached is logged, not raised: the file stays pending and
        ``manage.py queued_storage reconcile`` queues it again.
        With per-host queues, *host* names the host that holds the local copy
        (this one by default).
        """
        return self.get_runner().send(self, name, version, host)

    def runner_name(self) -> str:
        """Return the name of the runner of this storage, as of now."""
        return self.runner or str(settings.QUEUED_STORAGE_RUNNER)

    def get_runner(self) -> Runner:
        """Return the runner that carries this storage's transfer messages."""
        return get_runner(self.runner_name())

    # Reading ---------------------------------------------------------------

    def open(self, name: str, mode: str = "rb") -> File:
        name = self.relative_name(name)
        return self.get_storage(name).open(name, mode)

    def exists(self, name: str) -> bool:
        name = self.relative_name(name)
        state = self.get_state(name)
        if state is None or state.is_deleted:
            return False
        return state.is_remote or self.local.exists(name)

    def size(self, name: str) -> int:
        name = self.relative_name(name)
        state = self.get_state(name)
        if state is not None and state.is_remote and state.size is not None:
            return state.size
        return self.get_storage(name).size(name)

    def url(self, name: str | None) -> str:
        checked = self.relative_name(name)
        return self._url_of(self.get_storage(checked))(checked)

    def urls(self, names: Iterable[str]) -> dict[str, str]:
        """Return the URL of each of *names*, with one cache round trip."""
        # Keyed by the names as given, looked up by their checked forms.
        checked = {name: self.validate_name(name) for name in names}
        states = self.get_states(set(checked.values()))
        remote, local = self._url_of(self.remote), self.local.url
        urls = {}
        for name, key in checked.items():
            state = states[key]
            urls[name] = (remote if state is not None and state.is_remote else local)(
                key
            )
        return urls

    def url_for_state(self, name: str, state: FileState | None) -> str:
        """Return the URL of *name* in *state*, read before, without a look-up."""
        checked = self.relative_name(name)
        if state is not None and state.is_remote:
            return self._url_of(self.remote)(checked)
        return self.local.url(checked)

    def _url_of(self, storage: Any) -> Callable[[str], str]:
        """Return the ``url`` function of *storage*, or a faster equivalent."""
        if storage is self.remote:
            return url_builder(storage) or storage.url
        return storage.url

    def path(self, name: str) -> str:
        """Return the local path of *name*; ``path("")`` is the local location."""
        if name == "":
            return str(self.local.path(""))
        name = self.relative_name(name)
        return self.get_storage(name).path(name)

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
        name = self.relative_name(name)
        return self.get_storage(name).get_accessed_time(name)

    def get_created_time(self, name: str) -> Any:
        name = self.relative_name(name)
        return self.get_storage(name).get_created_time(name)

    def get_modified_time(self, name: str) -> Any:
        name = self.relative_name(name)
        return self.get_storage(name).get_modified_time(name)

    # Deleting --------------------------------------------------------------

    def delete(self, name: str) -> None:
        """Delete *name* from both storages and mark it deleted.

        The state changes first, so that a transfer still in flight gives up
        and removes what it uploaded. A directory is handed to both storages'
        ``delete()`` as it is; the states of the files below it follow.
        """
        name = self.relative_name(name)
        state = self.state.get(name)
        if state is None or not state.version:
            # Not a file saved through this storage: perhaps a directory.
            below = directories.files_below((self.local, self.remote), name)
            if below is not None:
                self._delete_directory(name, below)
                return
        self.state.forget(name)
        logger.info(
            "Deleting %r from both storages.", name,
            extra={"file_name": name, "storage": self.reference, "status": "deleted"},
        )  # fmt: skip
        self._delete_from_both(name)

    def _delete_from_both(self, name: str) -> None:
        errors = []
        for storage in (self.local, self.remote):
            try:
                storage.delete(name)
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    def _delete_directory(self, name: str, below: set[str]) -> None:
        """Delete the directory *name*, then keep the states below it true.

        Each storage does what its own ``delete()`` does with a directory. A
        file below it whose copy in use is gone afterwards is marked deleted
        and its other copy removed; a file still there keeps its state. The
        directory's own name gets no deleted mark, which would hide files
        saved below it later.
        """
        logger.info(
            "Deleting the directory %r from both storages.", name,
            extra={"file_name": name, "storage": self.reference},
        )  # fmt: skip
        try:
            self._delete_from_both(name)
        finally:
            self.state.drop(name)
            # A save may have landed below the directory since it was listed.
            below.update(self.state.names_below(name))
            states = self.state.get_many(sorted(below))
            for path, state in states.items():
                if state is None or state.is_deleted:
                    continue
                serving = self.remote if state.is_remote else self.local
                if serving.exists(path):
                    continue
                self.state.forget(path)
                other = self.local if state.is_remote else self.remote
                try:
                    other.delete(path)
                except Exception as exc:
                    logger.warning(
                        "Could not remove the other copy of %r: %s", path, exc,
                        extra={"file_name": path, "storage": self.reference},
                    )  # fmt: skip


#: How many names a save tries when other saves keep taking them.
_NAME_ATTEMPTS = 5
#: Set while save() chooses its name: the ledger's write checks it then.
_SAVING: ContextVar[bool] = ContextVar("queued_storage_saving", default=False)


def _naming_is_ours(cls: type[QueuedStorage]) -> bool:
    """Return whether *cls* chooses names as :class:`QueuedStorage` does."""
    return (
        cls.get_available_name is QueuedStorage.get_available_name
        and cls.is_name_available is QueuedStorage.is_name_available
        and super(QueuedStorage, cls).get_available_name is Storage.get_available_name
    )


def _recording_names(local: Any) -> tuple[Any, list[str]]:
    """Return a copy of the storage *local* that lists the names it chooses.

    ``Storage.save()`` asks ``get_available_name()`` for the name to write,
    and ``FileSystemStorage`` asks again for another when a concurrent save
    took that one first: the last name listed is the one written to.
    """
    chosen: list[str] = []
    recording = copy.copy(local)
    choose = recording.get_available_name

    def get_available_name(name: str, max_length: int | None = None) -> str:
        found = choose(name, max_length=max_length)
        chosen.append(found)
        return str(found)

    recording.get_available_name = get_available_name
    return recording, chosen


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
