"""The Celery runner: sends transfer messages to the tasks of :mod:`..tasks`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import enqueue, message

if TYPE_CHECKING:
    from ..backends import QueuedStorage


class CeleryRunner:
    """Publish transfer messages to Celery, with a time-bounded retry policy.

    The storage's ``task`` option names the Celery task; Celery itself is
    imported at the first send.
    """

    def send(
        self,
        queued: QueuedStorage,
        name: str,
        version: str,
        host: str | None,
        delay: float | None = None,
    ) -> Any:
        """Publish the message of *name*; return the Celery result or ``None``."""
        return enqueue.send(queued, name, version, host, delay)

    def send_files(
        self, queued: QueuedStorage, files: message.Files, host: str | None
    ) -> Any:
        """Publish one message that transfers *files*, ``(name, version)`` pairs.

        What the dispatcher uses for small files; a runner without this
        method gets a message per file.
        """
        return enqueue.send_files(queued, files, host)

    def run_inline(self, queued: QueuedStorage, name: str, version: str) -> None:
        """Run the Celery task of *queued* for *name* in this process.

        ``Task.apply()`` runs it as a worker would, without a broker.
        """
        from ..tasks import get_task

        task = get_task(queued.task)
        task.apply(kwargs=message.sign(task.name, queued.reference, name, version))
