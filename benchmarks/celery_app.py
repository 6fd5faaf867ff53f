"""The Celery app of the benchmarks' worker process."""

import json
import os
import time
from pathlib import Path

from celery import Celery
from celery.signals import task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")

app = Celery("benchmarks")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

#: Key of the Redis list of ``[name, time]`` of each transfer start, written
#: while the file ``START_MARKS`` exists in the work directory.
STARTS = "bench:transfer-starts"
START_MARKS = "mark-transfer-starts"


@task_prerun.connect
def _mark_start(kwargs=None, **extra):  # type: ignore[no-untyped-def]
    """Record when a transfer starts, for the dispatch latency of the save section."""
    work = os.environ.get("QS_BENCH_WORK_DIR", "")
    if not (work and (Path(work) / START_MARKS).exists()):
        return
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(f"{settings.REDIS_URL}/2")
    try:
        kwargs = kwargs or {}
        # A message of several small files starts them one after another;
        # the latency test saves slowly enough that each pass of the
        # dispatcher has fewer files than messages, so one file a message.
        names = [kwargs.get("name")] + [f[0] for f in kwargs.get("files") or []]
        now = time.time()
        for name in names:
            if name is not None:
                client.rpush(STARTS, json.dumps([name, now]))
    finally:
        client.close()
