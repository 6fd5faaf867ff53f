"""The runner for Django's task framework (``django.tasks``).

Django 6.0 ships the framework; on Django 5.2 the ``django-tasks`` package
provides the same API. The tasks :func:`transfer` and
:func:`transfer_and_delete` receive the same signed, path-free message as the
Celery tasks and run the same state machine (:mod:`..machine`). The
framework has no retries of its own: the ledger counts the attempts and
holds the time of the next one; a retry is enqueued again with ``run_after``
where the backend can defer tasks, otherwise the file waits, pending, for
the dispatcher or ``reconcile``.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured, SuspiciousFileOperation
from django.utils import timezone
from django.utils.module_loading import import_string

from .. import handlers, message, registry
from ..conf import settings
from ..enqueue import transfer_queue
from ..exceptions import InvalidMessage
from ..machine import FileTransfer, Policy
from ..transfer import TransferResult
from . import settings_policy

try:  # Django 6.0 and later
    from django.tasks import DEFAULT_TASK_QUEUE_NAME, Task, task, task_backends
except ImportError:  # Django 5.2 with the django-tasks package
    from django_tasks import (  # type: ignore[no-redef,import-not-found,unused-ignore]
        DEFAULT_TASK_QUEUE_NAME,
        task,
        task_backends,
    )
    from django_tasks.base import (  # type: ignore[no-redef,import-not-found,unused-ignore]
        Task,
    )

if TYPE_CHECKING:
    from ..backends import QueuedStorage

logger = logging.getLogger("queued_storage")

#: The storage ``task`` options of the Celery runner, and the tasks of this
#: runner that do the same.
CELERY_EQUIVALENTS = {
    "queued_storage.tasks.Transfer": "queued_storage.runners.django_tasks.transfer",
    "queued_storage.tasks.TransferAndDelete": (
        "queued_storage.runners.django_tasks.transfer_and_delete"
    ),
}


class TaskTransfer:
    """How a task of this runner moves a file; subclass it to change that.

    Override :meth:`transfer` (return ``True`` on success, ``False`` or raise
    to retry later) or :meth:`after_transfer`, then call :meth:`receive`
    from a function of your own decorated with ``@task``, and name that
    function in the storage's ``task`` option. One handler serves one
    message: what a delivery reads stays on the instance.
    """

    #: Whether :meth:`after_transfer` removes the local copy itself (and
    #: says so by setting :attr:`removed_local`).
    removes_local = False
    #: Set by :meth:`after_transfer` when it removed the local copy.
    removed_local = False

    def transfer(
        self, name: str, local: Any, remote: Any, **kwargs: Any
    ) -> bool | TransferResult:
        """Copy *name* from *local* to *remote*; return whether it worked."""
        return handlers.copy(name, local, remote, **kwargs)

    def after_transfer(self, queued: QueuedStorage, name: str) -> None:
        """Act once the file is served from the remote; a hook for subclasses."""

    def apply_retention(self, queued: QueuedStorage, name: str, version: str) -> None:
        """Apply the storage's local retention once *name* is transferred."""
        removed, self.removed_local = self.removed_local, False
        handlers.apply_retention(queued, name, version, self.removes_local and removed)

    def policy(self) -> Policy:
        """Return the retry and lease policy, from the settings of now.

        An inline transfer (``transfer(now=True)``) makes one attempt only.
        """
        if handlers.one_attempt.get():
            return dataclasses.replace(settings_policy(), retries=0)
        return settings_policy()

    def send_retry(
        self, queued: QueuedStorage, name: str, version: str, delay: float
    ) -> bool:
        """Enqueue *name* again to run in *delay* seconds, if the backend can.

        Return ``False`` when it cannot defer a task: the ledger then holds
        the retry until the dispatcher or ``reconcile`` sends it.
        """
        runner = DjangoTasksRunner()
        if not runner.backend().supports_defer:
            return False
        host = (
            queued.state.host_of(name) if settings.QUEUED_STORAGE_PER_HOST_QUEUE else ""
        )
        return runner.send(queued, name, version, host or None, delay) is not None

    def machine(self) -> FileTransfer:
        """Return the state machine that runs this handler's transfers."""
        return FileTransfer(
            self.policy(),
            transfer=self.transfer,
            after_transfer=self.after_transfer,
            send_retry=self.send_retry,
            sender=type(self),
            on_transferred=self.apply_retention,
        )

    def receive(
        self, task_path: str, storage: str, name: str, version: str, signature: str
    ) -> bool:
        """Check a message received by the task at *task_path*, then run it.

        Return whether the file is now served from the remote. A message
        whose signature does not check out raises
        :class:`~queued_storage.exceptions.InvalidMessage`, so that the task
        result shows it failed; nothing is touched.
        """
        fields = {"storage": storage, "name": name, "version": version}
        try:
            message.verify(task_path, {**fields, "signature": signature})
            queued = registry.resolve(storage)
            queued.validate_name(name)
        except (InvalidMessage, SuspiciousFileOperation) as exc:
            logger.error("Rejected a transfer message %r: %s", fields, exc)
            raise InvalidMessage(str(exc)) from None
        self.removed_local = False
        return self.machine().run(queued, name, version)


