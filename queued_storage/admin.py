"""The ledger in Django's admin: see every file's state, retry, verify."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.text import Truncator
from django.utils.timesince import timesince
from django.utils.translation import gettext_lazy as _

from . import operations, registry
from .exceptions import UnknownStorage
from .models import StoredFile
from .status import Status


class LeaseFilter(admin.SimpleListFilter):
    """Pick out the transfers whose worker's lease is live or has expired."""

    title = _("lease")
    parameter_name = "lease"

    def lookups(self, request: HttpRequest, model_admin: Any) -> Any:
        return (("live", _("live")), ("expired", _("expired: worker lost")))

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> Any:
        now = timezone.now()
        rows = queryset.filter(status=Status.TRANSFERRING)
        if self.value() == "live":
            return rows.filter(lease_expires__gt=now)
        if self.value() == "expired":
            return rows.filter(lease_expires__lte=now)
        return queryset


@admin.register(StoredFile)
class StoredFileAdmin(admin.ModelAdmin):
    list_display = (
        "name", "storage", "status", "lease", "age", "host", "attempts",
        "short_error",
    )  # fmt: skip
    list_filter = ("status", LeaseFilter, "storage", "outbox")
    search_fields = ("name",)
    ordering = ("-updated",)
    actions = ("retry_transfers", "verify_copies")
    list_per_page = 100

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # The ledger is written by the storage and the workers only.
        return [field.name for field in StoredFile._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description=_("age"), ordering="created")
    def age(self, obj: StoredFile) -> str:
        return timesince(obj.created, timezone.now())

    @admin.display(description=_("lease"), ordering="lease_expires")
    def lease(self, obj: StoredFile) -> str:
        if obj.status != Status.TRANSFERRING or obj.lease_expires is None:
            return ""
        now = timezone.now()
        if obj.lease_expires <= now:
            return str(_("expired %s ago: worker lost")) % timesince(
                obj.lease_expires, now
            )
        return str(_("live for %s")) % timesince(now, obj.lease_expires)

    @admin.display(description=_("last error"))
    def short_error(self, obj: StoredFile) -> str:
        return Truncator(obj.last_error).chars(80)

    @admin.action(
        description=_("Queue the failed transfers of the selected files again")
    )
    def retry_transfers(
        self, request: HttpRequest, queryset: QuerySet[StoredFile]
    ) -> None:
        queued = operations.retry_failed(rows=queryset)
        self.message_user(request, _("Queued %d failed transfers again.") % len(queued))

    @admin.action(description=_("Verify the remote copies of the selected files"))
    def verify_copies(
        self, request: HttpRequest, queryset: QuerySet[StoredFile]
    ) -> None:
        problems = []
        for reference in sorted(set(queryset.values_list("storage", flat=True))):
            try:
                storage = registry.resolve(reference)
            except UnknownStorage as exc:
                self.message_user(request, str(exc), messages.ERROR)
                continue
            names = list(
                queryset.filter(storage=reference).values_list("name", flat=True)
            )
            problems += operations.verify(storage, names)
        for problem in problems:
            self.message_user(
                request, f"{problem.name}: {problem.problem}", messages.ERROR
            )
        if not problems:
            self.message_user(request, _("All transferred copies match."))
