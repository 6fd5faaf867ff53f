"""The transfer of one file, step by step: the project's state machine.

A delivery of a transfer message comes here with a resolved storage, a name
and a version. :class:`FileTransfer` takes the file's lease (which counts the
attempt), runs the upload while renewing the lease, records the outcome, and
decides what comes next: done, retry later, failed for good, or discarded
because the file changed meanwhile. It imports no task framework and reads
no settings: a runner (the Celery tasks in :mod:`.tasks`) passes a
:class:`Policy` and the callables it wants run.
"""

from __future__ import annotations

import logging
import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.utils import timezone

from . import leases, local_copy
from .exceptions import TransferError
from .leases import Claim
from .signals import file_transferred, transfer_failed
from .state import FileState, Status, name_hash
from .transfer import TransferResult, remote_matches

if TYPE_CHECKING:
    from .backends import QueuedStorage

logger = logging.getLogger("queued_storage")

#: Copy *name* from *local* to *remote*; return whether it worked.
TransferCallable = Callable[..., "bool | TransferResult"]
#: Send the message of *name* at *version* again in *delay* seconds; return
#: whether it was sent.
RetrySender = Callable[["QueuedStorage", str, str, float], bool]


@dataclass(frozen=True)
class Policy:
    """How often and when a transfer is tried, and how long a lease lasts."""

    #: Failed uploads retried before the file is marked failed.
    retries: int = 5
    #: Uploads cut off by a lost worker tolerated on top of those.
    max_deliveries: int = 5
    #: Seconds before the first retry; later ones double.
    retry_delay: float = 60.0
    #: Upper bound of the delay between two retries.
    backoff_max: float = 3600.0
    #: Seconds a lease lasts unless renewed.
    lease: float = 60.0
    #: Longest delay for which a retry is sent to the broker at once, with a
    #: countdown; a longer one waits in the ledger until due.
    countdown_max: float = 300.0

    @property
    def attempt_limit(self) -> int:
        """Return how many uploads may start before the file is given up."""
        return self.retries + 1 + self.max_deliveries

    def backoff(self, retries: int) -> float:
        """Return the delay before retry number *retries* (0-based), jittered."""
        delay = min(self.backoff_max, self.retry_delay * 2**retries)
        return float(delay) * random.uniform(0.5, 1.0)  # noqa: S311


def _extra(queued: QueuedStorage, name: str, **more: Any) -> dict[str, Any]:
    return {"file_name": name, "storage": queued.reference, **more}


