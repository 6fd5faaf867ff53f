"""The Celery tasks that move files: thin adapters around :mod:`.transfer`.

``Transfer`` and ``TransferAndDelete`` are registered under exactly those
names with every Celery app, as soon as this module is imported (which
``app.autodiscover_tasks()`` does for apps in ``INSTALLED_APPS``). A subclass
is registered under its dotted path, which is what a storage's ``task=``
option names.
"""

from __future__ import annotations

import logging
import random
import secrets
from typing import TYPE_CHECKING, Any

from celery import Task, current_app, shared_task

# Celery offers shared_task for functions only; class-based tasks are shared
# the same way, through the hooks shared_task itself uses.
from celery._state import (  # type: ignore[attr-defined]
    _get_active_apps,
    connect_on_app_finalize,
)
from celery.exceptions import Reject
from django.core.exceptions import ImproperlyConfigured, SuspiciousFileOperation
from django.utils.module_loading import import_string

from . import message, registry, retention
from .conf import settings
from .exceptions import InvalidMessage, TransferError
from .signals import file_transferred, local_deleted, transfer_failed
from .state import FileState, Status
from .transfer import TransferResult, remote_matches, transfer_file

if TYPE_CHECKING:
    from .backends import QueuedStorage

logger = logging.getLogger("queued_storage")


def _register(cls: type[Task]) -> None:
    def add(app: Any) -> Any:
        return app.register_task(cls())

    connect_on_app_finalize(add)
    for app in _get_active_apps():
        if app.finalized:
            add(app)


def get_task(path: str) -> Task:
    """Return the registered task that *path* (a dotted path or task name) names."""
    tasks = current_app.tasks
    if path in tasks:
        return tasks[path]
    try:
        found = import_string(path)
    except ImportError as exc:
        raise ImproperlyConfigured(
            f"The transfer task {path!r} cannot be imported: {exc}."
        ) from exc
    task = tasks.get(getattr(found, "name", None) or path)
    if task is None:
        raise ImproperlyConfigured(
            f"{path!r} is not a task registered with the Celery app "
            f"{current_app.main!r}: make it a subclass of "
            "queued_storage.tasks.Transfer."
        )
    return task


