"""The Celery tasks that move files: thin adapters around :mod:`.transfer`.

``Transfer`` and ``TransferAndDelete`` are registered under exactly those
names with every Celery app, as soon as this module is imported (which
``app.autodiscover_tasks()`` does for apps in ``INSTALLED_APPS``). A subclass
is registered under its dotted path, which is what a storage's ``task=``
option names.
"""

from __future__ import annotations

import dataclasses
import logging
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, NoReturn

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

from . import enqueue as sending
from . import handlers, message, registry, retention
from .conf import settings
from .exceptions import InvalidMessage
from .machine import FileTransfer, Policy
from .redaction import shorten
from .runners import celery_node, settings_policy
from .state import FileState
from .transfer import TransferResult

if TYPE_CHECKING:
    from .backends import QueuedStorage

logger = logging.getLogger("queued_storage")

#: Appended to the log of a message whose signature does not check out.
SHARED_QUEUE_HINT = (
    " If another project (another SECRET_KEY) uses the same broker database,"
    " give each project its own QUEUED_STORAGE_QUEUE and run its workers with"
    " -Q on it, or its own broker database."
)


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
    #: Acknowledge the message as soon as a worker process starts it. The
    #: ledger, not the broker, holds the transfer from then on: the file's
    #: lease, renewed while the upload runs, and ``reconcile`` once a lease
    #: expires. A broker would otherwise give an upload that outlasts its
    #: window (``visibility_timeout``, ``consumer_timeout``) to a second
    #: worker, or close the channel.
    acks_late = False
    ignore_result = True
    #: Whether :meth:`after_transfer` removes the local copy itself (and
    #: says so through :func:`removed_local`).
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

    def run(self, *args: Any, **kwargs: Any) -> bool:
        # Whatever the message holds reaches this method, so that a message
        # of another shape is refused (and logged, cut short) here, rather
        # than raise a TypeError that names its arguments in full.
        if "files" in kwargs:
            return self._run_files(args, kwargs)
        fields = {key: kwargs.get(key) for key in ("storage", "name", "version")}
        try:
            if args or set(kwargs) - {*fields, "signature"}:
                raise InvalidMessage("The message has arguments of another shape.")
            storage, name, version = message.verify(self.name, kwargs)
            queued = registry.resolve(storage)
            queued.validate_name(name)
        except (InvalidMessage, SuspiciousFileOperation) as exc:
            self._reject(fields, exc)
        return self.process(queued, name, version)

    def _reject(self, fields: dict[str, Any], exc: Exception) -> NoReturn:
        logger.error(
            "Rejected a transfer message %s: %s%s", shorten(fields), exc,
            SHARED_QUEUE_HINT if isinstance(exc, InvalidMessage) else "",
        )  # fmt: skip
        raise Reject(str(exc), requeue=False) from None

    def _run_files(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        """Transfer each file of a message of several, one after another.

        A file whose name the storage now refuses is logged and skipped; an
        error of one file does not stop the others, and is raised once they
        are done (the files it left pending are for ``reconcile``).
        """
        fields = {key: kwargs.get(key) for key in ("storage", "files")}
        try:
            if args or set(kwargs) - {*fields, "signature"}:
                raise InvalidMessage("The message has arguments of another shape.")
            storage, files = message.verify_files(self.name, kwargs)
            queued = registry.resolve(storage)
        except InvalidMessage as exc:
            self._reject(fields, exc)
        done, error = True, None
        for name, version in files:
            try:
                queued.validate_name(name)
            except SuspiciousFileOperation as exc:
                logger.error(
                    "Skipped %s of a transfer message: %s",
                    shorten({"storage": storage, "name": name}), exc,
                )  # fmt: skip
                done = False
                continue
            try:
                done = self.process(queued, name, version) and done
            except Exception as exc:
                logger.exception(
                    "The transfer of %r failed unexpectedly.", name,
                    extra={"file_name": name, "storage": storage},
                )  # fmt: skip
                done, error = False, error or exc
        if error is not None:
            raise error
        return done

    def transfer(
        self, name: str, local: Any, remote: Any, **kwargs: Any
    ) -> bool | TransferResult:
        """Copy *name* from *local* to *remote*; return whether it worked.

        Return ``False`` (or raise) to have the task retried later; this one
        returns the :class:`~queued_storage.transfer.TransferResult`.
        """
        return handlers.copy(name, local, remote, **kwargs)

    def after_transfer(self, queued: QueuedStorage, name: str) -> None:
        """Act once the file is served from the remote; a hook for subclasses."""

    def policy(self) -> Policy:
        """Return the retry and lease policy, from the settings of now.

        An inline transfer (``transfer(now=True)``) makes one attempt only.
        """
        # A subclass may change max_retries and default_retry_delay.
        return dataclasses.replace(
            settings_policy(),
            retries=0 if _one_attempt.get() else self.max_retries,
            retry_delay=float(self.default_retry_delay),
        )

    def machine(self) -> FileTransfer:
        """Return the state machine that runs this task's transfers."""
        return FileTransfer(
            self.policy(),
            transfer=self.transfer,
            after_transfer=self.after_transfer,
            send_retry=self.send_retry,
            sender=type(self),
            on_transferred=self.apply_retention,
        )

    def apply_retention(self, queued: QueuedStorage, name: str, version: str) -> None:
        """Apply the storage's local retention once *name* is transferred.

        When :meth:`after_transfer` removed the local copy, only the ledger
        learns it.
        """
        removed = _removed_local.get()
        _removed_local.set(False)
        handlers.apply_retention(queued, name, version, self.removes_local and removed)

    def send_retry(
        self, queued: QueuedStorage, name: str, version: str, delay: float
    ) -> bool:
        """Send the message of *name* again, to run in *delay* seconds."""
        host = (
            queued.state.host_of(name) if settings.QUEUED_STORAGE_PER_HOST_QUEUE else ""
        )
        return sending.send(queued, name, version, host or None, delay) is not None

    def process(self, queued: QueuedStorage, name: str, version: str) -> bool:
        """Move *name* if its state still has *version*; record the outcome."""
        _removed_local.set(False)
        return self.machine().run(queued, name, version)

    def backoff(self, retries: int) -> float:
        """Return the delay before retry number *retries* (0-based), jittered."""
        return self.policy().backoff(retries)

    def retry_later(
        self, queued: QueuedStorage, name: str, state: FileState, reason: str
    ) -> bool:
        """Schedule another try, or mark the file failed when none is left."""
        return self.machine().retry_later(queued, name, state, reason)

    def fail(
        self, queued: QueuedStorage, name: str, state: FileState, reason: str
    ) -> bool:
        """Mark *name* failed for good; it stays served from the local copy."""
        return self.machine().fail(queued, name, state, reason)


#: The local storage, name and identity of the copy the current transfer of
#: ``TransferAndDelete`` read, taken before the upload.
_uploaded: ContextVar[handlers.Uploaded | None] = ContextVar(
    "queued_storage_uploaded", default=None
)


#: Whether the ``after_transfer`` of the current transfer removed the local
#: copy.
_removed_local: ContextVar[bool] = ContextVar(
    "queued_storage_removed_local", default=False
)
#: Set while a transfer runs inline: a failure is final at once.
_one_attempt = handlers.one_attempt


def removed_local() -> None:
    """Say, from ``after_transfer``, that it removed the local copy."""
    _removed_local.set(True)


class TransferAndDelete(Transfer):
    """Transfer a file, then delete its local copy.

    The state says "remote" before the local copy goes, so every read finds
    one of the two copies. The copy is deleted only if it is still the one
    that was uploaded: a save that replaced it meanwhile keeps its bytes.
    """

    name = "queued_storage.tasks.TransferAndDelete"
    removes_local = True

    def transfer(
        self, name: str, local: Any, remote: Any, **kwargs: Any
    ) -> bool | TransferResult:
        _uploaded.set(handlers.uploaded(local, name))
        return super().transfer(name, local, remote, **kwargs)

    def after_transfer(self, queued: QueuedStorage, name: str) -> None:
        """Delete the local copy, now that reads go to the remote one."""
        read = _uploaded.get()
        _uploaded.set(None)
        if handlers.remove_uploaded(queued, name, read, type(self)):
            removed_local()


_register(Transfer)
# Every worker node that runs the transfers also sends the outbox's messages.
celery_node.install()


@shared_task(name="queued_storage.tasks.reconcile", ignore_result=True)
def reconcile(*args: Any, **kwargs: Any) -> int:
    """Queue again the transfers pending for longer than the safe default age.

    Schedule it with Celery beat to recover messages lost to a broker outage.
    Its message is not signed, so whatever it carries may come from anyone
    who can write to the broker: an ``older_than`` (in seconds) is used only
    when it is a number no shorter than the default
    (:setting:`QUEUED_STORAGE_RECONCILE_AGE`), and nothing else is taken
    from the message. Files that are transferring are left to their worker
    while its lease lives; one whose lease expired lost its worker and is
    queued again.
    """

    from .operations import default_age
    from .operations import reconcile as run

    age = default_age()
    older_than = kwargs.pop("older_than", args[0] if args else None)
    if args[1:] or kwargs:
        logger.warning(
            "The reconcile task ignored arguments it does not take: %s",
            shorten({"args": list(args), "kwargs": kwargs}),
        )
    age = _no_sooner(age, older_than, "reconcile task took pending files for lost")
    return len(run(age, transferring=False))


@shared_task(name="queued_storage.tasks.orphans", ignore_result=True)
def orphans(older_than: Any = None, delete: Any = False) -> int:
    """Find, and with *delete* delete, the files no model row references.

    Opt-in: schedule it with Celery beat. *older_than* is the grace period in
    seconds, never shorter than a day (the default), and *delete* counts only
    when it is ``True``: the message is not signed. Return how many orphans
    were found; storages that no model field uses are skipped.
    """

    from . import orphans as finder
    from .operations import known_storages

    age = finder.DEFAULT_GRACE
    age = _no_sooner(age, older_than, "orphans task took files for orphans")
    delete = delete is True
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


def _no_sooner(default: Any, older_than: Any, what: str) -> Any:
    """Return the age an unsigned *older_than* asks for, never below *default*.

    The message is not signed: anything that is not a number of seconds at
    least the default is logged and the default kept.
    """
    from datetime import timedelta

    if older_than is None:
        return default
    age = default
    seconds = older_than if type(older_than) in (int, float) else None
    # Comparisons leave out NaN, infinities and integers too large for a
    # timedelta.
    if seconds is not None and 0 <= seconds < 10**9:
        age = max(default, timedelta(seconds=seconds))
    if seconds is None or age.total_seconds() != seconds:
        logger.warning(
            "The %s after %d s, not after older_than=%s: never sooner than "
            "the default.", what, age.total_seconds(), shorten(older_than),
        )  # fmt: skip
    return age
