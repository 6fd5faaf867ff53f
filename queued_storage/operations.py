"""What an operator does with the ledger: count, retry, reconcile, verify, import.

Plain functions with explicit arguments, shared by the management command,
the admin actions and the periodic task.
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.db.models import Count, Min, Q
from django.utils import timezone

from . import registry, transfer_s3, tree
from .backends import QueuedStorage
from .base import QueuedStorageBase
from .batching import batched
from .conf import settings
from .exceptions import UnknownStorage
from .state import FileState, StateStore, Status, name_hash
from .transfer import transfer_file

logger = logging.getLogger("queued_storage")


def _model() -> Any:
    from .models import StoredFile

    return StoredFile


def known_storages() -> dict[str, QueuedStorage]:
    """Return this process's queued storages by reference."""
    from .checks import queued_storages

    return {storage.reference: storage for storage in queued_storages()}


#: Seconds past which a message still waiting in the outbox counts as stuck:
#: a running dispatcher sends it within a fraction of a second.
OUTBOX_STUCK = 60.0
#: What to do about messages stuck in the outbox.
OUTBOX_HINT = (
    "Messages wait in the outbox: every Celery worker node sends them, so "
    "start one (or run 'manage.py queued_storage dispatch'), or check that "
    "QUEUED_STORAGE_WORKER_DISPATCH is not False."
)


def status_counts(storage: str | None = None) -> dict[str, Any]:
    """Return the number of files per status and the oldest pending file's age.

    Also how many files wait in the outbox for their message to be sent, and
    for how long the oldest of them has waited (a retry waiting for its time
    counts from when it was put back).
    """
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
    waiting = rows.filter(status=Status.PENDING, outbox=True)
    outbox = waiting.count()
    first = waiting.aggregate(oldest=Min("updated"))["oldest"] if outbox else None
    outbox_age = (timezone.now() - first).total_seconds() if first else None
    expired = rows.filter(
        status=Status.TRANSFERRING, lease_expires__lte=timezone.now()
    ).count()
    return {
        "counts": counts, "oldest_pending_seconds": age, "outbox": outbox,
        "outbox_oldest_seconds": outbox_age, "expired_leases": expired,
    }  # fmt: skip


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
    queued = []
    for row in _rows_named(rows, names):
        target = resolve_reference(row.storage, row.name)
        if target is not None and target.transfer(row.name) is not None:
            queued.append(row.name)
    return queued


def _rows_named(rows: Any, names: list[str] | None) -> Iterator[Any]:
    """Yield the *rows* whose name is one of *names* (all with ``None``).

    The names are looked up a batch at a time: a list as long as a user
    likes does not fit in one SQL statement.
    """
    if names is None:
        yield from rows.iterator()
        return
    for batch in batched(dict.fromkeys(names)):
        yield from rows.filter(name__in=batch).iterator()


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
    """Return how long a file may wait for its message before it counts as lost.

    A message normally starts within seconds; the age leaves room for a
    queue that is behind. Retries are not waited for: the ledger records
    when each is due.
    """
    return timedelta(seconds=settings.QUEUED_STORAGE_RECONCILE_AGE)


def stale_rows(
    older_than: timedelta | None = None,
    storage: str | None = None,
    *,
    unleased: bool = True,
) -> Any:
    """Return the ledger rows whose transfer message is lost, or due.

    These are: pending files whose message has waited for *older_than*
    (by default :func:`default_age`) past their save or their retry's due
    time; retries held in the ledger that are due; and files marked
    transferring whose lease expired, which lost their worker. With
    *unleased*, also files marked transferring for *older_than* that hold no
    lease at all (rows written before leases existed).
    """
    now = timezone.now()
    cutoff = now - (default_age() if older_than is None else older_than)
    pending = Q(status=Status.PENDING) & (
        Q(next_attempt__isnull=True, updated__lt=cutoff)
        | Q(next_attempt__lt=cutoff)
        | Q(outbox=True, next_attempt__lte=now)
    )
    lost = Q(lease_expires__lte=now)
    if unleased:
        lost |= Q(lease_expires__isnull=True, updated__lt=cutoff)
    orphaned = Q(status=Status.TRANSFERRING) & lost
    rows = _model().objects.filter(pending | orphaned)
    if storage:
        rows = rows.filter(storage=storage)
    return rows


def expired_leases(storage: str | None = None) -> Any:
    """Return the rows marked transferring whose worker's lease has expired."""
    rows = _model().objects.filter(
        status=Status.TRANSFERRING, lease_expires__lte=timezone.now()
    )
    return rows.filter(storage=storage) if storage else rows


