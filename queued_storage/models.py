"""The ledger: a durable record of every file a queued storage holds."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

from .status import Status


class StoredFile(models.Model):
    """One file of one queued storage, and the state of its transfer.

    Rows are looked up by ``(storage, name_hash)``: the hash keeps the unique
    index small enough for every database (MySQL cannot index 1,024
    characters of utf8mb4), while ``name`` keeps the name itself.
    """

    storage = models.CharField(_("storage"), max_length=200)
    name = models.CharField(_("name"), max_length=1024)
    name_hash = models.CharField(_("name hash"), max_length=64, editable=False)
    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.PENDING
    )
    version = models.CharField(_("version"), max_length=32)
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    last_error = models.TextField(_("last error"), blank=True, default="")
    size = models.BigIntegerField(_("size"), null=True, blank=True)
    checksum = models.CharField(_("checksum"), max_length=80, blank=True, default="")
    content_type = models.CharField(
        _("content type"), max_length=255, blank=True, default=""
    )
    host = models.CharField(_("host"), max_length=255, blank=True, default="")
    created = models.DateTimeField(_("created"), auto_now_add=True)
    updated = models.DateTimeField(_("updated"), auto_now=True)
    transferred = models.DateTimeField(_("transferred"), null=True, blank=True)
    #: The transfer message of this version is still to be sent, by the
    #: dispatcher (``QUEUED_STORAGE_OUTBOX``).
    outbox = models.BooleanField(_("in the outbox"), default=False)
    #: The worker delivery that holds the transfer of this version, and until
    #: when; renewed while the upload runs. A lease that has expired lost its
    #: worker, and the next delivery (or ``reconcile``) takes over.
    lease_owner = models.CharField(
        _("lease owner"), max_length=255, blank=True, default=""
    )
    lease_expires = models.DateTimeField(_("lease expires"), null=True, blank=True)
    #: When the next attempt is due, after a failed one; no delivery starts
    #: an upload of this version before then.
    next_attempt = models.DateTimeField(_("next attempt"), null=True, blank=True)
    #: When the local copy of a transferred file was removed to free the
    #: local storage (``local_retention``); empty while it is still there.
    local_deleted = models.DateTimeField(_("local copy removed"), null=True, blank=True)

    class Meta:
        verbose_name = _("stored file")
        verbose_name_plural = _("stored files")
        constraints = [
            models.UniqueConstraint(
                fields=["storage", "name_hash"], name="queued_storage_file_unique"
            )
        ]
        indexes = [
            # Also the dispatchers' look at the outbox, several times a
            # second from every worker node: pending rows, oldest first.
            models.Index(fields=["status", "updated"], name="queued_storage_status"),
            # Pages of one storage's rows, by key (orphans) and by transfer
            # time (the local retention sweep), without sorting the table.
            models.Index(fields=["storage", "id"], name="queued_storage_pages"),
            models.Index(
                fields=["storage", "transferred"], name="queued_storage_transferred"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"
