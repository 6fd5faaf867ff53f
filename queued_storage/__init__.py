"""Queued remote storage for Django.

Save uploads to a fast local storage at once, then move them to a remote
storage (S3 or any other Django storage) with a Celery task.
"""

__version__ = "1.0.0"
