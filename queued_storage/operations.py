"""What an operator does with the ledger: count, retry, reconcile, verify, import.

Plain functions with explicit arguments, shared by the management command,
the admin actions and the periodic task.
"""

from __future__ import annotations

import logging
import posixpath
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.db.models import Count, Min
from django.utils import timezone

from . import registry
from .backends import QueuedStorage
from .base import QueuedStorageBase
from .conf import settings
from .exceptions import UnknownStorage
from .state import FileState, Status, name_hash
from .transfer import transfer_file

logger = logging.getLogger("queued_storage")


def _model() -> Any:
    from .models import StoredFile

    return StoredFile


def known_storages() -> dict[str, QueuedStorage]:
    """Return this process's queued storages by reference."""
    from .checks import queued_storages

    return {storage.reference: storage for storage in queued_storages()}


def status_counts(storage: str | None = None) -> dict[str, Any]:
    """Return the number of files per status and the oldest pending file's age."""
    rows = _model().objects.all()
    if storage:
        rows = rows.filter(storage=storage)
    counts = {status: 0 for status in Status.values}
    for row in rows.values("status").annotate(n=Count("id")):
        counts[row["status"]] = row["n"]
    oldest = rows.filter(status__in=[Status.PENDING, Status.TRANSFERRING]).aggregate(
        oldest=Min("updated")
    )["oldest"]
    age = (timezone.now() - oldest).total_seconds() if oldest else None
    outbox = rows.filter(status=Status.PENDING, outbox=True).count()
    return {"counts": counts, "oldest_pending_seconds": age, "outbox": outbox}


def retry_failed(
    storage: str | None = None, names: list[str] | None = None, rows: Any = None
) -> list[str]:
    """Queue the failed transfers again; return the names queued.

    *rows*, a queryset of ledger rows, narrows the choice (the admin's
    selection); failed ones among them are queued.
    """
    rows = (_model().objects.all() if rows is None else rows).filter(
        status=Status.FAILED
    )
    if storage:
        rows = rows.filter(storage=storage)
    if names is not None:
        rows = rows.filter(name__in=names)
    queued = []
    for row in rows.iterator():
        target = resolve_reference(row.storage, row.name)
        if target is not None and target.transfer(row.name) is not None:
            queued.append(row.name)
    return queued


def resolve_reference(reference: str, name: str) -> QueuedStorage | None:
    """Return the storage of a ledger row, or log and skip a forgotten one."""
    try:
        return registry.resolve(reference)
    except UnknownStorage:
        logger.warning(
            "Skipped %r: its storage %r is no longer configured.", name, reference,
            extra={"file_name": name, "storage": reference},
        )  # fmt: skip
        return None


def default_age() -> timedelta:
    """Return how long a transfer may stay pending before it counts as lost.

    It exceeds the longest wait between two retries, so that a transfer
    waiting for its next try is not queued twice.
    """
    return timedelta(seconds=settings.QUEUED_STORAGE_RETRY_BACKOFF_MAX + 600)


def reconcile(
    older_than: timedelta | None = None,
    storage: str | None = None,
    *,
    transferring: bool = True,
) -> list[str]:
    """Queue again the transfers that have been pending for *older_than*.

    This recovers a message lost to a broker outage, or to a crash between
    the commit and the publish. With *transferring*, a transfer still marked
    as transferring for that long is taken for one that lost its worker
    without a redelivery, and is queued too.

    Each row is claimed by an ``UPDATE`` that restarts its age before its
    message is sent, so that two runs at once, or a run repeated before the
    age has passed again, send one message per file, not one per run.
    """
    now = timezone.now()
    cutoff = now - (default_age() if older_than is None else older_than)
    statuses = [Status.PENDING] + ([Status.TRANSFERRING] if transferring else [])
    rows = _model().objects.filter(status__in=statuses, updated__lt=cutoff)
    if storage:
        rows = rows.filter(storage=storage)
    queued = []
    for row in rows.iterator():
        target = resolve_reference(row.storage, row.name)
        if target is None or target.delayed:
            continue  # Delayed files wait for an explicit transfer().
        mine = _model().objects.filter(
            pk=row.pk, version=row.version, status=row.status
        )
        if not mine.filter(updated=row.updated).update(updated=now):
            continue  # Another run took it, or it moved on meanwhile.
        if target.enqueue(row.name, row.version, host=row.host or None) is None:
            # Not sent: leave its age as it was, for the next run.
            mine.filter(updated=now).update(updated=row.updated)
            continue
        if row.outbox:  # Sent: the dispatcher must not send it again.
            mine.update(outbox=False)
        queued.append(row.name)
    if queued:
        logger.warning("Reconcile queued %d stale transfers again.", len(queued))
    return queued


