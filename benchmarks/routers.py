"""Route the ledger to the database the running benchmark measures."""

from __future__ import annotations

from typing import Any


class LedgerRouter:
    """Send the ledger's queries to ``settings.BENCH_LEDGER_DB``, read each time."""

    def _ledger(self, model: Any) -> str | None:
        from django.conf import settings

        if model._meta.app_label == "queued_storage":
            return str(getattr(settings, "BENCH_LEDGER_DB", "default"))
        return None

    def db_for_read(self, model: Any, **hints: Any) -> str | None:
        return self._ledger(model)

    def db_for_write(self, model: Any, **hints: Any) -> str | None:
        return self._ledger(model)

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool:
        return True
