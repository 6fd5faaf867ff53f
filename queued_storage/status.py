"""The statuses a file goes through."""

from django.db import models
from django.utils.translation import gettext_lazy as _


class Status(models.TextChoices):
    """Where a file stands on its way from the local to the remote storage."""

    PENDING = "pending", _("pending")
    TRANSFERRING = "transferring", _("transferring")
    TRANSFERRED = "transferred", _("transferred")
    FAILED = "failed", _("failed")
    DELETED = "deleted", _("deleted")
