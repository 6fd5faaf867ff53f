"""Per-file state: where a file is served from, kept in the cache and the ledger.

The cache is the fast path for every read. With the ledger on (the default),
the database holds the durable copy: a cache miss costs one indexed query, and
every change is a compare-and-set on the file's version token, so a stale or
duplicated task cannot overwrite a newer state. With the ledger off, the cache
alone holds the state and the storage probes its backends on a miss.

A cache that is flushed or unreachable never fails a save or a read: errors
are logged and treated as misses.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.core.cache import caches
from django.db import IntegrityError, router, transaction
from django.utils import timezone

from . import ledger_access
from .batching import batched
from .cache_writes import set_value
from .conf import settings
from .ledger_sql import UPSERT_COLUMNS, UPSERT_MANY, statements
from .status import FileState, Status

if TYPE_CHECKING:
    from .models import StoredFile

logger = logging.getLogger("queued_storage")

#: The ledger's date and time columns that statements may change.
TIMESTAMPS = ("updated", "transferred", "lease_expires", "next_attempt")

__all__ = ["LEDGER_CACHE_TIMEOUT", "FileState", "StateStore", "Status", "name_hash"]

_DELETED = str(Status.DELETED)

#: Seconds a state entry lives in the cache by default when the ledger is on:
#: a day. An expired entry costs one indexed query on the next read.
LEDGER_CACHE_TIMEOUT = 24 * 3600


def name_hash(name: str) -> str:
    """Return the hex SHA-256 of *name*, the ledger's index on names."""
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()


@functools.cache
def _model() -> type[StoredFile]:
    """Return the ledger's model, imported on first use (not at import)."""
    from .models import StoredFile

    return StoredFile


def _stamped(state: FileState, now: datetime) -> FileState:
    """Return *state* with its transfer time: *now* if it just became remote."""
    if not state.is_remote:
        return state.evolve(transferred_at=None) if state.transferred_at else state
    return state if state.transferred_at else state.evolve(transferred_at=now)


