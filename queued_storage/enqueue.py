"""Sending transfer messages, and choosing the queue they go to.

``send()`` publishes one signed message with a retry policy bounded in time,
so that a broker that is down costs a save about a second, not a hang. The
ledger row written by the save is the durable record of the pending transfer:
a message that could not be sent is sent again by ``queued_storage
reconcile``.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import TYPE_CHECKING, Any

from . import message
from .conf import settings

if TYPE_CHECKING:
    from .backends import QueuedStorage

logger = logging.getLogger("queued_storage")

#: How a message is retried when the broker cannot be reached, before the
#: transfer is left to ``queued_storage reconcile`` (kombu's ``ensure``).
ENQUEUE_RETRY_POLICY = {
    "max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5,
}  # fmt: skip
#: Seconds after the first try past which no further retry starts. A broker
#: that accepts connections but never answers still holds each try for the
#: ``socket_timeout`` of ``CELERY_BROKER_TRANSPORT_OPTIONS``.
ENQUEUE_TIMEOUT = 1.0


class _Deadline:
    """An ``errback`` of kombu's retry policy that ends the retries in time.

    A frozen broker makes every retry wait for a socket timeout, so a count
    of retries alone does not bound how long a send blocks.
    """

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def __call__(self, exc: Exception, interval: float) -> None:
        if time.monotonic() + interval > self.end:
            raise exc


def this_host() -> str:
    """Return the name of this host, as per-host queues and the ledger know it."""
    return socket.gethostname()


def transfer_queue(host: str | None = None) -> str | None:
    """Return the Celery queue for transfers of files written on *host*.

    *host* defaults to this one; it matters only with per-host queues.
    """
    name = settings.QUEUED_STORAGE_QUEUE
    if settings.QUEUED_STORAGE_PER_HOST_QUEUE:
        return f"{name or 'queued_storage'}.{host or this_host()}"
    return name


def send(
    storage: QueuedStorage,
    name: str,
    version: str,
    host: str | None,
    countdown: float | None = None,
) -> Any:
    """Publish the signed transfer message of *name* at *version*.

    With *countdown*, the message is to run that many seconds from now.
    Return the Celery result, or ``None`` when the broker could not be
    reached (logged: the file stays pending until reconciled).
    """
    from .tasks import get_task

    task = get_task(storage.task)
    kwargs = message.sign(task.name, storage.reference, name, version)
    return _publish(task, storage, kwargs, host, countdown, name)


def send_files(storage: QueuedStorage, files: message.Files, host: str | None) -> Any:
    """Publish one signed message that transfers *files*, one after another.

    *files* holds ``(name, version)`` pairs, at most
    :data:`~queued_storage.message.MAX_FILES`. Return as :func:`send` does.
    """
    from .tasks import get_task

    task = get_task(storage.task)
    kwargs = message.sign_files(task.name, storage.reference, files)
    return _publish(task, storage, kwargs, host, None, files[0][0], len(files))


def _publish(
    task: Any,
    storage: QueuedStorage,
    kwargs: dict[str, Any],
    host: str | None,
    countdown: float | None,
    name: str,
    count: int = 1,
) -> Any:
    policy = {**ENQUEUE_RETRY_POLICY, "errback": _Deadline(ENQUEUE_TIMEOUT)}
    options: dict[str, Any] = {"retry": True, "retry_policy": policy}
    destination = transfer_queue(host)
    if destination:
        options["queue"] = destination
    if countdown:
        options["countdown"] = countdown
    options["kwargsrepr"] = message.shown(kwargs)
    try:
        return task.apply_async(kwargs=kwargs, **options)
    except Exception as exc:
        more = f" and {count - 1} more" if count > 1 else ""
        logger.error(
            "Could not queue the transfer of %r%s; it stays pending until "
            "reconciled: %s", name, more, storage.redact(str(exc)),
            extra={"file_name": name, "storage": storage.reference},
        )  # fmt: skip
        return None
