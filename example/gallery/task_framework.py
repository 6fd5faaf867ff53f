"""The gallery's transfer task for Django's task framework, slowed down too.

Used instead of :mod:`gallery.tasks` when the example runs with
``EXAMPLE_RUNNER=django_tasks``: ``manage.py db_worker`` runs it, and
nothing here imports Celery.
"""

import time
from typing import Any

from django.conf import settings

from queued_storage.runners.django_tasks import TaskTransfer, task


class SlowTaskTransfer(TaskTransfer):
    """Transfer a file after ``EXAMPLE_TRANSFER_DELAY`` seconds.

    The task framework's counterpart of ``gallery.tasks.SlowTransfer``:
    overriding ``transfer()`` of a ``TaskTransfer`` is how a project changes
    the way its files move with this runner.
    """

    def transfer(self, name: str, local: Any, remote: Any, **kwargs: Any) -> Any:
        time.sleep(settings.EXAMPLE_TRANSFER_DELAY)
        return super().transfer(name, local, remote, **kwargs)


@task
def slow_transfer(storage: str, name: str, version: str, signature: str) -> bool:
    """Check the signed message, then move the file with SlowTaskTransfer."""
    return SlowTaskTransfer().receive(
        slow_transfer.module_path, storage, name, version, signature
    )
