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

import hashlib
import logging
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.core.cache import caches
from django.db import router
from django.utils import timezone

from .conf import settings
from .ledger_sql import UPSERT_COLUMNS, statements
from .status import FileState, Status

if TYPE_CHECKING:
    from .models import StoredFile

logger = logging.getLogger("queued_storage")

__all__ = ["FileState", "StateStore", "Status", "name_hash"]


def name_hash(name: str) -> str:
    """Return the hex SHA-256 of *name*, the ledger's index on names."""
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()


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
        from .models import StoredFile

        return StoredFile

    @property
    def db(self) -> str:
        """Return the database alias that holds the ledger."""
        return router.db_for_write(self.model) or "default"

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
        timeout = settings.QUEUED_STORAGE_CACHE_TIMEOUT
        try:
            if len(values) == 1:
                # One key is one plain SET; set_many() wraps it in a
                # transaction (Redis) or a batch that costs more.
                self.cache.set(*values.popitem(), timeout=timeout)
            else:
                self.cache.set_many(values, timeout=timeout)
        except Exception as exc:
            logger.warning("Cache unavailable, state not cached: %s", exc)

    def remember(self, name: str, state: FileState) -> None:
        """Put *state* in the cache only (a read found it out)."""
        self._cache_set_many({self.key(name): state})

    # Reads ----------------------------------------------------------------

    def get(self, name: str) -> FileState | None:
        """Return the state of *name*, or ``None`` when nothing is recorded."""
        return self.get_many([name])[name]

    def get_many(self, names: Iterable[str]) -> dict[str, FileState | None]:
        """Return the states of *names* with one cache round trip.

        Names the cache misses are looked up in the ledger in one query and
        put back in the cache together.
        """
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
            for row in self._rows().filter(name_hash__in=list(hashes)):
                name = hashes[row.name_hash]
                found[name] = refill[keys[name]] = FileState.from_row(row)
            self._cache_set_many(refill)
        return found

    def in_use(self, name: str) -> bool:
        """Return whether a file that is not deleted is recorded as *name*.

        With the ledger on, one indexed query answers: every recorded state
        is in the ledger, and a name not yet used, the common case, misses
        the cache and would cost that query after a cache round trip. Without
        the ledger, the cache answers.
        """
        if self.ledger:
            digest = name_hash(name)
            sql = statements(self.db)
            if sql is not None:
                return sql.in_use(self.reference, digest, Status.DELETED)
            rows = self._rows().filter(name_hash=digest)
            return bool(rows.exclude(status=Status.DELETED).exists())
        state = FileState.from_cache(self._cache_get(self.key(name)))
        return state is not None and not state.is_deleted

    # Writes ---------------------------------------------------------------

    def record(
        self, name: str, state: FileState, *, host: str = "", outbox: bool = False
    ) -> None:
        """Record *state* for *name*, replacing whatever was there.

        The ledger row is written in the caller's transaction; the cache is
        updated at once. With *outbox*, the row also asks the dispatcher to
        send the transfer message of this version.
        """
        now = timezone.now()
        state = _stamped(state, now)
        if self.ledger:
            self._upsert(name, state, host, outbox, now)
        self.remember(name, state)

    def _upsert(
        self, name: str, state: FileState, host: str, outbox: bool, now: datetime
    ) -> None:
        values: dict[str, Any] = {
            "storage": self.reference, "name": name, "name_hash": name_hash(name),
            "status": str(state.status), "version": state.version,
            "size": state.size, "attempts": state.attempts, "last_error": state.error,
            "content_type": state.content_type, "host": host, "checksum": "",
            "transferred": state.transferred_at, "outbox": outbox,
            "local_deleted": None,
        }  # fmt: skip
        sql = statements(self.db)
        if sql is None:
            self.model.objects.using(self.db).bulk_create(
                [self.model(**values)],
                update_conflicts=True,
                unique_fields=["storage", "name_hash"],
                update_fields=list(UPSERT_COLUMNS),
            )
            return
        stamp = sql.timestamp(now)
        sql.upsert({
            **values, "created": stamp, "updated": stamp,
            "transferred": sql.timestamp(state.transferred_at),
        })  # fmt: skip

    def compare_and_set(
        self,
        name: str,
        version: str,
        new: FileState,
        *,
        checksum: str = "",
        only_from: tuple[str, ...] = (),
    ) -> bool:
        """Set *new* as the state of *name* if its version is still *version*.

        With *only_from*, the current status must also be one of those.
        Return ``False``, and change nothing, when the file was deleted or
        saved again since, or has moved on: the caller holds a stale view.
        """
        new = _stamped(new, timezone.now())
        if self.ledger:
            if not self._update_row(name, version, new, checksum, only_from):
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
    ) -> int:
        """Apply *new* to the ledger row of *name* at *version*; return the count.

        One statement, atomic by itself: no transaction is opened around it.
        """
        now = timezone.now()
        changes: dict[str, Any] = {
            "status": str(new.status),
            "version": new.version,
            "attempts": new.attempts,
            "last_error": new.error,
            "updated": now,
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
            for column in ("updated", "transferred"):
                if column in changes:
                    changes[column] = sql.timestamp(changes[column])
            where = {"storage": self.reference, "name_hash": digest, "version": version}
            statuses = tuple(str(status) for status in only_from)
            return sql.update(changes, where, str(Status.DELETED), statuses)
        rows = self._rows().filter(name_hash=digest, version=version)
        rows = rows.exclude(status=Status.DELETED)
        if only_from:
            rows = rows.filter(status__in=only_from)
        return int(rows.update(**changes))

    def host_of(self, name: str) -> str:
        """Return the host that wrote *name*, as the ledger recorded it."""
        if not self.ledger:
            return ""
        hosts = self._rows().filter(name_hash=name_hash(name)).values_list("host")
        return next((host for (host,) in hosts), "")

    def forget(self, name: str) -> None:
        """Mark *name* deleted, so that a task still in flight gives up."""
        tombstone = FileState(Status.DELETED)
        if self.ledger:
            self._rows().filter(name_hash=name_hash(name)).update(
                status=Status.DELETED, version="", updated=timezone.now()
            )
        self.remember(name, tombstone)
