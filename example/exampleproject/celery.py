"""The Celery application that runs the transfers of the example project.

Start a worker from the ``example/`` folder with::

    celery -A exampleproject worker --pool solo
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exampleproject.settings")

app = Celery("exampleproject")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Finds queued_storage.tasks (Transfer, TransferAndDelete) and gallery.tasks.
app.autodiscover_tasks()