def reconcile(
    older_than: timedelta | None = None,
    storage: str | None = None,
    *,
    transferring: bool = True,
) -> list[str]:
    """Queue again the transfers whose message is lost, or whose retry is due.

    This recovers a message lost to a broker outage, dropped by the broker,
    or lost in a crash between the commit and the publish, and a transfer
    whose worker died (its lease expired). See :func:`stale_rows`; without
    *transferring*, a row marked transferring is queued again only when its
    lease has provably expired, never one that holds no lease.

    Each row is claimed by an ``UPDATE`` that restarts its age before its
    message is sent, so that two runs at once, or a run repeated before the
    age has passed again, send one message per file, not one per run.
    """
    now = timezone.now()
    rows = stale_rows(older_than, storage, unleased=transferring)
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
        if row.status == Status.TRANSFERRING:
            logger.warning(
                "The lease of %r expired: its worker was lost; queuing it again.",
                row.name, extra={"file_name": row.name, "storage": row.storage,
                                 "status": row.status, "attempt": row.attempts},
            )  # fmt: skip
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


def walk(
    storage: Any, path: str = "", skipped: tree.Skipped | None = None
) -> Iterator[str]:
    """Yield the name of every regular file below *path* in *storage*.

    Symbolic links are not followed; see :func:`queued_storage.tree.walk`.
    """
    return tree.walk(storage, path, skipped=skipped)


def untracked(
    queued: QueuedStorageBase, skipped: tree.Skipped | None = None
) -> Iterator[str]:
    """Yield the local files of *queued* that the ledger has no row for.

    Entries the walk leaves out (links, special files, names the storage
    refuses, folders it cannot read) go to *skipped* with the reason.
    """
    rows = _model().objects.filter(storage=queued.reference)
    names = tree.walk(queued.local, validate=queued.validate_name, skipped=skipped)
    for batch in batched(names):
        hashes = {name_hash(name): name for name in batch}
        known = set(
            rows.filter(name_hash__in=list(hashes)).values_list("name_hash", flat=True)
        )
        yield from (name for digest, name in hashes.items() if digest not in known)


@dataclass
class Mismatch:
    name: str
    problem: str


def verify(queued: QueuedStorageBase, names: list[str] | None = None) -> list[Mismatch]:
    """Compare transferred files' remote copies with the ledger and local copies."""
    rows = _model().objects.filter(storage=queued.reference, status=Status.TRANSFERRED)
    problems = []
    for row in _rows_named(rows, names):
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


#: How many files ``manage.py queued_storage import`` moves at once by default.
IMPORT_CONCURRENCY = 4

#: The most failed and left-out names an import report keeps (with their
#: reasons); beyond it, only the counts grow.
REPORT_LIMIT = 1000


@dataclass
class ImportReport:
    """What an import did, in counts, with the reasons of the first problems."""

    #: Files moved (or, in a dry run, that would be).
    done: int = 0
    #: Files already recorded as remote.
    skipped: int = 0
    #: Files whose transfer failed, and entries the walk left out.
    failures: int = 0
    refusals: int = 0
    #: The first :data:`REPORT_LIMIT` of each, by name, with the reason.
    failed: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)

    def fail(self, name: str, reason: str) -> None:
        """Count a file whose transfer failed, with the *reason*."""
        self.failures += 1
        if len(self.failed) < REPORT_LIMIT:
            self.failed[name] = reason

    def refuse(self, name: str, reason: str) -> None:
        """Count an entry the walk left out, with the *reason*."""
        self.refusals += 1
        if len(self.refused) < REPORT_LIMIT:
            self.refused[name] = reason


