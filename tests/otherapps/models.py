"""A model whose image field uses a queued storage declared in code.

``PictureStorage`` holds its whole configuration in class attributes, so
that apps which rebuild a storage from its class path with no arguments
(sorl-thumbnail) get the same storage back.
"""

from django.conf import settings
from django.db import models
from django_cleanup import cleanup

from queued_storage.backends import QueuedStorage

FS = "django.core.files.storage.FileSystemStorage"


class PictureStorage(QueuedStorage):
    local = FS
    remote = FS
    local_options = {
        "location": settings.MEDIA_ROOT + "-pictures",
        "base_url": "/local/",
    }
    remote_options = {
        "location": settings.MEDIA_ROOT + "-pictures-remote",
        "base_url": "/remote/",
    }


@cleanup.select
class Picture(models.Model):
    image = models.ImageField(upload_to="pictures", storage=PictureStorage())
