"""The statuses a file goes through."""

from django.db import models


class Status(models.TextChoices):
    """Where a file stands on its way from the local to the remote storage."""

    PENDING = "pending"
    TRANSFERRING = "transferring"
    TRANSFERRED = "transferred"
    FAILED = "failed"
    DELETED = "deleted"