def walk(storage: Any, path: str = "") -> Iterator[str]:
    """Yield the name of every file below *path* in *storage*."""
    try:
        dirs, files = storage.listdir(path)
    except FileNotFoundError:
        return
    for name in sorted(files):
        yield posixpath.join(path, name) if path else name
    for directory in sorted(dirs):
        yield from walk(storage, posixpath.join(path, directory) if path else directory)


def untracked(queued: QueuedStorageBase) -> list[str]:
    """Return the local files of *queued* that the ledger has no row for."""
    rows = _model().objects.filter(storage=queued.reference)
    known = set(rows.values_list("name_hash", flat=True))
    return [name for name in walk(queued.local) if name_hash(name) not in known]


@dataclass
class Mismatch:
    name: str
    problem: str


def verify(queued: QueuedStorageBase, names: list[str] | None = None) -> list[Mismatch]:
    """Compare transferred files' remote copies with the ledger and local copies."""
    rows = _model().objects.filter(storage=queued.reference, status=Status.TRANSFERRED)
    if names is not None:
        rows = rows.filter(name__in=names)
    problems = []
    for row in rows.iterator():
        try:
            remote_size = queued.remote.size(row.name)
        except Exception as exc:  # A missing object raises differently per backend.
            reason = queued.redact(f"remote copy unreadable: {exc}")
            problems.append(Mismatch(row.name, reason))
            continue
        if row.size is not None and remote_size != row.size:
            problems.append(Mismatch(
                row.name, f"remote has {remote_size} bytes, the ledger {row.size}"
            ))  # fmt: skip
            continue
        if queued.local.exists(row.name):
            local_size = queued.local.size(row.name)
            if local_size != remote_size:
                problems.append(Mismatch(
                    row.name, f"remote has {remote_size} bytes, local {local_size}"
                ))  # fmt: skip
    return problems


@dataclass
class ImportReport:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def bulk_import(
    queued: QueuedStorageBase,
    *,
    dry_run: bool = False,
    rate: float | None = None,
    limit: int | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> ImportReport:
    """Move every file of *queued*'s local storage that is not yet remote.

    Files are transferred by this process, one by one, and recorded as they
    go, so an interrupted import resumes where it stopped. *rate* caps the
    files per second; *limit* the number of files handled in this run.
    """
    report = ImportReport()
    names = list(walk(queued.local))
    states = queued.state.get_many(names)
    remote = {n for n, state in states.items() if state is not None and state.is_remote}
    todo = [n for n in names if n not in remote]
    report.skipped = [n for n in names if n in remote]
    if limit is not None:
        todo = todo[:limit]
    started = time.monotonic()
    for index, name in enumerate(todo, 1):
        if progress:
            progress(index, len(todo), name)
        if dry_run:
            report.done.append(name)
            continue
        if rate:
            delay = started + (index - 1) / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        try:
            result = transfer_file(name, queued.local, queued.remote)
        except Exception as exc:
            report.failed[name] = queued.redact(f"{type(exc).__name__}: {exc}")
            continue
        state = FileState(Status.TRANSFERRED, secrets.token_hex(8), result.size)
        queued.state.record(name, state)
        report.done.append(name)
    return report


def purge(older_than: timedelta, storage: str | None = None) -> int:
    """Remove the ledger rows of files deleted longer than *older_than* ago."""
    rows = _model().objects.filter(
        status=Status.DELETED, updated__lt=timezone.now() - older_than
    )
    if storage:
        rows = rows.filter(storage=storage)
    count, _ = rows.delete()
    return count
