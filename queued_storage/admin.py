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
from .redaction import redact_all
from .status import Status

#: The most rows the verify action checks at once: each costs requests to the
#: remote, made while the admin's request waits.
VERIFY_LIMIT = 100


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

    # The last error is shown redacted, in place of the field itself.
    exclude = ("last_error",)

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
        fields = [f.name for f in StoredFile._meta.fields if f.name != "last_error"]
        return [*fields, "error"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # A row removed by hand would make a pending file look unknown, and a
        # deleted one lose the tombstone that stops its transfer in flight.
        return False

    def has_operate_permission(self, request: HttpRequest) -> bool:
        """Return whether the user may run the actions: the change permission.

        The rows stay read-only; the permission to change stored files is
        what allows queuing transfers and asking the remote about copies.
        """
        opts = self.opts
        codename = f"{opts.app_label}.change_{opts.model_name}"
        return bool(request.user.has_perm(codename))

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
        return Truncator(redact_all(obj.last_error)).chars(80)

    @admin.display(description=_("last error"))
    def error(self, obj: StoredFile) -> str:
        return redact_all(obj.last_error)

    @admin.action(
        description=_("Queue the failed transfers of the selected files again"),
        permissions=("operate",),
    )
    def retry_transfers(
        self, request: HttpRequest, queryset: QuerySet[StoredFile]
    ) -> None:
        queued = operations.retry_failed(rows=queryset)
        self.message_user(request, _("Queued %d failed transfers again.") % len(queued))

    @admin.action(
        description=_("Verify the remote copies of the selected files"),
        permissions=("operate",),
    )
    def verify_copies(
        self, request: HttpRequest, queryset: QuerySet[StoredFile]
    ) -> None:
        selected = queryset.count()
        if selected > VERIFY_LIMIT:
            self.message_user(
                request,
                _(
                    "Select at most %(limit)d files to verify, not %(count)d; "
                    "use manage.py queued_storage verify for more."
                )
                % {"limit": VERIFY_LIMIT, "count": selected},
                messages.ERROR,
            )
            return
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