def bulk_import(
    queued: QueuedStorageBase,
    *,
    dry_run: bool = False,
    rate: float | None = None,
    limit: int | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    found: Callable[[str], None] | None = None,
    concurrency: int = 1,
) -> ImportReport:
    """Move every file of *queued*'s local storage that is not yet remote.

    Files are transferred by this process, by *concurrency* threads at once,
    and recorded by the calling thread a batch at a time (see
    :class:`_Movers`); an interrupted import resumes where it stopped, since
    a file uploaded but not yet recorded is found on the remote by the next
    one and recorded without a second upload. *rate* caps the files per
    second; *limit* the number of files handled in this run. *found* is
    called with each file that is (or, in a dry run, would be) moved. The
    local tree is walked lazily and looked up a batch at a time, and at most
    twice *concurrency* handfuls of :data:`CHUNK` files wait for a thread,
    so memory does not grow with the number of files; symbolic links,
    special files and names the storage refuses are left out and counted in
    the report's ``refused``. *progress*, when given, is called as each
    file is done with (moved and recorded, failed or found already remote)
    with its number and the number of local files (counted first).
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, not {concurrency!r}.")
    report = ImportReport()

    def files() -> Iterator[str]:
        return tree.walk(
            queued.local, validate=queued.validate_name, skipped=report.refuse
        )

    total = sum(1 for _ in tree.walk(queued.local)) if progress else 0
    if limit is not None:
        total = min(total, limit)
    index = [0]

    def advance(name: str) -> None:
        index[0] += 1
        if progress:
            progress(index[0], max(total, index[0]), name)

    def tell(name: str, problem: str | None) -> None:
        advance(name)
        if problem is not None:
            report.fail(name, problem)
            return
        report.done += 1
        if found:
            found(name)

    started = time.monotonic()
    handled = 0
    threads = concurrency if not dry_run else 0
    with _Movers(queued, threads, tell, chunk=1 if rate else CHUNK) as movers:
        for batch in batched(files()):
            states = queued.state.get_many(batch)
            for name in batch:
                state = states[name]
                remote = state is not None and state.is_remote
                if not remote and limit is not None and handled >= limit:
                    return report
                if remote:
                    advance(name)
                    report.skipped += 1
                    continue
                handled += 1
                if dry_run:
                    tell(name, None)
                    continue
                if rate:
                    delay = started + (handled - 1) / rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                movers.move(name, state)
    return report


#: Moved files recorded at once: one ledger statement (a few on databases
#: without ``RETURNING``) and one cache write for all of them.
RECORD_BATCH = 100
#: The most seconds a moved file waits to be recorded with others.
RECORD_INTERVAL = 1.0
#: Files handed to a thread at once (one at a time under ``rate``).
CHUNK = 8


def _transfer(queued: QueuedStorageBase, name: str) -> int | str:
    """Transfer *name*; return its size, or what went wrong."""
    try:
        return transfer_file(name, queued.local, queued.remote).size
    except Exception as exc:
        return queued.redact(f"{type(exc).__name__}: {exc}")


#: A file to move: its name and its state when it was looked up.
Item = tuple[str, FileState | None]


class _Movers:
    """Threads that move the files given to :meth:`move`; this thread records them.

    Files go to the threads :data:`CHUNK` at a time; each thread only
    transfers. What they moved is recorded by the caller's thread,
    :data:`RECORD_BATCH` files at a time or after :data:`RECORD_INTERVAL`
    seconds, whichever comes first, with one ledger statement and one cache
    write (see :func:`_record_moved`). *tell* is called in the caller's
    thread with each name and its problem (``None`` once moved and
    recorded), so that the report needs no lock. With no threads, each file
    is transferred at once in the caller's thread. Leaving the ``with``
    block, even by an error, waits for every file given and records those
    moved, then closes the threads' database connections.
    """

    def __init__(
        self,
        queued: QueuedStorageBase,
        threads: int,
        tell: Callable[[str, str | None], None],
        chunk: int = CHUNK,
    ) -> None:
        self.queued, self.threads, self.tell = queued, threads, tell
        self.chunk_size = chunk
        self.todo: queue.Queue[list[Item] | None] = queue.Queue(
            maxsize=2 * max(threads, 1)
        )
        self.outcomes: queue.SimpleQueue[list[tuple[Item, int | str]]] = (
            queue.SimpleQueue()
        )
        self.running: list[threading.Thread] = []
        self.chunk: list[Item] = []
        #: Moved files not recorded yet, with their sizes.
        self.moved: list[tuple[Item, int]] = []
        self.since = 0.0
        self.share: Callable[[], None] = lambda: None

    def __enter__(self) -> _Movers:
        if self.threads > 1:
            self.share = transfer_s3.connection_sharer(self.queued.remote, self.threads)
            for number in range(self.threads):
                thread = threading.Thread(
                    target=self._work, name=f"queued-storage-import-{number}",
                    daemon=True,
                )  # fmt: skip
                thread.start()
                self.running.append(thread)
        return self

    def _work(self) -> None:
        from django.db import connections

        try:
            self.share()
            while (chunk := self.todo.get()) is not None:
                done: list[tuple[Item, int | str]] = []
                for item in chunk:
                    try:
                        outcome = _transfer(self.queued, item[0])
                    except BaseException as exc:  # Told, never lost with the thread.
                        outcome = self.queued.redact(f"{type(exc).__name__}: {exc}")
                    done.append((item, outcome))
                self.outcomes.put(done)
        finally:
            connections.close_all()

    def move(self, name: str, state: FileState | None) -> None:
        if not self.running:
            self._settle([((name, state), _transfer(self.queued, name))])
            return
        self.chunk.append((name, state))
        if len(self.chunk) >= self.chunk_size:
            self.todo.put(self.chunk)
            self.chunk = []
        self._drain()

    def _drain(self) -> None:
        while True:
            try:
                done = self.outcomes.get_nowait()
            except queue.Empty:
                break
            self._settle(done, record=False)
        self._record(force=False)

    def _settle(self, done: list[tuple[Item, int | str]], record: bool = True) -> None:
        """Tell the failures among *done* at once; keep the moved to record."""
        for item, outcome in done:
            if isinstance(outcome, str):
                self.tell(item[0], outcome)
            else:
                if not self.moved:
                    self.since = time.monotonic()
                self.moved.append((item, outcome))
        if record:
            self._record(force=False)

    def _record(self, force: bool) -> None:
        if not self.moved:
            return
        if not force and len(self.moved) < RECORD_BATCH:
            if time.monotonic() - self.since < RECORD_INTERVAL:
                return
        moved, self.moved = self.moved, []
        for name, problem in _record_moved(self.queued, moved).items():
            self.tell(name, problem)

    def __exit__(self, *exc: object) -> None:
        try:
            if self.running:
                if self.chunk:
                    self.todo.put(self.chunk)
                    self.chunk = []
                for _ in self.running:
                    self.todo.put(None)
                for thread in self.running:
                    thread.join()
                while True:
                    try:
                        self._settle(self.outcomes.get_nowait(), record=False)
                    except queue.Empty:
                        break
        finally:
            self._record(force=True)


_CHANGED = (
    "deleted or saved again while it was imported: its state was left as it "
    "was, and what was uploaded of a deleted file was removed"
)


def _record_moved(
    queued: QueuedStorageBase, moved: list[tuple[Item, int]]
) -> dict[str, str | None]:
    """Record the *moved* files as transferred; return each name's problem.

    A file first seen untracked is recorded only if no other save recorded
    its name meanwhile; these are recorded together. One seen with a state
    is recorded only if that state is still current. A file deleted
    meanwhile must not come back: what the import uploaded is removed from
    the remote. When the ledger refuses a batch, its files are recorded one
    by one, and a file that cannot be recorded (the ledger is out of reach)
    counts as failed with the reason: the next import finds it on the
    remote and records it without uploading it again.
    """
    store = queued.state
    done = {
        name: FileState(Status.TRANSFERRED, secrets.token_hex(8), size)
        for (name, _), size in moved
    }
    # Untracked when looked up: nothing may have recorded the name since.
    new = {name: done[name] for (name, read), _ in moved if read is None}
    # Deleted when looked up (its row kept as a mark): only over that mark.
    over = {
        name: done[name]
        for (name, read), _ in moved
        if read is not None and not read.version
    }
    problems: dict[str, str | None] = {}
    recorded: set[str] = set()
    for group, new_only in ((new, True), (over, False)):
        if not group:
            continue
        try:
            recorded |= store.record_many(group, exclusive=True, new_only=new_only)
            continue
        except Exception:  # noqa: S110 - told per file below
            pass
        # One at a time, so that a row the ledger refuses fails alone.
        for name, state in group.items():
            try:
                one = {name: state}
                recorded |= store.record_many(one, exclusive=True, new_only=new_only)
            except Exception as exc:
                problems[name] = queued.redact(
                    f"moved but not recorded: {type(exc).__name__}: {exc}"
                )
    for (name, read), _ in moved:
        if name in problems:
            continue
        try:
            if read and read.version:
                ok = store.compare_and_set(
                    name, read.version, done[name],
                    only_from=(Status.PENDING, Status.TRANSFERRING, Status.FAILED),
                )  # fmt: skip
            else:
                ok = name in recorded
            if not ok:
                current = store.get(name, durable=True)
                if (current is None and store.ledger) or (
                    current and current.is_deleted
                ):
                    queued.remote.delete(name)
        except Exception as exc:
            problems[name] = queued.redact(f"{type(exc).__name__}: {exc}")
            continue
        problems[name] = None if ok else _CHANGED
    return problems


def purge(older_than: timedelta, storage: str | None = None) -> int:
    """Remove the ledger rows of files deleted longer than *older_than* ago.

    Their cache entries (the tombstones) go too, a batch at a time.
    """
    cutoff = timezone.now() - older_than
    rows = _model().objects.filter(status=Status.DELETED, updated__lt=cutoff)
    if storage:
        rows = rows.filter(storage=storage)
    count = 0
    while True:
        batch = list(rows.order_by("pk").values_list("pk", "storage", "name")[:500])
        if not batch:
            return count
        # A row saved again meanwhile is no longer deleted, and stays.
        deleted, _ = rows.filter(pk__in=[pk for pk, _, _ in batch]).delete()
        count += deleted
        names: dict[str, list[str]] = {}
        for _, reference, name in batch:
            names.setdefault(reference, []).append(name)
        for reference, found in names.items():
            _state_of(reference).evict(found)


def _state_of(reference: str) -> StateStore:
    """Return the state store of the storage known as *reference*.

    A storage no longer configured keeps its entries under the default prefix.
    """
    try:
        return registry.resolve(reference).state
    except UnknownStorage:
        return StateStore(reference, settings.QUEUED_STORAGE_CACHE_PREFIX)