class Transfer(Task):
    """Copy a file of a queued storage from its local to its remote storage.

    Subclass it and override :meth:`transfer` to change how a file moves:
    return ``True`` on success and ``False`` to retry later.
    """

    name = "queued_storage.tasks.Transfer"
    #: Acknowledge the message only when the task has finished, and deliver it
    #: again if the worker dies, so that a killed worker loses no transfer.
    acks_late = True
    reject_on_worker_lost = True
    ignore_result = True
    #: Whether :meth:`after_transfer` removes the local copy itself.
    removes_local = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = f"{cls.__module__}.{cls.__qualname__}"
        if not cls.__dict__.get("abstract", False):
            _register(cls)

    @property
    def max_retries(self) -> int:  # type: ignore[override]
        return int(settings.QUEUED_STORAGE_RETRIES)

    @property
    def default_retry_delay(self) -> int:  # type: ignore[override]
        return int(settings.QUEUED_STORAGE_RETRY_DELAY)

    def run(self, storage: str, name: str, version: str, signature: str) -> bool:
        fields = {"storage": storage, "name": name, "version": version}
        try:
            message.verify(self.name, {**fields, "signature": signature})
            queued = registry.resolve(storage)
            queued.validate_name(name)
        except (InvalidMessage, SuspiciousFileOperation) as exc:
            logger.error("Rejected a transfer message %r: %s", fields, exc)
            raise Reject(str(exc), requeue=False) from None
        return self.process(queued, name, version)

    def transfer(
        self, name: str, local: Any, remote: Any, **kwargs: Any
    ) -> bool | TransferResult:
        """Copy *name* from *local* to *remote*; return whether it worked.

        Return ``False`` (or raise) to have the task retried later; this one
        returns the :class:`~queued_storage.transfer.TransferResult`.
        """
        return transfer_file(
            name, local, remote,
            replace=kwargs.get("replace", False),
            content_type=kwargs.get("content_type", ""),
            size=kwargs.get("size"),
        )  # fmt: skip

    def after_transfer(self, queued: QueuedStorage, name: str) -> None:
        """Act once the file is served from the remote; a hook for subclasses."""

    def process(self, queued: QueuedStorage, name: str, version: str) -> bool:
        """Move *name* if its state still has *version*; record the outcome."""
        extra: dict[str, Any] = {"file_name": name, "storage": queued.reference}
        state = queued.state.get(name) or queued._probe(name)
        if (
            state is None
            or state.is_deleted
            or (state.version and state.version != version)
        ):
            logger.info("Skipped %r: deleted or saved again since.", name, extra=extra)
            return False
        if state.is_remote:
            return True
        attempts = state.attempts + 1
        extra["attempt"] = attempts
        moving = state.evolve(status=Status.TRANSFERRING, version=version,
                              attempts=attempts)  # fmt: skip
        if not queued.state.compare_and_set(
            name, version, moving, only_from=(Status.PENDING, Status.TRANSFERRING)
        ):
            logger.info("Skipped %r: changed meanwhile.", name, extra=extra)
            return False
        limit = self.max_retries + 1 + settings.QUEUED_STORAGE_MAX_DELIVERIES
        if attempts > limit:
            return self.fail(queued, name, moving, f"gave up after {limit} attempts")
        logger.info("Transferring %r (attempt %d).", name, attempts,
                    extra={**extra, "status": Status.TRANSFERRING})  # fmt: skip
        try:
            done = self.transfer(
                name, queued.local, queued.remote,
                replace=queued.overwrites, content_type=state.content_type,
                size=state.size,
            )  # fmt: skip
        except Exception as exc:
            # The class names the cause: LocalFileMissing, RemoteConflict...
            reason = queued.redact(f"{type(exc).__name__}: {exc}")
            if isinstance(exc, TransferError) and not exc.retryable:
                return self.fail(queued, name, moving, reason)
            if self.deleted(queued, name):
                # A failed upload may have left part of the file behind.
                return self.discard(queued, name, extra)
            return self.retry_later(queued, name, moving, reason)
        if not done:
            return self.retry_later(queued, name, moving, "the transfer returned False")
        checksum = getattr(done, "checksum", "")
        if not queued.state.compare_and_set(
            name, version, moving.evolve(status=Status.TRANSFERRED, error=""),
            checksum=checksum,
        ):  # fmt: skip
            return self.discard(queued, name, extra)
        if queued.overwrites and not self.recheck(queued, name, checksum):
            return False
        logger.info(
            "Transferred %r.", name, extra={**extra, "status": Status.TRANSFERRED}
        )
        self.after_transfer(queued, name)
        retention.after_transfer(queued, name, version, removed=self.removes_local)
        file_transferred.send(
            type(self), name=name, local=queued.local, remote=queued.remote,
            storage=queued,
        )  # fmt: skip
        return True

    @staticmethod
    def deleted(queued: QueuedStorage, name: str) -> bool:
        """Return whether *name* was deleted from *queued*."""
        current = queued.state.get(name)
        if current is None:
            # Without the ledger a flushed cache knows nothing: not deleted.
            return queued.state.ledger
        return current.is_deleted

    def discard(self, queued: QueuedStorage, name: str, extra: dict[str, Any]) -> bool:
        """Give up on *name*, which changed while its transfer was in flight.

        A file deleted meanwhile must not come back: what the upload wrote to
        the remote is removed.
        """
        if self.deleted(queued, name):
            queued.remote.delete(name)
        elif queued.overwrites:
            self.recheck(queued, name)
        logger.info("Discarded %r: changed while in flight.", name, extra=extra)
        return False

    def recheck(self, queued: QueuedStorage, name: str, checksum: str = "") -> bool:
        """Return whether the remote copy of *name*, if transferred, is the newest.

        With a local storage that replaces files saved again, two versions of
        a file can be in flight at once and the older upload can land last.
        The file is then queued again, under a new version.
        """
        current = queued.state.get(name)
        if current is None or not current.is_remote:
            return True
        if remote_matches(name, queued.local, queued.remote, checksum):
            return True
        again = FileState(
            Status.PENDING, secrets.token_hex(8), current.size,
            content_type=current.content_type,
        )  # fmt: skip
        if queued.state.compare_and_set(
            name, current.version, again, only_from=(Status.TRANSFERRED,)
        ):
            logger.warning(
                "An older upload replaced the remote copy of %r; queuing it again.",
                name, extra={"file_name": name, "storage": queued.reference},
            )  # fmt: skip
            queued.enqueue(name, again.version)
        return False

    @staticmethod
    def gave_way(queued: QueuedStorage, name: str) -> bool:
        """Log that a failed attempt at *name* left its state alone; return False.

        The file was saved again, deleted, or finished by another delivery
        while this attempt ran: its failure is not the file's.
        """
        logger.info(
            "Discarded %r: changed while in flight.", name,
            extra={"file_name": name, "storage": queued.reference},
        )  # fmt: skip
        return False

    def backoff(self, retries: int) -> float:
        """Return the delay before retry number *retries* (0-based), jittered."""
        delay = min(
            settings.QUEUED_STORAGE_RETRY_BACKOFF_MAX,
            self.default_retry_delay * 2**retries,
        )
        return float(delay) * random.uniform(0.5, 1.0)  # noqa: S311

    def retry_later(
        self, queued: QueuedStorage, name: str, state: FileState, reason: str
    ) -> bool:
        """Schedule another try, or mark the file failed when none is left."""
        retries = self.request.retries or 0
        if retries >= self.max_retries:
            return self.fail(queued, name, state, reason)
        if not queued.state.compare_and_set(
            name, state.version, state.evolve(status=Status.PENDING, error=reason),
            only_from=(Status.TRANSFERRING,),
        ):  # fmt: skip
            return self.gave_way(queued, name)
        logger.warning(
            "Transfer of %r failed, retrying: %s", name, reason,
            extra={"file_name": name, "storage": queued.reference,
                   "attempt": state.attempts, "status": Status.PENDING},
        )  # fmt: skip
        kwargs = message.sign(self.name, queued.reference, name, state.version)
        raise self.retry(
            kwargs=kwargs,
            countdown=self.backoff(retries),
            kwargsrepr=message.shown(kwargs),  # type: ignore[call-arg]
        )

    def fail(
        self, queued: QueuedStorage, name: str, state: FileState, reason: str
    ) -> bool:
        """Mark *name* failed for good; it stays served from the local copy."""
        if not queued.state.compare_and_set(
            name, state.version, state.evolve(status=Status.FAILED, error=reason),
            only_from=(Status.TRANSFERRING, Status.PENDING),
        ):  # fmt: skip
            return self.gave_way(queued, name)
        logger.error(
            "Transfer of %r failed for good: %s", name, reason,
            extra={"file_name": name, "storage": queued.reference,
                   "attempt": state.attempts, "status": Status.FAILED},
        )  # fmt: skip
        transfer_failed.send(
            type(self), name=name, storage=queued, error=reason,
            attempts=state.attempts,
        )  # fmt: skip
        return False


