"""The ledger in Django's admin: see every file's state, retry, verify."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.utils import timezone
from django.utils.text import Truncator
from django.utils.timesince import timesince
from django.utils.translation import gettext_lazy as _

from . import operations, orphans, registry
from .exceptions import UnknownStorage
from .models import StoredFile


@admin.register(StoredFile)
class StoredFileAdmin(admin.ModelAdmin):
    list_display = (
        "name", "storage", "status", "age", "host", "attempts", "short_error",
    )  # fmt: skip
    list_filter = ("status", "storage", "outbox")
    search_fields = ("name",)
    ordering = ("-updated",)
    actions = ("retry_transfers", "verify_copies")
    list_per_page = 100

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view(self.orphans_view)
        name = f"{self.opts.app_label}_{self.opts.model_name}_orphans"
        return [path("orphans/", view, name=name), *super().get_urls()]

    def orphans_view(self, request: HttpRequest) -> HttpResponse:
        """Show how many files of each queued storage no model row references.

        A dry run over the whole ledger: nothing is deleted from here.
        """
        if not self.has_view_permission(request):
            from django.core.exceptions import PermissionDenied

            raise PermissionDenied
        rows: list[dict[str, Any]] = []
        for reference, storage in sorted(operations.known_storages().items()):
            try:
                report = orphans.run(storage, keep_names=False)
            except ValueError as exc:
                rows.append({"reference": reference, "skipped": str(exc)})
                continue
            rows.append({
                "reference": reference, "scanned": report.scanned,
                "found": report.found, "bytes": report.bytes,
            })  # fmt: skip
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("Orphaned files"),
            "rows": rows,
            "grace_hours": int(orphans.DEFAULT_GRACE.total_seconds() // 3600),
        }
        return TemplateResponse(
            request, "admin/queued_storage/storedfile/orphans.html", context
        )

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
        for reference in queryset.values_list("storage", flat=True).distinct():
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
