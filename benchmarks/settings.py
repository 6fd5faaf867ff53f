"""Django settings of the benchmarks.

``benchmarks/run.py`` starts the services on free loopback ports and passes
their addresses on in ``QS_BENCH_*`` environment variables, which the Celery
worker process it starts reads too, so both share one broker, cache, database
and S3 endpoint.
"""

import os
import tempfile

ENV = os.environ.get

SECRET_KEY = ENV("QS_BENCH_SECRET_KEY", "queued-storage-benchmarks")
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["queued_storage"]

WORK = ENV("QS_BENCH_WORK_DIR") or tempfile.mkdtemp(prefix="qs-bench-")
MEDIA_ROOT = os.path.join(WORK, "local")
MEDIA_URL = "/media/"

if ENV("QS_BENCH_DB") == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": ENV("QS_BENCH_PG_HOST", "127.0.0.1"),
            "PORT": ENV("QS_BENCH_PG_PORT", "5432"),
            "USER": ENV("QS_BENCH_PG_USER", "postgres"),
            "NAME": ENV("QS_BENCH_PG_NAME", "benchmarks"),
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.path.join(WORK, "ledger.sqlite3"),
            # Write-ahead logging lets the web process read while the worker
            # processes write, as a deployment on SQLite should.
            "OPTIONS": {
                "timeout": 30,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL",
            },
        }
    }

# The plain configuration: SQLite as a new project has it, no WAL, no options.
# The save section routes the ledger there for its "plain" variants.
DATABASES["plain"] = (
    {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.path.join(WORK, "plain.sqlite3"),
    }
    if ENV("QS_BENCH_DB") != "postgres"
    else dict(DATABASES["default"])
)
DATABASE_ROUTERS = ["benchmarks.routers.LedgerRouter"]
#: The alias of the database that holds the ledger (the save section changes it).
BENCH_LEDGER_DB = "default"

REDIS_URL = ENV("QS_BENCH_REDIS_URL", "redis://127.0.0.1:6379")
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": f"{REDIS_URL}/1",
        "OPTIONS": {"serializer": "queued_storage.serializers.JSONSerializer"},
    }
}

CELERY_BROKER_URL = f"{REDIS_URL}/0"
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 4
# Celery's Django fixup closes the database connection before and after every
# task unless this is set, which docs/deployment.rst advises for workers; 0
# measures the default.
CELERY_DB_REUSE_MAX = int(ENV("QS_BENCH_DB_REUSE_MAX", "1000")) or None

AWS_S3_ENDPOINT_URL = ENV("QS_BENCH_S3_ENDPOINT", "http://127.0.0.1:5000")
AWS_ACCESS_KEY_ID = "testing"
AWS_SECRET_ACCESS_KEY = ENV("QS_BENCH_AWS_SECRET", "testing")
AWS_S3_REGION_NAME = "us-east-1"
AWS_STORAGE_BUCKET_NAME = ENV("QS_BENCH_BUCKET", "queued-storage-bench")
AWS_QUERYSTRING_AUTH = False
AWS_S3_FILE_OVERWRITE = False

QUEUED_STORAGE_QUEUE = "bench"
QUEUED_STORAGE_LEDGER = ENV("QS_BENCH_LEDGER", "1") == "1"
QUEUED_STORAGE_NAME_CHECK = ENV("QS_BENCH_NAME_CHECK", "remote")

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "remote_s3": {"BACKEND": "storages.backends.s3.S3Storage"},
    "queued": {
        "BACKEND": "queued_storage.backends.QueuedStorage",
        "OPTIONS": {
            "local": "django.core.files.storage.FileSystemStorage",
            "remote": "remote_s3",
        },
    },
    # The storage of the import benchmark, with a local folder of its own.
    "bulk": {
        "BACKEND": "queued_storage.backends.QueuedStorage",
        "OPTIONS": {
            "local": "django.core.files.storage.FileSystemStorage",
            "local_options": {"location": os.path.join(WORK, "bulk")},
            "remote": "remote_s3",
        },
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"queued_storage": {"handlers": ["console"], "level": "WARNING"}},
}
