"""Leases: which delivery of a transfer message may upload a file right now.

A delivery that wants to upload a file first takes its lease: one atomic
statement that marks the file transferring, counts the attempt and records
the delivery as the owner until an expiry. The owner renews the lease while
its upload runs (:class:`Renewal`); any other delivery of the same file finds
the lease live and steps aside, without uploading and without counting an
attempt. An owner that dies stops renewing: the lease expires, and the next
delivery, or ``reconcile``, takes over. The outcome of the upload is written
only while the lease is still the owner's, which releases it.

With the ledger, the lease lives in the file's row. Without it, a cache entry
added with ``cache.add()`` (atomic in Redis and memcached) stands for it.
"""

from __future__ import annotations

import enum
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db import connections
from django.db.models import F, Q
from django.utils import timezone

from .ledger_sql import statements
from .state import FileState, Status, name_hash

if TYPE_CHECKING:
    from .models import StoredFile
    from .state import StateStore

logger = logging.getLogger("queued_storage")


class Claim(enum.Enum):
    """What a delivery found when it asked for a file's lease."""

    #: The lease is this delivery's: upload.
    TAKEN = "taken"
    #: Another delivery holds a live lease: step aside.
    BUSY = "busy"
    #: The file's next attempt is not due yet: step aside.
    EARLY = "early"
    #: The file is already remote.
    DONE = "done"
    #: The file was deleted, saved again, or failed: nothing to do.
    STALE = "stale"


@dataclass(frozen=True)
class Granted:
    """The answer to a claim, with the file's state once the lease is taken."""

    claim: Claim
    state: FileState | None = None


def new_owner() -> str:
    """Return a token that names one delivery as a lease owner."""
    return uuid.uuid4().hex


def _lease_key(store: StateStore, name: str) -> str:
    return f"{store.key(name)}:lease"


def is_held(store: StateStore, name: str, version: str) -> bool:
    """Return whether a live lease holds *name* at *version*: a worker moves it."""
    if store.ledger:
        rows = store._rows().filter(
            name_hash=name_hash(name), version=version, status=Status.TRANSFERRING,
            lease_expires__gt=timezone.now(),
        )  # fmt: skip
        return bool(rows.exists())
    try:
        return store.cache.get(_lease_key(store, name)) is not None
    except Exception:  # An unreachable cache holds no lease.
        return False


def claim(
    store: StateStore, name: str, version: str, owner: str, seconds: float
) -> Granted:
    """Take the lease of *name* at *version* for *owner*; count the attempt."""
    if store.ledger:
        return _claim_row(store, name, version, owner, seconds)
    return _claim_cache(store, name, version, owner, seconds)


def _claim_row(
    store: StateStore, name: str, version: str, owner: str, seconds: float
) -> Granted:
    now = timezone.now()
    sql = statements(store.db)
    if sql is not None:
        # One written-out statement takes the lease and reads the row back.
        leased = sql.lease(
            {
                "storage": store.reference, "name_hash": name_hash(name),
                "version": version, "owner": owner, "now": sql.timestamp(now),
                "expires": sql.timestamp(now + timedelta(seconds=seconds)),
                "waiting": str(Status.PENDING), "moving": str(Status.TRANSFERRING),
            }
        )  # fmt: skip
        if leased is not None:
            state = FileState(*leased)
            store.remember(name, state)
            return Granted(Claim.TAKEN, state)
        return _refused(store, name, version, now)
    rows = store._rows().filter(name_hash=name_hash(name))
    mine = rows.filter(
        Q(lease_expires__isnull=True) | Q(lease_expires__lte=now),
        Q(next_attempt__isnull=True) | Q(next_attempt__lte=now),
        version=version,
        status__in=[Status.PENDING, Status.TRANSFERRING],
    )
    taken = mine.update(
        status=Status.TRANSFERRING, attempts=F("attempts") + 1, lease_owner=owner,
        lease_expires=now + timedelta(seconds=seconds), next_attempt=None,
        outbox=False, updated=now,
    )  # fmt: skip
    row = rows.first()
    if row is not None and taken and row.lease_owner == owner:
        state = FileState.from_row(row)
        store.remember(name, state)
        return Granted(Claim.TAKEN, state)
    return _refused(store, name, version, now, row)


def _refused(
    store: StateStore,
    name: str,
    version: str,
    now: datetime,
    row: StoredFile | None = None,
) -> Granted:
    """Tell why the lease of *name* at *version* was not taken."""
    if row is None:
        row = store._rows().filter(name_hash=name_hash(name)).first()
    if row is None:
        return Granted(Claim.STALE)
    state = FileState.from_row(row)
    if row.version != version or row.status in (Status.DELETED, Status.FAILED):
        return Granted(Claim.STALE, state)
    if row.status == Status.TRANSFERRED:
        return Granted(Claim.DONE, state)
    if row.lease_expires is not None and row.lease_expires > now:
        return Granted(Claim.BUSY, state)
    if row.next_attempt is not None and row.next_attempt > now:
        return Granted(Claim.EARLY, state)
    return Granted(Claim.STALE, state)


