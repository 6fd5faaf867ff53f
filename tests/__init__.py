# As a project's package does, so that code run with the test settings (the
# management commands of subprocesses, too) sends tasks through this app.
from tests.celery_app import app as celery_app

__all__ = ["celery_app"]