class TaskTransferAndDelete(TaskTransfer):
    """Transfer a file, then delete its local copy."""

    removes_local = True
    _uploaded: handlers.Uploaded | None = None

    def transfer(
        self, name: str, local: Any, remote: Any, **kwargs: Any
    ) -> bool | TransferResult:
        self._uploaded = handlers.uploaded(local, name)
        return super().transfer(name, local, remote, **kwargs)

    def after_transfer(self, queued: QueuedStorage, name: str) -> None:
        """Delete the local copy, if it is still the one that was uploaded."""
        read, self._uploaded = self._uploaded, None
        if handlers.remove_uploaded(queued, name, read, type(self)):
            self.removed_local = True


@task
def transfer(storage: str, name: str, version: str, signature: str) -> bool:
    """Copy a file of a queued storage from its local to its remote storage."""
    return TaskTransfer().receive(
        transfer.module_path, storage, name, version, signature
    )


@task
def transfer_and_delete(storage: str, name: str, version: str, signature: str) -> bool:
    """Transfer a file, then delete its local copy."""
    return TaskTransferAndDelete().receive(
        transfer_and_delete.module_path, storage, name, version, signature
    )


def task_path(queued: QueuedStorage) -> str:
    """Return the dotted path of the task that moves the files of *queued*."""
    return CELERY_EQUIVALENTS.get(queued.task, queued.task)


def get_task(path: str) -> Task:
    """Return the task at the dotted *path*, or raise ImproperlyConfigured."""
    try:
        found = import_string(path)
    except ImportError as exc:
        raise ImproperlyConfigured(
            f"The transfer task {path!r} cannot be imported: {exc}."
        ) from exc
    if not isinstance(found, Task):
        raise ImproperlyConfigured(
            f"{path!r} is not a task of Django's task framework: decorate a "
            "function with @task that calls TaskTransfer().receive(), or use "
            "queued_storage.runners.django_tasks.transfer."
        )
    return found


class DjangoTasksRunner:
    """Enqueue transfer messages with a backend of the ``TASKS`` setting.

    The backend is the one :setting:`QUEUED_STORAGE_TASKS_BACKEND` names; the
    queue is the one the Celery runner would use (per host, with
    ``QUEUED_STORAGE_PER_HOST_QUEUE``), or the framework's default queue.
    """

    def alias(self) -> str:
        """Return the alias in ``TASKS`` of the backend used, as of now."""
        return str(settings.QUEUED_STORAGE_TASKS_BACKEND)

    def backend(self) -> Any:
        """Return the backend of the task framework that runs transfers."""
        return task_backends[self.alias()]

    def run_inline(self, queued: QueuedStorage, name: str, version: str) -> None:
        """Run the task of *queued* for *name* in this process, as a worker does.

        The signed message goes to the task's function directly: no backend
        and no queue.
        """
        found = get_task(task_path(queued))
        kwargs = message.sign(found.module_path, queued.reference, name, version)
        found.call(**kwargs)

    def send(
        self,
        queued: QueuedStorage,
        name: str,
        version: str,
        host: str | None,
        delay: float | None = None,
    ) -> Any:
        """Enqueue the message of *name*; return the task result or ``None``.

        A *delay* needs a backend that can defer tasks. A backend that
        cannot be reached is logged, not raised: the file stays pending.
        """
        path = task_path(queued)
        found = get_task(path)
        changes: dict[str, Any] = {
            "backend": self.alias(),
            "queue_name": transfer_queue(host) or DEFAULT_TASK_QUEUE_NAME,
        }
        if delay:
            changes["run_after"] = timezone.now() + timedelta(seconds=delay)
        kwargs = message.sign(found.module_path, queued.reference, name, version)
        try:
            return found.using(**changes).enqueue(**kwargs)
        except Exception as exc:
            logger.error(
                "Could not queue the transfer of %r; it stays pending until "
                "reconciled: %s", name, exc,
                extra={"file_name": name, "storage": queued.reference},
            )  # fmt: skip
            return None
