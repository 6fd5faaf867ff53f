"""What the tasks of every runner do around the state machine.

The Celery tasks (:mod:`.tasks`) and the tasks of Django's task framework
(:mod:`.runners.django_tasks`) copy a file the same way, remove the local
copy after a ``TransferAndDelete`` the same way, and apply the storage's
local retention the same way. Those steps live here, free of any task
framework; each runner's task class keeps only how it holds the state of
one delivery (a Celery task object serves many, a task framework handler
one).
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from . import local_copy, retention
from .signals import local_deleted
from .transfer import TransferResult, transfer_file

if TYPE_CHECKING:
    from .backends import QueuedStorage

#: Set while a transfer runs inline (``transfer(now=True)``): a failure is
#: final at once, whatever the runner's retry policy says.
one_attempt: ContextVar[bool] = ContextVar("queued_storage_one_attempt", default=False)

#: The local storage, the name and the identity of the copy an upload read.
Uploaded = tuple[Any, str, "local_copy.Identity | None"]


def copy(name: str, local: Any, remote: Any, **kwargs: Any) -> TransferResult:
    """Copy *name* from *local* to *remote*, as a task's ``transfer()`` does.

    *kwargs* are those the state machine passes: ``replace``,
    ``content_type`` and ``size``.
    """
    return transfer_file(
        name, local, remote,
        replace=kwargs.get("replace", False),
        content_type=kwargs.get("content_type", ""),
        size=kwargs.get("size"),
    )  # fmt: skip


def uploaded(local: Any, name: str) -> Uploaded:
    """Return what tells the local copy of *name* that is about to be uploaded."""
    return (local, name, local_copy.identity(local, name))


def remove_uploaded(
    queued: QueuedStorage, name: str, read: Uploaded | None, sender: Any
) -> bool:
    """Delete the local copy of *name* if it is still the one *read* uploaded.

    A save that replaced it meanwhile keeps its bytes. Send
    :data:`~queued_storage.signals.local_deleted` from *sender* and return
    ``True`` when the copy went.
    """
    expected = None
    if read is not None and read[0] is queued.local and read[1] == name:
        expected = read[2]
    if not local_copy.delete_transferred(queued, name, expected):
        return False
    local_deleted.send(sender, name=name, storage=queued)
    return True


def apply_retention(
    queued: QueuedStorage, name: str, version: str, removed: bool
) -> None:
    """Apply the local retention of *queued* once *name* at *version* moved.

    *removed* says that the task's ``after_transfer`` removed the local copy
    itself: only the ledger learns it.
    """
    retention.after_transfer(queued, name, version, removed=removed)
