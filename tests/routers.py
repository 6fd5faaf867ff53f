"""The database router of the test suite: a second database, "other".

Only ``testapp.Archive`` lives there, and it lives nowhere else: the tests of
the orphans command check that a file referenced only by a row of another
database is kept. Everything else stays on "default".
"""

from __future__ import annotations

from typing import Any

OTHER = "other"
ROUTED = ("testapp", "archive")


def _routed(model: Any) -> bool:
    return (model._meta.app_label, model._meta.model_name) == ROUTED


class OtherDatabaseRouter:
    """Send ``testapp.Archive`` to the database "other", and only it."""

    def db_for_read(self, model: Any, **hints: Any) -> str | None:
        return OTHER if _routed(model) else None

    def db_for_write(self, model: Any, **hints: Any) -> str | None:
        return OTHER if _routed(model) else None

    def allow_migrate(
        self, db: str, app_label: str, model_name: str | None = None, **hints: Any
    ) -> bool | None:
        if (app_label, model_name) == ROUTED:
            return db == OTHER
        if db == OTHER:
            return False
        return None


class NoMigrationsForAlbumRouter(OtherDatabaseRouter):
    """Also keep migrations from ``testapp.Album``, as for a legacy table.

    Its rows are read from "default", where its table already is.
    """

    def allow_migrate(
        self, db: str, app_label: str, model_name: str | None = None, **hints: Any
    ) -> bool | None:
        if (app_label, model_name) == ("testapp", "album"):
            return False
        return super().allow_migrate(db, app_label, model_name, **hints)
