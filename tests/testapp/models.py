"""Models whose fields use queued storages, as a project would declare them."""

from django.conf import settings
from django.db import models

from queued_storage.backends import QueuedS3Storage, QueuedStorage
from queued_storage.fields import QueuedFileField

FS = "django.core.files.storage.FileSystemStorage"

s3_storage = QueuedS3Storage(reference="s3")
s3_delete_storage = QueuedS3Storage(
    task="queued_storage.tasks.TransferAndDelete", reference="s3-delete"
)
s3_delayed_storage = QueuedS3Storage(delayed=True, reference="s3-delayed")
flaky_storage = QueuedS3Storage(
    task="tests.testapp.tasks.BrokenUntilFixed", reference="s3-flaky"
)
fs_storage = QueuedStorage(
    local=FS,
    remote=FS,
    local_options={"location": settings.MEDIA_ROOT, "base_url": "/local/"},
    remote_options={
        "location": settings.MEDIA_ROOT + "-remote",
        "base_url": "/remote/",
    },
    reference="fs",
)


def get_fs_storage():
    """Return the file-system pair (a callable keeps its paths out of migrations)."""
    return fs_storage


class Document(models.Model):
    file = QueuedFileField(upload_to="docs", storage=s3_storage, max_length=300)


class Scratch(models.Model):
    file = QueuedFileField(upload_to="scratch", storage=s3_delete_storage)


class Deferred(models.Model):
    file = QueuedFileField(upload_to="later", storage=s3_delayed_storage)


class Flaky(models.Model):
    file = QueuedFileField(upload_to="flaky", storage=flaky_storage)


class Plain(models.Model):
    file = QueuedFileField(upload_to="plain", storage=get_fs_storage, blank=True)


def get_queued_alias():
    """Return the queued storage of the ``STORAGES`` alias ``queued``."""
    from django.core.files.storage import storages

    return storages["queued"]


class TaggedFileField(QueuedFileField):
    """A project's own subclass of the queued field."""


class Album(models.Model):
    """A second model on the file-system pair, with a subclassed field."""

    cover = TaggedFileField(upload_to="albums", storage=get_fs_storage, blank=True)
    back = models.FileField(upload_to="albums", storage=get_fs_storage, blank=True)
    sleeve = models.FileField(upload_to="sleeves", storage=get_queued_alias, blank=True)


class Archive(models.Model):
    """Rows kept in the second database, "other" (see tests.routers)."""

    file = models.FileField(upload_to="archive", storage=get_fs_storage, blank=True)
