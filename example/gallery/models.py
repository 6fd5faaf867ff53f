"""The gallery's one model: an uploaded file kept by QueuedStorage."""

import posixpath

from django.core.files.storage import Storage, storages
from django.db import models
from django.utils import timezone

from queued_storage.fields import QueuedFileField

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".svg", ".avif"}


def queued_storage() -> Storage:
    """Return the ``queued`` storage of ``settings.STORAGES``.

    A callable rather than the storage itself, so that migrations refer to
    this function and settings can change the storage without a migration.
    """
    return storages["queued"]


class Upload(models.Model):
    file = QueuedFileField(storage=queued_storage, upload_to="uploads/%Y/%m/%d")
    uploaded = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-uploaded", "-pk"]

    def __str__(self) -> str:
        return self.basename

    @property
    def basename(self) -> str:
        return posixpath.basename(self.file.name)

    @property
    def is_image(self) -> bool:
        return posixpath.splitext(self.file.name)[1].lower() in IMAGE_EXTENSIONS
