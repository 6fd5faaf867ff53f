"""The example project: a small gallery that stores uploads with QueuedStorage."""

from .celery import app as celery_app

__all__ = ["celery_app"]
