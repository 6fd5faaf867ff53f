"""Start the real services the suite needs and configure Django to use them.

Redis (cache and broker), memcached and moto's S3 server always start; with
``QUEUED_STORAGE_TEST_DB=postgres`` a PostgreSQL server starts too and holds
the test database. A service that cannot start fails the run: nothing is
skipped for want of a server.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

# The shared checks of the backend tests report their values when they fail.
pytest.register_assert_rewrite("tests.backend_roundtrip")

_services: list[Any] = []


def pytest_configure(config: pytest.Config) -> None:
    from tests.services import MemcachedServer, PostgresServer, RedisServer, S3Server

    work = tempfile.mkdtemp(prefix="qs-tests-")
    config._qs_work = work  # type: ignore[attr-defined]
    redis = RedisServer().start()
    _services.append(redis)
    memcached = MemcachedServer().start()
    _services.append(memcached)
    s3 = S3Server().start()
    _services.append(s3)
    bucket = "queued-storage-tests"
    s3.make_bucket(bucket)
    env = {
        "QS_TEST_WORK_DIR": work,
        "QS_TEST_REDIS_URL": redis.url,
        "QS_TEST_MEMCACHED": memcached.location,
        "QS_TEST_S3_ENDPOINT": s3.endpoint_url,
        "QS_TEST_BUCKET": bucket,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    if os.environ.get("QUEUED_STORAGE_TEST_DB") == "postgres":
        postgres = PostgresServer().start()
        _services.append(postgres)
        postgres.create_database("queued_storage")
        env.update(
            QS_TEST_DB="postgres",
            QS_TEST_PG_HOST=postgres.host,
            QS_TEST_PG_PORT=str(postgres.port),
            QS_TEST_PG_USER=postgres.user,
        )
    os.environ.update(env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    import django

    django.setup()
    # As a project's package __init__ does, so that the app is current.
    import tests.celery_app  # noqa: F401

    config._qs_servers = {  # type: ignore[attr-defined]
        "redis": redis,
        "memcached": memcached,
        "s3": s3,
    }


def pytest_unconfigure(config: pytest.Config) -> None:
    while _services:
        _services.pop().close()
    shutil.rmtree(getattr(config, "_qs_work", ""), ignore_errors=True)


@pytest.fixture(scope="session")
def servers(pytestconfig: pytest.Config) -> dict[str, Any]:
    """Return the running services by name: redis, memcached, s3."""
    return pytestconfig._qs_servers  # type: ignore[attr-defined,no-any-return]


#: Milliseconds the suite's RabbitMQ node lets a delivery go unacknowledged.
RABBITMQ_CONSUMER_TIMEOUT = 3000


@pytest.fixture(scope="session")
def rabbitmq() -> Iterator[Any]:
    """Start the run's RabbitMQ node, once, for the tests that ask for it.

    Its ``consumer_timeout`` is cut to three seconds, so that a transfer of
    a few seconds outlasts it.
    """
    from tests.services import RabbitMQServer

    server = RabbitMQServer(consumer_timeout=RABBITMQ_CONSUMER_TIMEOUT).start()
    _services.append(server)
    yield server


@pytest.fixture(scope="session")
def s3_client(servers: dict[str, Any]) -> Any:
    return servers["s3"].client()


@pytest.fixture(scope="session")
def celery_app() -> Any:
    from tests.celery_app import app

    return app


@pytest.fixture(scope="session")
def celery_worker(
    celery_app: Any, django_db_setup: Any, django_db_blocker: Any
) -> Iterator[Any]:
    """Run a real Celery worker, consuming from Redis, in a thread."""
    from celery.contrib.testing.worker import start_worker

    with django_db_blocker.unblock():
        with start_worker(
            celery_app, pool="solo", perform_ping_check=False, shutdown_timeout=30
        ) as worker:
            yield worker


@pytest.fixture
def fs_queued(tmp_path: Any) -> Callable[..., Any]:
    """Return a maker of queued storages between two folders of this test."""
    from queued_storage.backends import QueuedStorage

    def make(**options: Any) -> Any:
        fs = "django.core.files.storage.FileSystemStorage"
        return QueuedStorage(
            local=fs,
            remote=fs,
            local_options={"location": str(tmp_path / "local")},
            remote_options={"location": str(tmp_path / "remote")},
            **options,
        )

    return make


@pytest.fixture
def unique() -> str:
    """Return a short random string to keep file names of tests apart."""
    return uuid.uuid4().hex[:10]


def wait_for(
    predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05
) -> Any:
    """Poll *predicate* until it returns something true; fail on *timeout*."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"Gave up waiting after {timeout} s for {predicate}")
        time.sleep(interval)
