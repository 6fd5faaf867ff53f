"""Start the services of a benchmark run and configure Django to use them.

Redis (cache and broker) and moto's S3 server always start, PostgreSQL with
``--db postgres``; all listen on free ports of 127.0.0.1 and stop when the run
ends. The server classes are the test suite's own (``tests/services``).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "queued-storage-bench"


@dataclass
class Bench:
    """What every section needs: the options, the services and the storages."""

    quick: bool
    work: Path
    redis: Any
    s3: Any
    db: str
    stack: ExitStack
    worker: Any = None
    notes: list[str] = field(default_factory=list)

    def pick(self, quick: Any, full: Any) -> Any:
        """Return *quick* in ``--quick`` mode, else *full*."""
        return quick if self.quick else full

    @property
    def storage(self) -> Any:
        """Return the queued storage of ``STORAGES["queued"]``."""
        from django.core.files.storage import storages

        return storages["queued"]

    @property
    def remote(self) -> Any:
        return self.storage.remote

    def s3_client(self) -> Any:
        return self.s3.client()

    def redis_client(self, db: int) -> Any:
        import redis

        return redis.Redis.from_url(f"{self.redis.url}/{db}")

    def purge_queue(self) -> None:
        """Drop the transfer messages that no worker is meant to take."""
        from django.conf import settings

        self.redis_client(0).delete(settings.QUEUED_STORAGE_QUEUE)

    def start_worker(self) -> Any:
        from tests.services import CeleryWorkerProcess

        if self.worker is None:
            worker = CeleryWorkerProcess(
                "benchmarks.celery_app",
                cwd=ROOT,
                pool="prefork",
                concurrency=2,
                queues="bench",
            )
            worker.start(timeout=60)
            self.stack.callback(worker.stop)
            self.worker = worker
        return self.worker


def start(stack: ExitStack, *, quick: bool, db: str) -> Bench:
    """Start the services, set the environment, set up Django and migrate."""
    sys.path.insert(0, str(ROOT))
    from tests.services import PostgresServer, RedisServer, S3Server

    work = Path(tempfile.mkdtemp(prefix="qs-bench-"))
    stack.callback(shutil.rmtree, work, ignore_errors=True)
    redis = stack.enter_context(RedisServer())
    s3 = stack.enter_context(S3Server())
    s3.make_bucket(BUCKET)
    env = {
        "DJANGO_SETTINGS_MODULE": "benchmarks.settings",
        "QS_BENCH_WORK_DIR": str(work),
        "QS_BENCH_REDIS_URL": redis.url,
        "QS_BENCH_S3_ENDPOINT": s3.endpoint_url,
        "QS_BENCH_BUCKET": BUCKET,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    if db == "postgres":
        postgres = stack.enter_context(PostgresServer())
        postgres.create_database("benchmarks")
        env.update(
            QS_BENCH_DB="postgres",
            QS_BENCH_PG_HOST=postgres.host,
            QS_BENCH_PG_PORT=str(postgres.port),
            QS_BENCH_PG_USER=postgres.user,
        )
    os.environ.update(env)
    import django
    from django.core.management import call_command

    django.setup()
    # As a project's package __init__ does, so that its Celery app is current.
    import benchmarks.celery_app  # noqa: F401

    call_command("migrate", verbosity=0)
    if db != "postgres":
        call_command("migrate", database="plain", verbosity=0)
    (work / "local").mkdir()
    return Bench(quick=quick, work=work, redis=redis, s3=s3, db=db, stack=stack)


def machine() -> dict[str, Any]:
    """Describe the machine and the versions the figures were taken with."""
    import boto3
    import celery
    import django
    import moto
    import storages

    cpu = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        cpu = platform.processor()
    redis_version = ""
    binary = shutil.which("redis-server")
    if binary:
        output = subprocess.run(  # noqa: S603 - a fixed local binary
            [binary, "--version"], capture_output=True, text=True, check=False
        ).stdout
        redis_version = output.split("v=", 1)[-1].split()[0] if "v=" in output else ""
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "django": django.get_version(),
        "celery": celery.__version__,
        "boto3": boto3.__version__,
        "django_storages": storages.__version__,
        "moto": moto.__version__,
        "redis_server": redis_version,
    }
