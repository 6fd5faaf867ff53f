"""Section 3: how fast a real worker moves small files, against boto3 alone.

The files are saved locally first without sending anything, then the
dispatcher sends all their transfer messages at once (small files several to
a message, as it does by default) to a ``celery worker`` process (prefork,
two processes); the clock runs from the first message until every file is
recorded as transferred, so the worker's figure includes reading each
local copy and writing the ledger and the cache. The baseline is as many
``put_object`` loops as the worker has processes, each in a process of its
own with its own boto3 client (:mod:`benchmarks.put_loops`), putting the
same number of objects of the same size.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

from .environment import Bench
from .put_loops import put_loops

FILE_SIZE = 10 * 1024
#: How many of the names still waiting one poll asks about.
POLL = 20


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


def transfer_all(
    bench: Bench, pending: dict[str, str], limit: float | None = None
) -> float:
    """Queue every file of *pending*; return the seconds until all are remote.

    Fail after *limit* seconds (by default a minute and half a second a file).
    """
    from queued_storage import dispatch
    from queued_storage.models import StoredFile
    from queued_storage.state import Status

    storage = bench.storage
    waiting = list(pending)
    limit = limit or 60.0 + 0.5 * len(waiting)
    # The worker stops taking messages while they are sent, so that the time
    # is the worker's alone, not shared with this process sending them.
    paused = consuming(bench, False)
    # As a save's outbox row: the dispatcher sends the messages, small files
    # several to one (QUEUED_STORAGE_DISPATCH_FILES).
    rows = StoredFile.objects.filter(
        storage=storage.reference, name__in=list(pending), status=Status.PENDING
    )
    rows.update(outbox=True)
    while dispatch.dispatch(batch=500, storage=storage.reference):
        pass
    start = time.perf_counter()
    if paused:
        consuming(bench, True)
    while waiting:
        # Messages are taken about in the order they were sent, so only the
        # oldest names still waiting are asked about: each poll stays cheap
        # and takes little CPU from the worker.
        states = storage.state.get_many(waiting[:POLL])
        failed = [s for s in states.values() if s and s.status == Status.FAILED]
        if failed:
            raise BrokenTransfer(f"a transfer failed: {failed[0].error}")
        left = [
            name
            for name, state in states.items()
            if state is None or state.status != Status.TRANSFERRED
        ]
        if left and time.perf_counter() - start > limit:
            raise BrokenTransfer(
                f"{len(pending) - len(waiting)} of {len(pending)} files transferred "
                f"after {limit:.0f} s; worker log:\n{bench.worker.log_text()[-3000:]}"
            )
        if len(left) == len(states):
            time.sleep(0.02)
        waiting = left + waiting[POLL:]
    return time.perf_counter() - start


def consuming(bench: Bench, on: bool) -> bool:
    """Make the worker take messages from its queue or not; return if it answered."""
    from celery import current_app
    from django.conf import settings

    control = current_app.control
    change = control.add_consumer if on else control.cancel_consumer
    replies = change(
        settings.QUEUED_STORAGE_QUEUE,
        destination=[bench.worker.nodename],
        reply=True,
        timeout=5,
    )
    return bool(replies)


def put_loop(bench: Bench, prefix: str, count: int, data: bytes) -> float:
    """Return the seconds the worker's number of put loops take for *count*."""
    jobs: list[tuple[str, str | None]] = [
        (f"{prefix}/{i:05d}.bin", None) for i in range(count)
    ]
    return put_loops(bench, jobs, bench.start_worker().concurrency, data)


def throughput(bench: Bench, label: str, count: int, data: bytes) -> float:
    """Transfer *count* new files through the worker; return files per second."""
    pending = save_pending(bench, label, count, data)
    return count / transfer_all(bench, pending)


def run(bench: Bench) -> dict[str, Any]:
    bench.start_worker()
    data = os.urandom(FILE_SIZE)
    count = bench.pick(200, 1000)
    rounds = bench.pick(1, 5)
    throughput(bench, "worker/warm-up", 20, data)
    worker_rates, plain_rates = [], []
    for r in range(rounds):
        # Each round pairs the two, so that a slower spell of this shared
        # machine slows both.
        plain_rates.append(count / put_loop(bench, f"plain/{r}", count, data))
        worker_rates.append(throughput(bench, f"worker/{r}", count, data))
    ratios = [w / p for w, p in zip(worker_rates, plain_rates, strict=True)]
    return {
        "files": count,
        "file_bytes": FILE_SIZE,
        "processes": bench.worker.concurrency,
        "rounds": rounds,
        "worker_paused_while_sending": consuming(bench, True),
        "worker_files_per_s": worker_rates,
        "put_object_files_per_s": plain_rates,
        "ratios": ratios,
        "ratio": statistics.median(ratios),
    }
