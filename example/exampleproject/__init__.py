"""The example project: a small gallery that stores uploads with QueuedStorage.

With the Celery runner (the default), the Celery app is loaded with the
project, as Celery's Django guide asks; with ``EXAMPLE_RUNNER=django_tasks``
Celery is never imported.
"""

import os

if os.environ.get("EXAMPLE_RUNNER", "celery") == "celery":
    from .celery import app as celery_app

    __all__ = ["celery_app"]