class StateStore:
    """Read and change the states of one queued storage's files."""

    def __init__(self, reference: str, prefix: str) -> None:
        self.reference = reference
        self.prefix = prefix

    # Keys and back ends -------------------------------------------------

    def key(self, name: str) -> str:
        """Return the cache key of *name*.

        A hash keeps every key short and free of characters that memcached
        refuses, and folds in the storage reference so that two queued
        storages never share a key for the same name.
        """
        digest = hashlib.sha256(
            f"{self.reference}\x00{name}".encode("utf-8", "surrogatepass")
        ).hexdigest()
        return f"{self.prefix}:{digest}"

    @property
    def cache(self) -> Any:
        return caches[settings.QUEUED_STORAGE_CACHE]

    @property
    def ledger(self) -> bool:
        return bool(settings.QUEUED_STORAGE_LEDGER)

    @property
    def model(self) -> type[StoredFile]:
        return _model()

    @property
    def db(self) -> str:
        """Return the database alias that holds the ledger."""
        return router.db_for_write(self.model) or "default"

    @property
    def timeout(self) -> float | None:
        """Return the seconds a state entry lives in the cache, ``None`` for good.

        :setting:`QUEUED_STORAGE_CACHE_TIMEOUT` when set; otherwise
        :data:`LEDGER_CACHE_TIMEOUT` with the ledger, which keeps the durable
        copy, and no expiry without it, where the cache is the only copy.
        """
        timeout = settings.QUEUED_STORAGE_CACHE_TIMEOUT
        if timeout is None and self.ledger:
            return LEDGER_CACHE_TIMEOUT
        return timeout

    def _rows(self) -> Any:
        return self.model.objects.using(self.db).filter(storage=self.reference)

    # Cache access that never raises ---------------------------------------

    def _cache_get(self, key: str) -> Any:
        try:
            return self.cache.get(key)
        except Exception as exc:
            logger.warning("Cache unavailable, reading around it: %s", exc)
            return None

    def _cache_get_many(self, keys: list[str]) -> dict[str, Any]:
        try:
            return self.cache.get_many(keys)
        except Exception as exc:
            logger.warning("Cache unavailable, reading around it: %s", exc)
            return {}

    def _cache_set_many(self, mapping: dict[str, FileState]) -> None:
        if not mapping:
            return
        values = {key: state.to_cache() for key, state in mapping.items()}
        timeout = self.timeout
        try:
            if len(values) == 1:
                # One key is one plain SET; set_many() wraps it in a
                # transaction (Redis) or a batch that costs more.
                set_value(self.cache, *values.popitem(), timeout=timeout)
            else:
                self.cache.set_many(values, timeout=timeout)
        except Exception as exc:
            logger.warning("Cache unavailable, state not cached: %s", exc)

    def remember(self, name: str, state: FileState) -> None:
        """Put *state* in the cache only (a read found it out)."""
        self._cache_set_many({self.key(name): state})

    # Reads ----------------------------------------------------------------

    def get(self, name: str, *, durable: bool = False) -> FileState | None:
        """Return the state of *name*, or ``None`` when nothing is recorded.

        With *durable* and the ledger on, the ledger answers and the cache is
        not asked: a worker decides from the durable copy, which only the
        project's own processes write, never from a cache entry that another
        client of the cache server could have put there.
        """
        if durable and self.ledger:
            row = ledger_access.run(self._row_of, name, using=self.db)
            return None if row is None else FileState.from_row(row)
        return self.get_many([name])[name]

    def get_many(self, names: Iterable[str]) -> dict[str, FileState | None]:
        """Return the states of *names* with one cache round trip per batch.

        Names the cache misses are looked up in the ledger in one query and
        put back in the cache together. A long list is handled a batch of
        :data:`~queued_storage.batching.BATCH_SIZE` names at a time, which
        keeps each query under the database's limit on parameters.
        """
        found: dict[str, FileState | None] = {}
        for batch in batched(names):
            found.update(self._get_batch(batch))
        return found

    def _get_batch(self, names: list[str]) -> dict[str, FileState | None]:
        keys = {name: self.key(name) for name in names}
        cached = self._cache_get_many(list(keys.values()))
        found: dict[str, FileState | None] = {}
        missing: list[str] = []
        for name, key in keys.items():
            state = FileState.from_cache(cached[key]) if key in cached else None
            found[name] = state
            if state is None:
                missing.append(name)
        if missing and self.ledger:
            hashes = {name_hash(name): name for name in missing}
            refill: dict[str, FileState] = {}
            for row in ledger_access.run(self._rows_of, list(hashes), using=self.db):
                name = hashes[row.name_hash]
                found[name] = refill[keys[name]] = FileState.from_row(row)
            self._cache_set_many(refill)
        return found

    def _row_of(self, name: str) -> StoredFile | None:
        return self._rows().filter(name_hash=name_hash(name)).first()

    def _rows_of(self, hashes: list[str]) -> list[StoredFile]:
        return list(self._rows().filter(name_hash__in=hashes))

    def in_use(self, name: str) -> bool:
        """Return whether a file that is not deleted is recorded as *name*.

        With the ledger on, one indexed query answers: every recorded state
        is in the ledger, and a name not yet used, the common case, misses
        the cache and would cost that query after a cache round trip. Without
        the ledger, the cache answers.
        """
        if self.ledger:
            return ledger_access.run(self._in_ledger, name, using=self.db)
        state = FileState.from_cache(self._cache_get(self.key(name)))
        return state is not None and not state.is_deleted

    def _in_ledger(self, name: str) -> bool:
        digest = name_hash(name)
        sql = statements(self.db)
        if sql is not None:
            return sql.in_use(self.reference, digest, Status.DELETED)
        rows = self._rows().filter(name_hash=digest)
        return bool(rows.exclude(status=Status.DELETED).exists())

    # Writes ---------------------------------------------------------------

    def record(
        self,
        name: str,
        state: FileState,
        *,
        host: str = "",
        outbox: bool = False,
        exclusive: bool = False,
    ) -> bool:
        """Record *state* for *name*, replacing whatever was there.

        The ledger row is written in the caller's transaction; the cache is
        updated at once. With *outbox*, the row also asks the dispatcher to
        send the transfer message of this version. With *exclusive*, the
        ledger row of a file that is not deleted is left alone: nothing is
        recorded and ``False`` returned (another save, maybe on another
        host, holds the name). Without the ledger, *exclusive* changes
        nothing.
        """
        now = timezone.now()
        state = _stamped(state, now)
        if self.ledger:
            db = self.db
            written = ledger_access.run(
                self._upsert, name, state, host, outbox, exclusive, now, db, using=db
            )
            if not written:
                return False
        self.remember(name, state)
        return True

    def record_many(
        self,
        states: dict[str, FileState],
        *,
        exclusive: bool = False,
        new_only: bool = False,
    ) -> set[str]:
        """Record each of *states* (name to state) as :meth:`record` does.

        The ledger gets one statement per :data:`~.ledger_sql.UPSERT_MANY`
        rows where the database can say which rows it wrote, else one
        transaction of a statement per row; the cache gets one write.
        Return the names recorded: with *exclusive*, those whose ledger row
        was free (missing, or of a deleted file); with *new_only*, those
        that had no ledger row at all.
        """
        now = timezone.now()
        stamped = {name: _stamped(state, now) for name, state in states.items()}
        written = set(stamped)
        if self.ledger and stamped:
            # No row has an empty status: with it, no existing row is taken.
            only_over = "" if new_only else str(Status.DELETED) if exclusive else None
            written = ledger_access.run(
                self._upsert_many, stamped, only_over, now, using=self.db
            )
        self._cache_set_many(
            {self.key(name): stamped[name] for name in stamped if name in written}
        )
        return written

    def _upsert_many(
        self, states: dict[str, FileState], only_over: str | None, now: datetime
    ) -> set[str]:
        # All or nothing; inside the caller's transaction, a savepoint that a
        # refused statement rolls back to, leaving that transaction usable.
        with transaction.atomic(using=self.db):
            return self._write_many(states, only_over, now)

    def _write_many(
        self, states: dict[str, FileState], only_over: str | None, now: datetime
    ) -> set[str]:
        sql = statements(self.db)
        written: set[str] = set()
        if sql is None:
            for name, state in states.items():
                values = self._values(name, state, "", False, name_hash(name))
                if self._orm_claim(values, only_over):
                    written.add(name)
            return written
        stamp = sql.timestamp(now)
        for batch in batched(states, UPSERT_MANY):
            hashes = {name_hash(name): name for name in batch}
            rows = [
                {
                    **self._values(name, states[name], "", False, digest),
                    "created": stamp,
                    "updated": stamp,
                    "transferred": sql.timestamp(states[name].transferred_at),
                }
                for digest, name in hashes.items()
            ]
            found = sql.upsert_many(rows, only_over)
            if found is None:  # No RETURNING: a statement per row.
                found = {row["name_hash"] for row in rows if sql.upsert(row, only_over)}
            written.update(hashes[digest] for digest in found)
        return written

    def _orm_claim(self, values: dict[str, Any], only_over: str | None) -> bool:
        """Write the row of *values* as ``upsert(values, only_over)`` does."""
        if only_over is None or only_over == Status.DELETED:
            return self._orm_upsert(values, exclusive=only_over is not None)
        try:
            with transaction.atomic(using=self.db):
                self.model.objects.using(self.db).create(**values)
            return True
        except IntegrityError:
            return False

    def _values(
        self, name: str, state: FileState, host: str, outbox: bool, digest: str
    ) -> dict[str, Any]:
        """Return the ledger row of *name* in *state*, but its timestamps."""
        return {
            "storage": self.reference, "name": name, "name_hash": digest,
            "status": str(state.status), "version": state.version,
            "size": state.size, "attempts": state.attempts, "last_error": state.error,
            "content_type": state.content_type, "host": host, "checksum": "",
            "transferred": state.transferred_at, "outbox": outbox,
            "lease_owner": "", "lease_expires": None, "next_attempt": None,
            "local_deleted": None,
        }  # fmt: skip

    def _upsert(
        self,
        name: str,
        state: FileState,
        host: str,
        outbox: bool,
        exclusive: bool,
        now: datetime,
        db: str,
    ) -> bool:
        values = self._values(name, state, host, outbox, name_hash(name))
        sql = statements(db)
        if sql is None:
            return self._orm_upsert(values, exclusive)
        values["created"] = values["updated"] = sql.timestamp(now)
        values["transferred"] = sql.timestamp(state.transferred_at)
        return sql.upsert(values, only_over=_DELETED if exclusive else None)

    def _orm_upsert(self, values: dict[str, Any], exclusive: bool) -> bool:
        """Write the row of *values* through the ORM; return whether it was."""
        model = self.model
        if not exclusive:
            model.objects.using(self.db).bulk_create(
                [model(**values)],
                update_conflicts=True,
                unique_fields=["storage", "name_hash"],
                update_fields=list(UPSERT_COLUMNS),
            )
            return True
        try:
            with transaction.atomic(using=self.db):
                model.objects.using(self.db).create(**values)
            return True
        except IntegrityError:
            pass  # A row holds the name: take it only if its file was deleted.
        rows = self._rows().filter(name_hash=values["name_hash"], status=Status.DELETED)
        changes = {
            column: values[column] for column in UPSERT_COLUMNS if column in values
        }
        return bool(rows.update(**changes, updated=timezone.now()))

    def compare_and_set(
        self,
        name: str,
        version: str,
        new: FileState,
        *,
        checksum: str = "",
        only_from: tuple[str, ...] = (),
        owner: str = "",
        retry_at: datetime | None = None,
        outbox: bool | None = None,
    ) -> bool:
        """Set *new* as the state of *name* if its version is still *version*.

        With *only_from*, the current status must also be one of those. With
        *owner*, the ledger row must be leased to *owner*, and the lease is
        released. *retry_at* records when the next attempt is due and
        *outbox* whether the dispatcher is to send its message.
        Return ``False``, and change nothing, when the file was deleted or
        saved again since, or has moved on: the caller holds a stale view.
        """
        new = _stamped(new, timezone.now())
        if self.ledger:
            extra: dict[str, Any] = {"next_attempt": retry_at}
            if outbox is not None:
                extra["outbox"] = outbox
            if owner:
                extra.update(lease_owner="", lease_expires=None)
            fence = {"lease_owner": owner} if owner else {}
            changed = ledger_access.run(
                self._update_row, name, version, new, checksum, only_from, extra,
                fence, using=self.db,
            )  # fmt: skip
            if not changed:
                return False
        else:
            current = FileState.from_cache(self._cache_get(self.key(name)))
            # Without a ledger a flushed cache cannot tell a stale task from
            # a current one (a state found by probing has no version); a
            # tombstone, another version or a later status can.
            if current is not None and (
                current.is_deleted
                or (current.version and current.version != version)
                or (only_from and current.status not in only_from)
            ):
                return False
        self.remember(name, new)
        return True

    def _update_row(
        self,
        name: str,
        version: str,
        new: FileState,
        checksum: str,
        only_from: tuple[str, ...],
        extra: dict[str, Any] | None = None,
        fence: dict[str, Any] | None = None,
    ) -> int:
        """Apply *new* to the ledger row of *name* at *version*; return the count.

        One statement, atomic by itself: no transaction is opened around it.
        *extra* holds more columns to set, *fence* more columns to match.
        """
        now = timezone.now()
        changes: dict[str, Any] = {
            "status": str(new.status),
            "version": new.version,
            "attempts": new.attempts,
            "last_error": new.error,
            "updated": now,
            **(extra or {}),
        }
        if new.size is not None:
            changes["size"] = new.size
        if checksum:
            changes["checksum"] = checksum
        if new.status == Status.TRANSFERRED:
            changes["transferred"] = new.transferred_at or now
        digest = name_hash(name)
        sql = statements(self.db)
        if sql is not None:
            for column in TIMESTAMPS:
                if column in changes:
                    changes[column] = sql.timestamp(changes[column])
            where = {"storage": self.reference, "name_hash": digest, "version": version}
            where.update(fence or {})
            statuses = tuple(str(status) for status in only_from)
            return sql.update(changes, where, str(Status.DELETED), statuses)
        rows = self._rows().filter(name_hash=digest, version=version, **(fence or {}))
        rows = rows.exclude(status=Status.DELETED)
        if only_from:
            rows = rows.filter(status__in=only_from)
        return int(rows.update(**changes))

    def host_of(self, name: str) -> str:
        """Return the host that wrote *name*, as the ledger recorded it."""
        if not self.ledger:
            return ""
        return ledger_access.run(self._host_in_ledger, name, using=self.db)

    def _host_in_ledger(self, name: str) -> str:
        hosts = self._rows().filter(name_hash=name_hash(name)).values_list("host")
        return next((host for (host,) in hosts), "")

    def evict(self, names: Iterable[str]) -> None:
        """Remove the cache entries of *names*; the ledger is left alone."""
        keys = [self.key(name) for name in names]
        if not keys:
            return
        try:
            self.cache.delete_many(keys)
        except Exception as exc:
            logger.warning("Cache unavailable, entries not removed: %s", exc)

    def drop(self, name: str) -> None:
        """Remove whatever is recorded for *name*, leaving no deleted mark."""
        if self.ledger:
            ledger_access.run(self._delete_row, name, using=self.db)
        try:
            self.cache.delete(self.key(name))
        except Exception as exc:
            logger.warning("Cache unavailable, state not removed: %s", exc)

    def names_below(self, directory: str) -> list[str]:
        """Return the names recorded below *directory* for files not deleted.

        Only the ledger can list names; without it the list is empty.
        """
        if not self.ledger:
            return []
        return ledger_access.run(self._names_below, directory, using=self.db)

    def _names_below(self, directory: str) -> list[str]:
        rows = self._rows().filter(name__startswith=f"{directory}/")
        return list(rows.exclude(status=Status.DELETED).values_list("name", flat=True))

    def _delete_row(self, name: str) -> None:
        self._rows().filter(name_hash=name_hash(name)).delete()

    def forget(self, name: str) -> None:
        """Mark *name* deleted, so that a task still in flight gives up."""
        tombstone = FileState(Status.DELETED)
        if self.ledger:
            ledger_access.run(self._mark_deleted, name, using=self.db)
        self.remember(name, tombstone)

    def _mark_deleted(self, name: str) -> None:
        self._rows().filter(name_hash=name_hash(name)).update(
            status=Status.DELETED, version="", updated=timezone.now()
        )
