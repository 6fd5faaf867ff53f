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
from typing import TYPE_CHECKING

from django.core.exceptions import ImproperlyConfigured
from django.db import close_old_connections, router
from django.db.models import Q
from django.utils import timezone

from .conf import settings
from .ledger_sql import statements
from .message import MAX_FILES, Files
from .operations import resolve_reference
from .signals import file_queued
from .status import Status

if TYPE_CHECKING:
    from .backends import QueuedStorage

logger = logging.getLogger("queued_storage")


#: Files up to this size (as recorded) may share a transfer message.
SMALL_FILE = 1024 * 1024
#: Worker processes a pass spreads its small files over, at least.
SPREAD = 8

#: ``(pk, storage, name, version, host, size, attempts)`` of a row the pass took.
Taken = tuple[int, str, str, str, str, "int | None", int]


def dispatch(
    batch: int = 100,
    storage: str | None = None,
    stop: Callable[[], bool] = lambda: False,
    spread: int = SPREAD,
) -> list[str]:
    """Send the messages of up to *batch* files of the outbox; return their names.

    The oldest rows go first. *storage*, a reference, keeps to one storage.
    Small files of one storage and host share messages, up to
    :setting:`QUEUED_STORAGE_DISPATCH_FILES` each, in at least *spread*
    messages when there are that many files, so that as many worker
    processes can take them. When *stop* returns true, the pass ends before
    its next message: the files not yet sent go back to the outbox.
    """
    from .models import StoredFile

    db = router.db_for_write(StoredFile) or "default"
    sql = statements(db)
    # Before any row is taken: a bad setting leaves the outbox as it is.
    per_message = files_per_message()
    taken = None if sql is None else sql.take_outbox(batch, storage, timezone.now())
    if taken is None:
        return _dispatch_rows(db, batch, storage, stop)
    sent: list[str] = []
    messages = _messages(taken, spread, per_message)
    for at, (reference, host, rows) in enumerate(messages):
        try:
            left = rows if stop() else _send(reference, host, rows, sent)
        except BaseException:
            # An error (a receiver of file_queued, say) ends the pass; the
            # messages after this one go back to the outbox, not to reconcile.
            _put_back(db, _rows_of(messages[at + 1 :]))
            raise
        if left:
            # Stopping, or the broker is unreachable (logged): what was not
            # sent goes back to the outbox for the next pass.
            _put_back(db, [*left, *_rows_of(messages[at + 1 :])])
            break
    return sent


def files_per_message() -> int:
    """Return :setting:`QUEUED_STORAGE_DISPATCH_FILES`, or raise if it is unusable.

    The dispatcher asks before it takes any row, as check ``E062`` would.
    """
    value = settings.QUEUED_STORAGE_DISPATCH_FILES
    if isinstance(value, bool) or not isinstance(value, int):
        value = None
    if value is None or not 1 <= value <= MAX_FILES:
        raise ImproperlyConfigured(
            f"QUEUED_STORAGE_DISPATCH_FILES must be a whole number from 1 to "
            f"{MAX_FILES}, not {settings.QUEUED_STORAGE_DISPATCH_FILES!r}."
        )
    return value


def _messages(
    taken: list[Taken], spread: int, per_message: int
) -> list[tuple[str, str, list[Taken]]]:
    """Group *taken* rows into ``(storage, host, rows)`` of one message each."""
    small: dict[tuple[str, str], list[Taken]] = {}
    out: list[tuple[str, str, list[Taken]]] = []
    for row in taken:
        reference, host, size = row[1], row[4], row[5]
        # A retry travels alone: what failed it may fail a whole message.
        if per_message > 1 and size is not None and size <= SMALL_FILE and not row[6]:
            small.setdefault((reference, host), []).append(row)
        else:
            out.append((reference, host, [row]))
    for (reference, host), rows in small.items():
        count = max(-(-len(rows) // per_message), min(len(rows), spread))
        # Oldest first, and as even as the count allows.
        size, extra = divmod(len(rows), count)
        start = 0
        for index in range(count):
            end = start + size + (index < extra)
            out.append((reference, host, rows[start:end]))
            start = end
    return out


def _send(reference: str, host: str, rows: list[Taken], sent: list[str]) -> list[Taken]:
    """Send the message of *rows*; return those not sent (the broker is down).

    A runner without ``send_files()`` gets a message per file.
    """
    target = resolve_reference(reference, rows[0][2])
    if target is None or target.delayed:
        return []  # Delayed files wait for an explicit transfer().
    send_many = getattr(target.get_runner(), "send_files", None)
    if len(rows) > 1 and send_many is not None:
        files = [(row[2], row[3]) for row in rows]
        if send_many(target, files, host or None) is None:
            return rows
        _queued(target, files, sent)
        return []
    for at, row in enumerate(rows):
        if target.enqueue(row[2], row[3], host=host or None) is None:
            return rows[at:]
        _queued(target, [(row[2], row[3])], sent)
    return []


def _queued(target: QueuedStorage, files: Files, sent: list[str]) -> None:
    for name, version in files:
        file_queued.send(type(target), name=name, storage=target, version=version)
        sent.append(name)


def _rows_of(messages: list[tuple[str, str, list[Taken]]]) -> list[Taken]:
    return [row for _, _, rows in messages for row in rows]


def _put_back(db: str, rows: list[Taken]) -> None:
    from .models import StoredFile

    for pk, _, _, version, *_ in rows:
        StoredFile.objects.using(db).filter(
            pk=pk, version=version, status=Status.PENDING
        ).update(outbox=True)


def _dispatch_rows(
    db: str, batch: int, storage: str | None, stop: Callable[[], bool]
) -> list[str]:
    """Send a message per row, each claimed by its own ``UPDATE``.

    The way of databases that cannot read rows back from an ``UPDATE``.
    """
    from .models import StoredFile

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
        left = _send(
            reference, host, [(pk, reference, name, version, host, None, 0)], sent
        )
        if left:
            _put_back(db, left)
            break
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
