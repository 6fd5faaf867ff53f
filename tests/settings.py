"""Django settings of the test suite.

The services (Redis, memcached, PostgreSQL, the S3 endpoint) are started by
``tests/conftest.py`` on free loopback ports, which it passes on in the
environment variables read here; a worker process started by a test reads the
same variables, so it shares the test's broker, cache and database.
"""

import os
import tempfile

import django

from queued_storage.serializers import json_serde

ENV = os.environ.get

SECRET_KEY = ENV("QS_TEST_SECRET_KEY", "queued-storage-tests-not-secret")
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "tests.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.admin",
    "queued_storage",
    "tests.testapp",
    # Apps that read and write files through storages, used with queued ones.
    "sorl.thumbnail",
    "easy_thumbnails",
    "django_cleanup.apps.CleanupSelectedConfig",
    "tests.otherapps",
    # The database backend of Django's task framework, for the django_tasks
    # runner; the Celery runner stays the default.
    "django_tasks_db",
]
# Both thumbnail apps name their template tag library "thumbnail".
SILENCED_SYSTEM_CHECKS = ["templates.W003"]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

_WORK = ENV("QS_TEST_WORK_DIR") or tempfile.mkdtemp(prefix="qs-tests-")
MEDIA_ROOT = os.path.join(_WORK, "local")
MEDIA_URL = "/media/"
STATIC_URL = "/static/"

if ENV("QS_TEST_DB") == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": ENV("QS_TEST_PG_HOST", "127.0.0.1"),
            "PORT": ENV("QS_TEST_PG_PORT", "5432"),
            "USER": ENV("QS_TEST_PG_USER", "postgres"),
            "NAME": ENV("QS_TEST_PG_NAME", "queued_storage"),
            "TEST": {"NAME": "test_queued_storage"},
        }
    }
else:
    _DB = os.path.join(_WORK, "db.sqlite3")
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": _DB,
            # A file, not memory, so that a worker process sees the test data.
            "TEST": {"NAME": os.path.join(_WORK, "test-db.sqlite3")},
            "OPTIONS": {"timeout": 20},
        }
    }
# A second database, SQLite whatever "default" is, which holds only the rows
# of testapp.Archive (tests.routers): the orphans command must find the files
# they reference. Tests that touch it say so (databases=[..., "other"]); the
# others never create it.
DATABASES["other"] = {
    "ENGINE": "django.db.backends.sqlite3",
    "NAME": os.path.join(_WORK, "other.sqlite3"),
    "TEST": {"NAME": os.path.join(_WORK, "test-other.sqlite3")},
    "OPTIONS": {"timeout": 20},
}
DATABASE_ROUTERS = ["tests.routers.OtherDatabaseRouter"]
if ENV("QS_TEST_WORKER"):
    # A worker process uses the databases the test run created.
    for _alias in DATABASES.values():
        _alias["NAME"] = _alias["TEST"]["NAME"]

REDIS_URL = ENV("QS_TEST_REDIS_URL", "redis://127.0.0.1:6379")
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": f"{REDIS_URL}/1",
        # The state cache must not unpickle (queued_storage.W010).
        "OPTIONS": {"serializer": "queued_storage.serializers.JSONSerializer"},
    },
}
# sorl-thumbnail keeps Python objects in its cache, which the JSON state
# cache above refuses: it gets a pickling cache of its own, as a project
# whose "default" cache holds the states would give it.
CACHES["thumbnails"] = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
THUMBNAIL_CACHE = "thumbnails"
if ENV("QS_TEST_MEMCACHED"):
    CACHES["memcached"] = {
        "BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
        "LOCATION": ENV("QS_TEST_MEMCACHED"),
        "OPTIONS": {"serde": json_serde},
    }

# Django's task framework, for the django_tasks runner. An empty QUEUES
# admits every queue, per-host ones included.
# Django 5.2 has the framework from the django-tasks package.
_TASKS = "django.tasks" if django.VERSION >= (6, 0) else "django_tasks"
TASKS = {
    "default": {
        "BACKEND": f"{_TASKS}.backends.immediate.ImmediateBackend",
        "QUEUES": [],
    },
    "database": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": []},
    "dummy": {"BACKEND": f"{_TASKS}.backends.dummy.DummyBackend", "QUEUES": []},
}
QUEUED_STORAGE_TASKS_BACKEND = ENV("QS_TEST_TASKS_BACKEND", "default")

