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
import threading
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.db import connections
from django.db.models import F, Q
from django.utils import timezone

from .state import FileState, Status, name_hash

if TYPE_CHECKING:
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
    if row is None:
        return Granted(Claim.STALE)
    state = FileState.from_row(row)
    if taken and row.lease_owner == owner:
        store.remember(name, state)
        return Granted(Claim.TAKEN, state)
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
    """Renew a lease in a thread of its own while the body of a ``with`` runs.

    The lease is renewed every third of its length, so that two renewals
    may fail (a slow database) before it expires. ``lost`` tells whether the
    lease was found taken or gone; the upload cannot be stopped midway, but
    its outcome is then not written.
    """

    def __init__(
        self, store: StateStore, name: str, version: str, owner: str, seconds: float
    ) -> None:
        self.args = (store, name, version, owner, seconds)
        self.every = seconds / 3
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"queued-storage-lease-{owner[:8]}", daemon=True
        )

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.every):
                try:
                    if not renew(*self.args):
                        self.lost = True
                        logger.warning(
                            "Lost the lease of %r while transferring it.",
                            self.args[1], extra={"file_name": self.args[1]},
                        )  # fmt: skip
                        return
                except Exception as exc:
                    logger.warning("Could not renew a lease: %s", exc)
        finally:
            # The thread's own database connection closes with it.
            for connection in connections.all(initialized_only=True):
                connection.close()

    def __enter__(self) -> Renewal:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stop.set()
        self._thread.join()
