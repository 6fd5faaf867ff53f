"""Settings of the example project.

Everything runs without external servers: SQLite, a file-based cache shared by
the web and worker processes, and a Celery broker made of folders (kombu's
filesystem transport). All of it lives under ``var/`` (or ``EXAMPLE_VAR_DIR``).
With ``EXAMPLE_RUNNER=django_tasks`` the transfers run on Django's task
framework instead, with the database backend of django-tasks-db: the tasks are
rows of the SQLite database, ``manage.py db_worker`` runs them, and neither a
broker nor Celery is used.

The remote storage is a second folder served at ``/media/remote/``, standing in
for a cloud bucket. Set ``EXAMPLE_S3_BUCKET`` (and ``EXAMPLE_S3_ENDPOINT_URL``
for an S3-compatible server other than AWS) to send the files to S3 instead.

NOT FOR DEPLOYMENT. This is a demo for one person on 127.0.0.1: Django's
development server, SQLite, a broker of folders, uploads open to anyone who
reaches the page. The settings that matter for safety come from the
environment: ``EXAMPLE_SECRET_KEY`` (else a random key kept in
``var/secret-key``, never a key written in this file) and ``EXAMPLE_DEBUG``
(off unless set to 1). Uploads are capped at ``EXAMPLE_MAX_UPLOAD_BYTES``,
and served as downloads unless they are plain images or text
(``exampleproject/serving.py``).
"""

import os
import secrets
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("EXAMPLE_VAR_DIR", BASE_DIR / "var")).resolve()


def _secret_key() -> str:
    """Return EXAMPLE_SECRET_KEY, or this run's random key, shared by its processes.

    The web server and the worker must share the key: it signs the transfer
    messages.
    """
    if os.environ.get("EXAMPLE_SECRET_KEY"):
        return os.environ["EXAMPLE_SECRET_KEY"]
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    path = VAR_DIR / "secret-key"
    if not path.exists():
        # Written aside, then linked into place: the first process to get
        # there wins, and no process ever reads a half-written key.
        draft = VAR_DIR / f"secret-key.{os.getpid()}"
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(50))
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_text().strip()


SECRET_KEY = _secret_key()
#: "celery" (the default) or "django_tasks": what carries the transfers.
RUNNER = os.environ.get("EXAMPLE_RUNNER", "celery")
if RUNNER not in ("celery", "django_tasks"):
    raise ImproperlyConfigured(
        f"EXAMPLE_RUNNER must be celery or django_tasks, not {RUNNER!r}."
    )
DEBUG = os.environ.get("EXAMPLE_DEBUG", "0") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "queued_storage",
    "gallery",
]
if RUNNER == "django_tasks":
    INSTALLED_APPS.append("django_tasks_db")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "exampleproject.urls"
WSGI_APPLICATION = "exampleproject.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
            ],
        },
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": VAR_DIR / "db.sqlite3",
        # The web server and the worker write to the same file.
        "OPTIONS": {"timeout": 20},
    },
}

# The cache holds the state of each file; the web server and the worker must
# see the same one, so it cannot be the per-process LocMemCache.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": VAR_DIR / "cache",
    },
}

# The file-based cache unpickles what it reads (queued_storage.W010). Here it
# lives in this demo's own var/ folder, which only its own processes write;
# a deployment keeps the states in Redis with
# queued_storage.serializers.JSONSerializer instead (see docs/security.rst).
SILENCED_SYSTEM_CHECKS = ["queued_storage.W010"]

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"

# The largest upload the gallery takes, per file and per request; larger
# requests are refused before their body is read.
EXAMPLE_MAX_UPLOAD_BYTES = int(os.environ.get("EXAMPLE_MAX_UPLOAD_BYTES", 5 * 2**20))
DATA_UPLOAD_MAX_NUMBER_FILES = 10

MEDIA_URL = "/media/"
LOCAL_MEDIA_ROOT = VAR_DIR / "local"
REMOTE_MEDIA_ROOT = VAR_DIR / "remote"

S3_BUCKET = os.environ.get("EXAMPLE_S3_BUCKET", "")

if S3_BUCKET:
    REMOTE_STORAGE = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": S3_BUCKET,
            "endpoint_url": os.environ.get("EXAMPLE_S3_ENDPOINT_URL") or None,
            "region_name": os.environ.get("EXAMPLE_S3_REGION") or None,
            "access_key": os.environ.get("EXAMPLE_S3_ACCESS_KEY_ID") or None,
            "secret_key": os.environ.get("EXAMPLE_S3_SECRET_ACCESS_KEY") or None,
            "location": "example",
            "file_overwrite": False,
            # Opened from the bucket, an upload is downloaded, not shown as
            # a page (an <img> still shows an image).
            "object_parameters": {"ContentDisposition": "attachment"},
        },
    }
else:
    REMOTE_STORAGE = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {
            "location": REMOTE_MEDIA_ROOT,
            "base_url": MEDIA_URL + "remote/",
        },
    }

STORAGES = {
    "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": VAR_DIR / "media", "base_url": MEDIA_URL},
    },
    # Fast storage the upload is written to during the request.
    "local": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {
            "location": LOCAL_MEDIA_ROOT,
            "base_url": MEDIA_URL + "local/",
        },
    },
    # Slow storage the worker moves the file to.
    "remote": REMOTE_STORAGE,
    # What the gallery's model field uses: local first, remote afterwards.
    "queued": {
        "BACKEND": "queued_storage.backends.QueuedStorage",
        "OPTIONS": {
            "local": "local",
            "remote": "remote",
            "task": (
                "gallery.task_framework.slow_transfer"
                if RUNNER == "django_tasks"
                else "gallery.tasks.SlowTransfer"
            ),
            # Kept this long after the transfer; then `manage.py
            # queued_storage sweep` removes the local copy.
            "local_retention": float(os.environ.get("EXAMPLE_LOCAL_RETENTION", "2")),
        },
    },
}

if RUNNER == "django_tasks":
    # Django's task framework with its database backend: no broker, no Celery.
    # An empty QUEUES admits every queue.
    TASKS = {
        "default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": []},
    }
    QUEUED_STORAGE_RUNNER = "django_tasks"
else:
    # Celery, read by exampleproject/celery.py.
    BROKER_DIR = VAR_DIR / "broker"
    # Naming a host keeps kombu from warning that none was given.
    CELERY_BROKER_URL = "filesystem://localhost//"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
        "polling_interval": 0.2,
    }
    CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
    CELERY_TASK_IGNORE_RESULT = True
    CELERY_RESULT_BACKEND = None
    CELERY_WORKER_HIJACK_ROOT_LOGGER = False

    for folder in ("queue", "processed", "control"):
        (BROKER_DIR / folder).mkdir(parents=True, exist_ok=True)

# Retry a failed transfer soon and give up early, so that a failure shows on
# the page within seconds (the defaults retry for hours).
QUEUED_STORAGE_RETRIES = 2
QUEUED_STORAGE_RETRY_DELAY = 3

# Seconds gallery.tasks.SlowTransfer waits before it copies a file, so that
# each stage of an upload can be watched on the page. 0 copies at full speed.
EXAMPLE_TRANSFER_DELAY = float(os.environ.get("EXAMPLE_TRANSFER_DELAY", "2"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "queued_storage": {"handlers": ["console"], "level": "INFO"},
    },
}
