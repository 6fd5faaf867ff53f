"""Real servers for the test suite, started on free loopback ports.

Each class runs one server as a child process in its own temporary
directory and process group, waits until the server really answers, and
stops it again (politely first, then with SIGKILL). Servers still running
when the interpreter exits are stopped by an ``atexit`` hook. Nothing here
depends on pytest, so the classes work the same from a fixture, a script or
a Celery worker.

Usage::

    from tests.services import CeleryWorkerProcess, RedisServer, S3Server

    with RedisServer() as redis, S3Server() as s3:
        s3.make_bucket("media")
        worker = CeleryWorkerProcess(
            "tests.celery_app",
            env={"CELERY_BROKER_URL": redis.url_for(1)},
            cwd=project_root,
            pool="solo",
        ).start()
        try:
            ...  # enqueue work, then wait for it
            redis.pause()  # connections are accepted but never answered
            redis.resume()
            s3.restart()  # same endpoint_url, empty state
        finally:
            worker.stop()

``stop()`` ends the process but keeps the temporary directory, so
``start()`` brings the server back on the same port, which is what outage
tests need; ``close()`` (also called on leaving a ``with`` block) stops the
server and removes its directory.
"""

from .azure import AzuriteServer
from .base import (
    AWS_ACCESS_KEY_ID,
    AWS_REGION,
    AWS_SECRET_ACCESS_KEY,
    HOST,
    ServiceError,
    free_port,
)
from .cache_servers import MemcachedServer, RedisServer
from .celery_worker import CeleryWorkerProcess
from .ftp import FTPServer
from .gcs import GCSServer
from .postgres import PostgresServer
from .rabbitmq import RabbitMQServer
from .s3 import S3Server
from .sftp import SFTPServer
from .tasks_worker import TasksWorkerProcess

__all__ = [
    "AWS_ACCESS_KEY_ID",
    "AWS_REGION",
    "AWS_SECRET_ACCESS_KEY",
    "HOST",
    "AzuriteServer",
    "CeleryWorkerProcess",
    "FTPServer",
    "GCSServer",
    "MemcachedServer",
    "PostgresServer",
    "RabbitMQServer",
    "RedisServer",
    "S3Server",
    "SFTPServer",
    "ServiceError",
    "TasksWorkerProcess",
    "free_port",
]