class TransferAndDelete(Transfer):
    """Transfer a file, then delete its local copy.

    The state says "remote" before the local copy goes, so every read finds
    one of the two copies.
    """

    name = "queued_storage.tasks.TransferAndDelete"
    removes_local = True

    def after_transfer(self, queued: QueuedStorage, name: str) -> None:
        """Delete the local copy, now that reads go to the remote one."""
        queued.local.delete(name)
        local_deleted.send(type(self), name=name, storage=queued)


_register(Transfer)


@shared_task(name="queued_storage.tasks.reconcile", ignore_result=True)
def reconcile(older_than: float | None = None) -> int:
    """Queue again the transfers pending for longer than *older_than* seconds.

    Schedule it with Celery beat to recover messages lost to a broker outage.
    The default is the longest retry delay plus ten minutes.
    """
    from datetime import timedelta

    from .operations import reconcile as run

    age = None if older_than is None else timedelta(seconds=float(older_than))
    return len(run(age))


@shared_task(name="queued_storage.tasks.orphans", ignore_result=True)
def orphans(older_than: float | None = None, delete: bool = False) -> int:
    """Find, and with *delete* delete, the files no model row references.

    Opt-in: schedule it with Celery beat. *older_than* is the grace period in
    seconds (a day by default). Return how many orphans were found; storages
    that no model field uses are skipped.
    """
    from datetime import timedelta

    from . import orphans as finder
    from .operations import known_storages

    age = finder.DEFAULT_GRACE if older_than is None else timedelta(seconds=older_than)
    found = 0
    for storage in known_storages().values():
        if not finder.references(storage):
            continue
        report = finder.run(storage, older_than=age, delete=delete, keep_names=False)
        found += report.found
    if found:
        logger.warning("%s %d orphaned files.", "Deleted" if delete else "Found", found)
    return found


@shared_task(name="queued_storage.tasks.sweep", ignore_result=True)
def sweep() -> int:
    """Remove the local copies that their storage's retention lets go.

    Schedule it with Celery beat when a storage has a ``local_retention``
    period or a ``local_max_bytes`` cap. Return how many copies went.
    """
    from .operations import known_storages

    return sum(
        retention.sweep(storage).removed for storage in known_storages().values()
    )
