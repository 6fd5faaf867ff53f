"""Written-out SQL for the ledger statements that every save and transfer runs.

The ORM spends more time building a statement than SQLite or PostgreSQL take
to run it (0.3 to 0.9 ms against tens of microseconds), and a save runs two
of them, a transfer two more. These statements are the same each time, so
they are written once per connection, in the syntax that SQLite (3.24 and
later) and PostgreSQL share, and run through the connection's own cursor: the
caller's transaction, ``DEBUG`` query logging and ``execute_wrapper()`` all
still see them. Other databases use the ORM (:mod:`.state` does so when
:func:`statements` returns ``None``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from django.db import connections

from .status import Status

#: The databases whose syntax the statements below are written in.
VENDORS = frozenset({"sqlite", "postgresql"})

#: Columns an upsert replaces when the row exists; ``created`` stays.
UPSERT_COLUMNS = (
    "name", "status", "version", "size", "attempts", "last_error",
    "content_type", "host", "checksum", "transferred", "updated", "outbox",
    "lease_owner", "lease_expires", "next_attempt", "local_deleted",
)  # fmt: skip


#: The most rows :meth:`Statements.upsert_many` writes in one statement: 19
#: parameters each, under the 999 of SQLite before 3.32.
UPSERT_MANY = 50


class Statements:
    """The hot ledger statements of one database connection."""

    def __init__(self, alias: str) -> None:
        from .models import StoredFile

        self.alias = alias
        self.vendor = connections[alias].vendor
        quote = connections[alias].ops.quote_name
        self.quote = quote
        self._updates: dict[tuple[Any, ...], str] = {}
        self._upserts: dict[tuple[int, bool], str] = {}
        self.table = quote(StoredFile._meta.db_table)
        self.pk_column = StoredFile._meta.pk.column
        self.pk = quote(self.pk_column)
        self.in_use_sql = (
            f"SELECT 1 FROM {self.table} WHERE {quote('storage')} = %s"
            f" AND {quote('name_hash')} = %s AND {quote('status')} <> %s LIMIT 1"
        )
        insert = ("storage", "name_hash", "created", *UPSERT_COLUMNS)
        self.insert_columns = insert
        updates = ", ".join(f"{quote(c)} = EXCLUDED.{quote(c)}" for c in UPSERT_COLUMNS)
        # Named parameters: Django's SQLite cursor then fills them in with one
        # %-formatting, not a regular expression over the whole statement,
        # which costs as much as SQLite's run of it. PostgreSQL takes them as
        # they are.
        self.upsert_sql = (
            f"INSERT INTO {self.table} ({', '.join(quote(c) for c in insert)})"
            f" VALUES ({', '.join(f'%({c})s' for c in insert)})"
            f" ON CONFLICT ({quote('storage')}, {quote('name_hash')})"
            f" DO UPDATE SET {updates}"
        )
        # The same, but a row of a file that is not deleted stays as it is.
        self.claim_sql = (
            f"{self.upsert_sql} WHERE {self.table}.{quote('status')} = %(only_over)s"
        )
        self.returns = connections[alias].features.can_return_rows_from_bulk_insert
        # A worker's lease: the row of a file at the version its message
        # names, due, and leased to nobody (or on an expired lease), becomes
        # the worker's, and its attempt is counted.
        self.lease_sql = (
            f"UPDATE {self.table} SET {quote('status')} = %(moving)s,"
            f" {quote('attempts')} = {quote('attempts')} + 1,"
            f" {quote('lease_owner')} = %(owner)s,"
            f" {quote('lease_expires')} = %(expires)s,"
            f" {quote('next_attempt')} = NULL, {quote('outbox')} = %(no)s,"
            f" {quote('updated')} = %(now)s"
            f" WHERE {quote('storage')} = %(storage)s"
            f" AND {quote('name_hash')} = %(name_hash)s"
            f" AND {quote('version')} = %(version)s"
            f" AND {quote('status')} IN (%(waiting)s, %(moving)s)"
            f" AND ({quote('lease_expires')} IS NULL"
            f" OR {quote('lease_expires')} <= %(now)s)"
            f" AND ({quote('next_attempt')} IS NULL"
            f" OR {quote('next_attempt')} <= %(now)s)"
        )
        self.leased_columns = (
            "status", "version", "size", "attempts", "last_error", "content_type",
        )  # fmt: skip
        self.leased_sql = (
            f"SELECT {', '.join(quote(c) for c in self.leased_columns)}"
            f" FROM {self.table} WHERE {quote('storage')} = %(storage)s"
            f" AND {quote('name_hash')} = %(name_hash)s"
            f" AND {quote('lease_owner')} = %(owner)s"
        )
        # SQLite 3.35 and later and PostgreSQL read the row in the same
        # statement; the feature flag of INSERT tells the same for UPDATE.
        self.lease_returning_sql = None
        if connections[alias].features.can_return_columns_from_insert:
            columns = ", ".join(quote(c) for c in self.leased_columns)
            self.lease_returning_sql = f"{self.lease_sql} RETURNING {columns}"

    def take_outbox(
        self, limit: int, storage: str | None, now: datetime
    ) -> list[tuple[Any, ...]] | None:
        """Clear the outbox flag of up to *limit* due rows; return them.

        One statement claims them, so that two dispatchers never take the
        same row (PostgreSQL's ``SKIP LOCKED`` lets them take others meanwhile).
        Each row comes back as ``(pk, storage, name, version, host, size,
        attempts)``, oldest first. Return ``None`` where the database cannot
        read rows back from an ``UPDATE``.
        """
        if self.lease_returning_sql is None:
            return None
        quote = self.quote
        scope = f" AND {quote('storage')} = %(storage)s" if storage else ""
        waiting = f"{quote('status')} = %(pending)s AND {quote('outbox')} = %(yes)s"
        pick = (
            f"SELECT {self.pk} FROM {self.table} WHERE {waiting}{scope}"
            f" AND ({quote('next_attempt')} IS NULL"
            f" OR {quote('next_attempt')} <= %(now)s)"
            f" ORDER BY {quote('updated')}, {self.pk} LIMIT %(limit)s"
        )
        columns = ", ".join(
            f"{self.table}.{quote(c)}"
            for c in (
                self.pk_column, "storage", "name", "version", "host", "size",
                "attempts",
            )
        )  # fmt: skip
        if self.vendor == "postgresql":
            # PostgreSQL may run a subquery of IN more than once, each run
            # skipping other locked rows: a materialised WITH picks once.
            sql = (
                f"WITH picked AS MATERIALIZED ({pick} FOR UPDATE SKIP LOCKED)"
                f" UPDATE {self.table} SET {quote('outbox')} = %(no)s FROM picked"
                f" WHERE {self.table}.{self.pk} = picked.{self.pk}"
                f" AND {self.table}.{quote('outbox')} = %(yes)s"
                f" RETURNING {columns}, {self.table}.{quote('updated')}"
            )
        else:
            sql = (
                f"UPDATE {self.table} SET {quote('outbox')} = %(no)s"
                f" WHERE {self.pk} IN ({pick}) AND {waiting}"
                f" RETURNING {columns}, {self.table}.{quote('updated')}"
            )
        params = {
            "pending": str(Status.PENDING), "yes": True, "no": False,
            "storage": storage, "now": self.timestamp(now), "limit": limit,
        }  # fmt: skip
        with self._cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        rows.sort(key=lambda row: (row[7], row[0]))
        return [tuple(row[:7]) for row in rows]

    def _cursor(self) -> Any:
        return connections[self.alias].cursor()

    def timestamp(self, value: datetime | None) -> Any:
        """Return *value* as the database stores a ``DateTimeField``."""
        if value is None:
            return None
        return connections[self.alias].ops.adapt_datetimefield_value(value)

    def in_use(self, storage: str, name_hash: str, deleted: str) -> bool:
        """Return whether a row of *name_hash* exists that is not *deleted*."""
        with self._cursor() as cursor:
            cursor.execute(self.in_use_sql, [storage, name_hash, deleted])
            return cursor.fetchone() is not None

    def upsert(self, values: dict[str, Any], only_over: str | None = None) -> bool:
        """Insert the row of *values*, or replace the one with its name.

        With *only_over*, an existing row is replaced only if its status is
        that one. Return whether a row was written.
        """
        params = {column: values[column] for column in self.insert_columns}
        sql = self.upsert_sql
        if only_over is not None:
            sql, params["only_over"] = self.claim_sql, only_over
        with self._cursor() as cursor:
            cursor.execute(sql, params)
            return bool(cursor.rowcount)

    def upsert_many(
        self, rows: list[dict[str, Any]], only_over: str | None = None
    ) -> set[str] | None:
        """Write the *rows* as :meth:`upsert` does, in one statement.

        Return the name hashes of the rows written, or ``None`` when the
        database cannot tell them (no ``RETURNING``): the caller then writes
        the rows one by one with :meth:`upsert`. *rows* must not repeat a name, and
        :data:`UPSERT_MANY` of them at most keep the statement under every
        database's limit on parameters.
        """
        if not self.returns:
            return None
        sql = self._upsert_many_sql(len(rows), only_over is not None)
        params = [row[column] for row in rows for column in self.insert_columns]
        if only_over is not None:
            params.append(only_over)
        with self._cursor() as cursor:
            cursor.execute(sql, params)
            return {digest for (digest,) in cursor.fetchall()}

    def _upsert_many_sql(self, count: int, claim: bool) -> str:
        shape = (count, claim)
        if shape not in self._upserts:
            quote = self.quote
            row = f"({', '.join(['%s'] * len(self.insert_columns))})"
            updates = ", ".join(
                f"{quote(c)} = EXCLUDED.{quote(c)}" for c in UPSERT_COLUMNS
            )
            sql = (
                f"INSERT INTO {self.table}"
                f" ({', '.join(quote(c) for c in self.insert_columns)})"
                f" VALUES {', '.join([row] * count)}"
                f" ON CONFLICT ({quote('storage')}, {quote('name_hash')})"
                f" DO UPDATE SET {updates}"
            )
            if claim:
                sql += f" WHERE {self.table}.{quote('status')} = %s"
            self._upserts[shape] = f"{sql} RETURNING {quote('name_hash')}"
        return self._upserts[shape]

    def lease(self, params: dict[str, Any]) -> tuple[Any, ...] | None:
        """Take the lease that *params* describe; return the row's state or None.

        *params* names the ``storage``, ``name_hash``, ``version``, the new
        ``owner`` and the lease's ``expires``, the time ``now``, and the
        statuses ``waiting`` and ``moving``. The row comes back as the values
        of :attr:`leased_columns`, read in the same statement where the
        database can (``RETURNING``), else right after it.
        """
        params = {**params, "no": False}
        with self._cursor() as cursor:
            if self.lease_returning_sql is not None:
                cursor.execute(self.lease_returning_sql, params)
                return cast("tuple[Any, ...] | None", cursor.fetchone())
            cursor.execute(self.lease_sql, params)
            if not cursor.rowcount:
                return None
            cursor.execute(self.leased_sql, params)
            return cast("tuple[Any, ...] | None", cursor.fetchone())

    def update(
        self,
        changes: dict[str, Any],
        where: dict[str, Any],
        status_not: str,
        status_in: tuple[str, ...] = (),
    ) -> int:
        """Apply *changes* to the rows matching *where*; return how many.

        Rows whose status is *status_not* are left alone, and with
        *status_in*, so are rows whose status is not one of those.
        """
        sql = self._update_sql(tuple(changes), tuple(where), len(status_in))
        params = [*changes.values(), *where.values(), status_not, *status_in]
        with self._cursor() as cursor:
            cursor.execute(sql, params)
            return int(cursor.rowcount)

    def _update_sql(
        self, columns: tuple[str, ...], keys: tuple[str, ...], statuses: int
    ) -> str:
        shape = (columns, keys, statuses)
        if shape not in self._updates:
            self._updates[shape] = self._write_update(*shape)
        return self._updates[shape]

    def _write_update(
        self, columns: tuple[str, ...], keys: tuple[str, ...], statuses: int
    ) -> str:
        quote = self.quote
        sets = ", ".join(f"{quote(c)} = %s" for c in columns)
        conditions = [f"{quote(k)} = %s" for k in keys]
        conditions.append(f"{quote('status')} <> %s")
        if statuses:
            conditions.append(f"{quote('status')} IN ({', '.join(['%s'] * statuses)})")
        return f"UPDATE {self.table} SET {sets} WHERE {' AND '.join(conditions)}"


_statements: dict[tuple[str, str], Statements] = {}


def statements(alias: str) -> Statements | None:
    """Return the statements of database *alias*, or ``None`` to use the ORM."""
    vendor = connections[alias].vendor
    if vendor not in VENDORS:
        return None
    found = _statements.get((alias, vendor))
    if found is None:
        found = _statements[alias, vendor] = Statements(alias)
    return found
