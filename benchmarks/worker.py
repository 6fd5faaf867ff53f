"""Section 3: how fast a real worker moves small files, against boto3 alone.

The files are saved locally first without sending anything, then all their
transfer messages are sent at once to a ``celery worker`` process (prefork,
two processes); the clock runs from the first message until every file is
recorded as transferred. The baseline is one loop of ``put_object`` calls
on one reused boto3 client, in this process, with the same files.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

from .environment import Bench

FILE_SIZE = 10 * 1024


class BrokenTransfer(RuntimeError):
    """The worker failed a transfer or did not finish in time."""


def save_pending(bench: Bench, prefix: str, count: int, data: bytes) -> dict[str, str]:
    """Save *count* files locally without queuing them; return name: version."""
    from django.core.files.base import ContentFile
    from django.test import override_settings

    storage = bench.storage
    storage.delayed = True
    try:
        with override_settings(QUEUED_STORAGE_NAME_CHECK="state"):
            names = [
                storage.save(f"{prefix}/{i:05d}.bin", ContentFile(data))
                for i in range(count)
            ]
    finally:
        storage.delayed = False
    states = storage.state.get_many(names)
    return {name: state.version for name, state in states.items()}


def transfer_all(bench: Bench, pending: dict[str, str]) -> float:
    """Queue every file of *pending*; return the seconds until all are remote."""
    from queued_storage.state import Status

    storage = bench.storage
    waiting = list(pending)
    limit = 60.0 + 0.5 * len(waiting)
    start = time.perf_counter()
    for name, version in pending.items():
        storage.enqueue(name, version)
    while waiting:
        # Few, cheap polls, so that this process takes little CPU from the
        # worker; only the names not yet seen transferred are asked again.
        time.sleep(0.05)
        states = storage.state.get_many(waiting)
        failed = [s for s in states.values() if s and s.status == Status.FAILED]
        if failed:
            raise BrokenTransfer(f"a transfer failed: {failed[0].error}")
        waiting = [
            name
            for name, state in states.items()
            if state is None or state.status != Status.TRANSFERRED
        ]
        if waiting and time.perf_counter() - start > limit:
            raise BrokenTransfer(
                f"{len(pending) - len(waiting)} of {len(pending)} files transferred "
                f"after {limit:.0f} s; worker log:\n{bench.worker.log_text()[-3000:]}"
            )
    return time.perf_counter() - start


def put_loop(bench: Bench, prefix: str, count: int, data: bytes) -> float:
    """Return the seconds one boto3 client takes to put *count* objects."""
    client = bench.s3_client()
    bucket = bench.remote.bucket_name
    client.put_object(Bucket=bucket, Key=f"{prefix}/warm-up", Body=data)
    start = time.perf_counter()
    for i in range(count):
        client.put_object(Bucket=bucket, Key=f"{prefix}/{i:05d}.bin", Body=data)
    return time.perf_counter() - start


def throughput(bench: Bench, label: str, count: int, data: bytes) -> float:
    """Transfer *count* new files through the worker; return files per second."""
    pending = save_pending(bench, label, count, data)
    return count / transfer_all(bench, pending)


def run(bench: Bench) -> dict[str, Any]:
    bench.start_worker()
    data = os.urandom(FILE_SIZE)
    count = bench.pick(200, 1000)
    rounds = bench.pick(1, 3)
    throughput(bench, "worker/warm-up", 20, data)
    worker_rates, plain_rates = [], []
    for r in range(rounds):
        plain_rates.append(count / put_loop(bench, f"plain/{r}", count, data))
        worker_rates.append(throughput(bench, f"worker/{r}", count, data))
    worker, plain = statistics.median(worker_rates), statistics.median(plain_rates)
    return {
        "files": count,
        "file_bytes": FILE_SIZE,
        "rounds": rounds,
        "worker_files_per_s": worker_rates,
        "put_object_files_per_s": plain_rates,
        "ratio": worker / plain,
    }
