"""The Celery application that runs the transfers of the example project.

Start a worker from the ``example/`` folder with::

    celery -A exampleproject worker --pool solo
"""

import os
import time
from typing import Any

from celery import Celery
from celery.signals import task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exampleproject.settings")

app = Celery("exampleproject")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Finds queued_storage.tasks (Transfer, TransferAndDelete) in INSTALLED_APPS.
app.autodiscover_tasks()


@task_prerun.connect
def hold_transfer(sender: Any = None, **kwargs: Any) -> None:
    """Wait ``EXAMPLE_TRANSFER_DELAY`` seconds before each transfer starts.

    A transfer between two folders on one disk takes milliseconds; the pause
    keeps each upload on the local storage long enough to be seen on the page.
    """
    from django.conf import settings

    name = getattr(sender, "name", "") or ""
    if name.startswith("queued_storage.tasks."):
        time.sleep(settings.EXAMPLE_TRANSFER_DELAY)