class FileTransfer:
    """Move files of queued storages, one delivery at a time.

    *transfer* does the copy (``transfer(name, local, remote, **kwargs)``),
    *after_transfer* runs once the file is served from the remote,
    *send_retry* sends a retry message with a countdown, and *sender* is the
    sender of the signals. *on_transferred*, if given, runs after
    *after_transfer* with the storage, the name and the version.
    """

    def __init__(
        self,
        policy: Policy,
        *,
        transfer: TransferCallable,
        after_transfer: Callable[[QueuedStorage, str], None],
        send_retry: RetrySender,
        sender: Any,
        on_transferred: Callable[[QueuedStorage, str, str], None] | None = None,
    ) -> None:
        self.policy = policy
        self.on_transferred = on_transferred
        self.transfer = transfer
        self.after_transfer = after_transfer
        self.send_retry = send_retry
        self.sender = sender

    def run(self, queued: QueuedStorage, name: str, version: str) -> bool:
        """Move *name* if its state still has *version*; record the outcome."""
        store = queued.state
        if not store.ledger and store.get(name) is None:
            queued._probe(name)  # A flushed cache: ask the storages.
        owner = leases.new_owner()
        granted = leases.claim(store, name, version, owner, self.policy.lease)
        try:
            return self._run(queued, name, version, owner, granted)
        finally:
            if not store.ledger and granted.claim is Claim.TAKEN:
                leases.release(store, name, version, owner)

    def _run(
        self,
        queued: QueuedStorage,
        name: str,
        version: str,
        owner: str,
        granted: leases.Granted,
    ) -> bool:
        extra = _extra(queued, name)
        if granted.claim is Claim.DONE:
            return True
        if granted.claim is Claim.STALE:
            logger.info("Skipped %r: deleted or saved again since.", name, extra=extra)
            return False
        if granted.claim in (Claim.BUSY, Claim.EARLY):
            why = "another worker holds it" if granted.claim is Claim.BUSY else (
                "its next attempt is not due yet"
            )  # fmt: skip
            logger.info("Stepped aside from %r: %s.", name, why, extra=extra)
            return False
        moving = granted.state
        if moving is None:  # A taken lease always comes with the state.
            return False
        extra["attempt"] = moving.attempts
        limit = self.policy.attempt_limit
        if moving.attempts > limit:
            reason = f"gave up after {limit} attempts"
            return self.fail(queued, name, moving, reason, owner)
        logger.info("Transferring %r (attempt %d).", name, moving.attempts,
                    extra={**extra, "status": Status.TRANSFERRING})  # fmt: skip
        renewal = leases.Renewal(queued.state, name, version, owner, self.policy.lease)
        # What the upload reads: the local retention removes only that copy.
        read = (queued.local, name, local_copy.identity(queued.local, name))
        token = local_copy.uploading.set(read)
        try:
            return self._move(queued, name, version, owner, moving, renewal, extra)
        finally:
            local_copy.uploading.reset(token)

    def _move(
        self,
        queued: QueuedStorage,
        name: str,
        version: str,
        owner: str,
        moving: FileState,
        renewal: leases.Renewal,
        extra: dict[str, Any],
    ) -> bool:
        try:
            with renewal:
                done = self.transfer(
                    name, queued.local, queued.remote,
                    replace=queued.overwrites, content_type=moving.content_type,
                    size=moving.size,
                )  # fmt: skip
        except Exception as exc:
            # The class names the cause: LocalFileMissing, RemoteConflict...
            reason = queued.redact(f"{type(exc).__name__}: {exc}")
            if isinstance(exc, TransferError) and not exc.retryable:
                return self.fail(queued, name, moving, reason, owner)
            if self.deleted(queued, name):
                # A failed upload may have left part of the file behind.
                return self.discard(queued, name, extra)
            return self.retry_later(queued, name, moving, reason, owner)
        if not done:
            reason = "the transfer returned False"
            return self.retry_later(queued, name, moving, reason, owner)
        checksum = getattr(done, "checksum", "")
        done_state = moving.evolve(status=Status.TRANSFERRED, error="")
        uploaded = getattr(done, "size", None)
        if isinstance(uploaded, int) and not isinstance(uploaded, bool):
            # What reached the remote is what size() reports from now on.
            done_state = done_state.evolve(size=uploaded)
        if not queued.state.compare_and_set(
            name, version, done_state, checksum=checksum, owner=owner
        ):
            return self.discard(queued, name, extra)
        if queued.overwrites and not self.recheck(queued, name, checksum):
            return False
        logger.info(
            "Transferred %r.", name, extra={**extra, "status": Status.TRANSFERRED}
        )
        self.after_transfer(queued, name)
        if self.on_transferred is not None:
            self.on_transferred(queued, name, version)
        file_transferred.send(
            self.sender, name=name, local=queued.local, remote=queued.remote,
            storage=queued,
        )  # fmt: skip
        return True

    @staticmethod
    def deleted(queued: QueuedStorage, name: str) -> bool:
        """Return whether *name* was deleted from *queued*."""
        current = queued.state.get(name, durable=True)
        if current is None:
            # Without the ledger a flushed cache knows nothing: not deleted.
            return queued.state.ledger
        return current.is_deleted

    def discard(self, queued: QueuedStorage, name: str, extra: dict[str, Any]) -> bool:
        """Give up on *name*, which changed while its transfer was in flight.

        A file deleted meanwhile must not come back: what the upload wrote to
        the remote is removed.
        """
        if self.deleted(queued, name):
            queued.remote.delete(name)
        elif queued.overwrites:
            self.recheck(queued, name)
        logger.info("Discarded %r: changed while in flight.", name, extra=extra)
        return False

    def recheck(self, queued: QueuedStorage, name: str, checksum: str = "") -> bool:
        """Return whether the remote copy of *name*, if transferred, is the newest.

        With a local storage that replaces files saved again, two versions of
        a file can be in flight at once and the older upload can land last.
        The file is then queued again, under a new version.
        """
        current = queued.state.get(name, durable=True)
        if current is None or not current.is_remote:
            return True
        if remote_matches(name, queued.local, queued.remote, checksum):
            return True
        again = FileState(
            Status.PENDING, secrets.token_hex(8), current.size,
            content_type=current.content_type,
        )  # fmt: skip
        if queued.state.compare_and_set(
            name, current.version, again, only_from=(Status.TRANSFERRED,)
        ):
            logger.warning(
                "An older upload replaced the remote copy of %r; queuing it again.",
                name, extra=_extra(queued, name),
            )  # fmt: skip
            queued.enqueue(name, again.version)
        return False

    @staticmethod
    def gave_way(queued: QueuedStorage, name: str) -> bool:
        """Log that a failed attempt at *name* left its state alone; return False.

        The file was saved again, deleted, or finished by another delivery
        while this attempt ran: its failure is not the file's.
        """
        logger.info(
            "Discarded %r: changed while in flight.", name, extra=_extra(queued, name)
        )
        return False

    def retry_later(
        self,
        queued: QueuedStorage,
        name: str,
        state: FileState,
        reason: str,
        owner: str = "",
    ) -> bool:
        """Schedule another try, or mark the file failed when none is left.

        The time of the next attempt goes to the ledger. A short delay is
        also sent to the broker as a countdown; a longer one waits in the
        ledger, flagged for the dispatcher and ``reconcile``, which send it
        when due: a broker holds an early message only for so long before it
        delivers it again (Redis) or drops the consumer (RabbitMQ).
        """
        if state.attempts > self.policy.retries:
            return self.fail(queued, name, state, reason, owner)
        delay = self.policy.backoff(max(0, state.attempts - 1))
        ledger = queued.state.ledger
        countdown = not ledger or delay <= self.policy.countdown_max
        if not queued.state.compare_and_set(
            name, state.version, state.evolve(status=Status.PENDING, error=reason),
            only_from=(Status.TRANSFERRING,), owner=owner,
            retry_at=timezone.now() + timedelta(seconds=delay),
            outbox=(not countdown) if ledger else None,
        ):  # fmt: skip
            return self.gave_way(queued, name)
        logger.warning(
            "Transfer of %r failed, retrying in %.0f s: %s", name, delay, reason,
            extra=_extra(queued, name, attempt=state.attempts, status=Status.PENDING),
        )  # fmt: skip
        if countdown and not self.send_retry(queued, name, state.version, delay):
            if ledger:  # Not sent: the dispatcher or reconcile sends it when due.
                rows = queued.state._rows().filter(
                    name_hash=name_hash(name), version=state.version,
                    status=Status.PENDING,
                )  # fmt: skip
                rows.update(outbox=True)
        return False

    def fail(
        self,
        queued: QueuedStorage,
        name: str,
        state: FileState,
        reason: str,
        owner: str = "",
    ) -> bool:
        """Mark *name* failed for good; it stays served from the local copy."""
        if not queued.state.compare_and_set(
            name, state.version, state.evolve(status=Status.FAILED, error=reason),
            only_from=(Status.TRANSFERRING, Status.PENDING), owner=owner,
        ):  # fmt: skip
            return self.gave_way(queued, name)
        logger.error(
            "Transfer of %r failed for good: %s", name, reason,
            extra=_extra(queued, name, attempt=state.attempts, status=Status.FAILED),
        )  # fmt: skip
        transfer_failed.send(
            self.sender, name=name, storage=queued, error=reason,
            attempts=state.attempts,
        )  # fmt: skip
        return False