def _claim_cache(
    store: StateStore, name: str, version: str, owner: str, seconds: float
) -> Granted:
    state = store.get(name)
    if state is None or state.is_deleted or state.status == Status.FAILED:
        return Granted(Claim.STALE, state)
    if state.version and state.version != version:
        return Granted(Claim.STALE, state)
    if state.is_remote:
        return Granted(Claim.DONE, state)
    try:
        free = store.cache.add(_lease_key(store, name), owner, timeout=seconds)
    except Exception as exc:
        logger.warning("Cache unavailable, transferring without a lease: %s", exc)
        free = True
    if not free:
        return Granted(Claim.BUSY, state)
    moving = state.evolve(
        status=Status.TRANSFERRING, version=version, attempts=state.attempts + 1
    )
    if not store.compare_and_set(
        name, version, moving, only_from=(Status.PENDING, Status.TRANSFERRING)
    ):
        release(store, name, version, owner)
        return Granted(Claim.STALE, state)
    return Granted(Claim.TAKEN, moving)


def renew(
    store: StateStore, name: str, version: str, owner: str, seconds: float
) -> bool:
    """Extend *owner*'s lease of *name*; return whether it still holds it."""
    if store.ledger:
        now = timezone.now()
        rows = store._rows().filter(
            name_hash=name_hash(name), version=version, lease_owner=owner,
            status=Status.TRANSFERRING,
        )  # fmt: skip
        return bool(rows.update(lease_expires=now + timedelta(seconds=seconds)))
    try:
        key = _lease_key(store, name)
        if store.cache.get(key) != owner:
            return False
        return bool(store.cache.touch(key, timeout=seconds))
    except Exception as exc:
        logger.warning("Cache unavailable, lease not renewed: %s", exc)
        return True


def release(store: StateStore, name: str, version: str, owner: str) -> None:
    """Give up *owner*'s lease of *name*, if it still holds it."""
    if store.ledger:
        store._rows().filter(
            name_hash=name_hash(name), version=version, lease_owner=owner
        ).update(lease_owner="", lease_expires=None)
        return
    try:
        key = _lease_key(store, name)
        if store.cache.get(key) == owner:
            store.cache.delete(key)
    except Exception as exc:
        logger.warning("Cache unavailable, lease left to expire: %s", exc)


class Renewal:
    """Keep a lease renewed while the body of a ``with`` runs.

    The lease is renewed every third of its length, so that two renewals
    may fail (a slow database) before it expires. ``lost`` tells whether the
    lease was found taken or gone; the upload cannot be stopped midway, but
    its outcome is then not written. One thread per process renews every
    lease that its transfers hold (:class:`Renewer`), rather than a thread
    for each transfer.
    """

    def __init__(
        self, store: StateStore, name: str, version: str, owner: str, seconds: float
    ) -> None:
        self.args = (store, name, version, owner, seconds)
        self.every = seconds / 3
        self.lost = False
        self.due = 0.0
        self.stopped = False
        #: Held while the renewer renews this lease: leaving waits for it.
        self.busy = threading.Lock()

    def renew_now(self) -> None:
        """Renew the lease once, in the renewer's thread."""
        with self.busy:
            if self.stopped:
                return
            try:
                held = renew(*self.args)
            except Exception as exc:
                logger.warning("Could not renew a lease: %s", exc)
                return
            if not held:
                self.lost = True
                logger.warning(
                    "Lost the lease of %r while transferring it.",
                    self.args[1], extra={"file_name": self.args[1]},
                )  # fmt: skip

    def __enter__(self) -> Renewal:
        renewer().add(self)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        renewer().remove(self)
        with self.busy:  # A renewal under way ends first.
            self.stopped = True


class Renewer:
    """The thread of a process that renews the leases its transfers hold."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.leases: set[Renewal] = set()
        self.changed = threading.Condition()
        self.thread: threading.Thread | None = None

    def add(self, renewal: Renewal) -> None:
        with self.changed:
            renewal.due = time.monotonic() + renewal.every
            self.leases.add(renewal)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(
                    target=self._run, name="queued-storage-leases", daemon=True
                )
                self.thread.start()
            self.changed.notify()

    def remove(self, renewal: Renewal) -> None:
        with self.changed:
            self.leases.discard(renewal)

    def _due(self) -> list[Renewal]:
        """Wait until leases are due for renewal; return them."""
        with self.changed:
            while True:
                now = time.monotonic()
                due = [r for r in self.leases if r.due <= now]
                if due:
                    for renewal in due:
                        renewal.due = now + renewal.every
                    return due
                # With no lease held the thread sleeps until one is added.
                soonest = min((r.due for r in self.leases), default=None)
                self.changed.wait(None if soonest is None else soonest - now)

    def _run(self) -> None:
        while True:
            for renewal in self._due():
                renewal.renew_now()
                if renewal.lost:
                    self.remove(renewal)
            # The thread's database connection is not kept between renewals,
            # which are seconds apart.
            for connection in connections.all(initialized_only=True):
                try:
                    connection.close()
                except Exception as exc:  # The thread must go on renewing.
                    logger.warning("Could not close a connection: %s", exc)


_renewer: Renewer | None = None
_renewer_lock = threading.Lock()


def renewer() -> Renewer:
    """Return the lease renewer of this process (a forked child gets its own)."""
    global _renewer
    with _renewer_lock:
        if _renewer is None or _renewer.pid != os.getpid():
            _renewer = Renewer()
        return _renewer


def _forget_after_fork() -> None:
    # The parent's thread does not exist in a forked child, and the lock may
    # have been held by another of the parent's threads at the fork.
    global _renewer, _renewer_lock
    _renewer, _renewer_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
