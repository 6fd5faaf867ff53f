"""The dispatcher: send the transfer messages that the outbox holds.

With the outbox (the default with the ledger and the Celery runner, see
``QUEUED_STORAGE_OUTBOX``), ``save()`` writes the ledger row with its
``outbox`` flag set and sends nothing: the request pays for the local write,
the row and the cache, not for publishing a Celery message. A dispatcher
polls the ledger and publishes the messages: every Celery worker node runs
one in a thread (:mod:`.runners.celery_node`), and ``manage.py queued_storage
dispatch`` runs one anywhere the project's settings are.

Each row is claimed by one ``UPDATE`` that clears its flag, so that two
dispatchers never send the same message, then its message is sent; a
message that cannot be sent (the broker is down) puts the flag back and ends
the pass. A dispatcher that dies between the claim and the publish leaves
the file pending, for ``reconcile`` to queue, as a web process that dies
between its commit and its publish does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.db import close_old_connections, router
from django.db.models import Q
from django.utils import timezone

from .operations import resolve_reference
from .signals import file_queued
from .status import Status

logger = logging.getLogger("queued_storage")


def dispatch(
    batch: int = 100,
    storage: str | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> list[str]:
    """Send the messages of up to *batch* files of the outbox; return their names.

    The oldest rows go first. *storage*, a reference, keeps to one storage.
    When *stop* returns true, the pass ends before it claims the next row:
    the rows not yet claimed stay in the outbox.
    """
    from .models import StoredFile

    db = router.db_for_write(StoredFile) or "default"
    # A retry waits in the outbox until it is due.
    due = Q(next_attempt__isnull=True) | Q(next_attempt__lte=timezone.now())
    rows = StoredFile.objects.using(db).filter(due, status=Status.PENDING, outbox=True)
    if storage:
        rows = rows.filter(storage=storage)
    fields = ("pk", "storage", "name", "version", "host")
    waiting = list(rows.order_by("updated").values_list(*fields)[:batch])
    sent: list[str] = []
    for pk, reference, name, version, host in waiting:
        if stop():
            break
        mine = StoredFile.objects.using(db).filter(pk=pk, version=version, outbox=True)
        if not mine.update(outbox=False):
            continue  # Another dispatcher took it, or it changed meanwhile.
        target = resolve_reference(reference, name)
        if target is None or target.delayed:
            continue  # Delayed files wait for an explicit transfer().
        if target.enqueue(name, version, host=host or None) is None:
            # The broker is unreachable (logged): try again on the next pass.
            StoredFile.objects.using(db).filter(
                pk=pk, version=version, status=Status.PENDING
            ).update(outbox=True)
            break
        file_queued.send(type(target), name=name, storage=target, version=version)
        sent.append(name)
    return sent


def run(
    interval: float = 0.2,
    batch: int = 100,
    storage: str | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> int:
    """Dispatch until *stop* returns true; return how many messages were sent.

    A full batch is followed by another at once; otherwise the dispatcher
    sleeps *interval* seconds before it looks again. An error of the
    database is logged and retried after the interval.
    """
    total = 0
    while not stop():
        try:
            sent = dispatch(batch, storage)
        except Exception:
            logger.exception("The dispatcher failed a pass; trying again.")
            sent = []
        finally:
            # Drop a connection the database closed, as a request would.
            close_old_connections()
        total += len(sent)
        if len(sent) < batch:
            deadline = time.monotonic() + interval
            while not stop() and time.monotonic() < deadline:
                time.sleep(min(0.05, interval))
    return total