# Worker processes of the broker tests consume from the RabbitMQ node.
CELERY_BROKER_URL = ENV("QS_TEST_BROKER_URL") or f"{REDIS_URL}/0"
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": int(ENV("QS_TEST_VISIBILITY_TIMEOUT", "3600")),
    "socket_timeout": 2,
    "socket_connect_timeout": 2,
}
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# As docs/deployment.rst advises: on a lost broker connection, a task that
# acknowledges late is given back at once rather than finished unacknowledged
# (transfers acknowledge early, once their lease is held).
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
if ENV("QS_TEST_BROKER_CONFIG"):
    # Worker processes of the broker tests run docs/deployment.rst's tested
    # configuration of their broker as printed, in place of the suite's, with
    # the test's broker URL and, for Redis, its window.
    from tests.docs_blocks import broker_settings

    del CELERY_BROKER_TRANSPORT_OPTIONS, CELERY_WORKER_PREFETCH_MULTIPLIER
    del CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS
    _documented = broker_settings(ENV("QS_TEST_BROKER_CONFIG", ""))
    _documented["CELERY_BROKER_URL"] = CELERY_BROKER_URL
    if ENV("QS_TEST_VISIBILITY_TIMEOUT"):
        _window = int(ENV("QS_TEST_VISIBILITY_TIMEOUT", ""))
        _documented["CELERY_BROKER_TRANSPORT_OPTIONS"]["visibility_timeout"] = _window
    globals().update(_documented)

AWS_S3_ENDPOINT_URL = ENV("QS_TEST_S3_ENDPOINT", "http://127.0.0.1:5000")
AWS_ACCESS_KEY_ID = "testing"
AWS_SECRET_ACCESS_KEY = "testing"  # noqa: S105 - moto accepts anything
AWS_S3_REGION_NAME = "us-east-1"
AWS_STORAGE_BUCKET_NAME = ENV("QS_TEST_BUCKET", "queued-storage-tests")
AWS_QUERYSTRING_AUTH = False
AWS_DEFAULT_ACL = "public-read"
AWS_S3_FILE_OVERWRITE = False

# A worker process of the suite consuming its own queue sends the messages its
# dispatcher takes from the outbox to that queue (as the test's settings do).
QUEUED_STORAGE_QUEUE = ENV("QS_TEST_QUEUE") or None
QUEUED_STORAGE_WORKER_DISPATCH = ENV("QS_TEST_WORKER_DISPATCH", "1") == "1"
QUEUED_STORAGE_RETRY_DELAY = 1
QUEUED_STORAGE_RETRY_BACKOFF_MAX = 2
QUEUED_STORAGE_RETRIES = 2
# Worker processes of the broker tests shorten the lease and choose how long a
# retry may wait in the broker.
QUEUED_STORAGE_LEASE = float(ENV("QS_TEST_LEASE", "60"))
QUEUED_STORAGE_RETRY_COUNTDOWN_MAX = float(ENV("QS_TEST_COUNTDOWN_MAX", "300"))

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "remote_s3": {"BACKEND": "storages.backends.s3.S3Storage"},
    "queued": {
        "BACKEND": "queued_storage.backends.QueuedStorage",
        "OPTIONS": {
            "local": "django.core.files.storage.FileSystemStorage",
            "remote": "remote_s3",
        },
    },
    # Also declared in code, on a model field; its class holds the options.
    "pictures": {"BACKEND": "tests.otherapps.models.PictureStorage"},
}

if ENV("QS_TEST_IMPORT_DIR"):
    # A storage for the import command run in a subprocess on a terminal.
    STORAGES["s3-import-tty"] = {
        "BACKEND": "queued_storage.backends.QueuedS3Storage",
        "OPTIONS": {
            "local_options": {"location": ENV("QS_TEST_IMPORT_DIR")},
            "remote_options": {"location": ENV("QS_TEST_IMPORT_PREFIX", "import-tty")},
        },
    }

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"queued_storage": {"handlers": ["console"], "level": "INFO"}},
}
