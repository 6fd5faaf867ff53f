"""Section 1: the cost of ``QueuedStorage.save()`` over a plain local save.

Each size is saved by every variant in the same loop: the plain
``FileSystemStorage`` (the baseline), the queued storage in the default
configuration (the outbox), in the default configuration on a plain SQLite
database (no WAL, no options, as a new project has it), with each name check
sending the message from ``save()``, with the ledger on and off, and
``S3Storage`` straight to the endpoint. A Django ``RedisCache.get`` of a
missing key is timed in the same loop too, so that the overhead can be given
in Redis round trips.

Then, with a real worker node running the dispatcher in its thread, the time
from each save's commit to the start of its transfer (``dispatch_latency``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .environment import Bench
from .measure import (
    Case,
    interleave,
    median_ms,
    redis_round_trips,
    remote_clients,
    s3_requests,
)

KIB = 1024
MIB = 1024 * KIB

#: ``label: (NAME_CHECK, LEDGER, OUTBOX, ledger database)`` of each variant;
#: ``None`` is the package's default (the ``state`` check and the outbox,
#: with the ledger), whatever ``benchmarks/settings.py`` sets.
QUEUED_VARIANTS: dict[str, tuple[str | None, bool, bool | None, str]] = {
    "queued_default": (None, True, None, "default"),
    "queued_default_plain": (None, True, None, "plain"),
    "queued_remote_check": ("remote", True, False, "default"),
    "queued_state_check": ("state", True, False, "default"),
    "queued_state_check_no_ledger": ("state", False, False, "default"),
    "queued_remote_check_no_ledger": ("remote", False, False, "default"),
    "queued_state_check_outbox": ("state", True, True, "default"),
}


def sizes(bench: Bench) -> list[tuple[str, int, int, float]]:
    """Return ``(label, bytes, repetitions, budget in seconds)`` per size."""
    return [
        ("10KiB", 10 * KIB, bench.pick(40, 400), bench.pick(8, 90)),
        ("1MiB", MIB, bench.pick(12, 80), bench.pick(8, 90)),
        ("100MiB", 100 * MIB, bench.pick(2, 7), bench.pick(20, 150)),
    ]


@contextmanager
def configured(
    name_check: str | None, ledger: bool, outbox: bool | None, database: str
) -> Iterator[None]:
    from django.test import override_settings

    with override_settings(
        QUEUED_STORAGE_NAME_CHECK=name_check,
        QUEUED_STORAGE_LEDGER=ledger,
        QUEUED_STORAGE_OUTBOX=outbox,
        BENCH_LEDGER_DB=database,
    ):
        yield


class QueuedVariant:
    """Save through the queued storage under one configuration."""

    def __init__(self, bench: Bench, label: str, size: str, data: bytes) -> None:
        self.storage = bench.storage
        self.label, self.size, self.data = label, size, data
        self.settings = QUEUED_VARIANTS[label]
        self._override: Any = None

    def prepare(self, i: int) -> tuple[str, Any]:
        from django.core.files.base import ContentFile

        self._override = configured(*self.settings)
        self._override.__enter__()
        return f"save/{self.size}/{self.label}/{i}.bin", ContentFile(self.data)

    def run(self, prepared: tuple[str, Any]) -> str:
        return str(self.storage.save(*prepared))

    def cleanup(self, prepared: tuple[str, Any]) -> None:
        self._override.__exit__(None, None, None)
        path = self.storage.local.path(prepared[0])
        if os.path.exists(path):
            os.remove(path)

    def case(self) -> Case:
        return Case(self.label, self.run, self.prepare, self.cleanup)


def plain_case(bench: Bench, size: str, data: bytes) -> Case:
    from django.core.files.base import ContentFile
    from django.core.files.storage import FileSystemStorage

    plain = FileSystemStorage(location=str(bench.work / "plain"))

    def prepare(i: int) -> tuple[str, Any]:
        return f"save/{size}/plain/{i}.bin", ContentFile(data)

    def cleanup(prepared: tuple[str, Any]) -> None:
        plain.delete(prepared[0])

    return Case("filesystem", lambda p: plain.save(*p), prepare, cleanup)


def s3_case(bench: Bench, size: str, data: bytes) -> Case:
    from django.core.files.base import ContentFile

    remote = bench.remote

    def prepare(i: int) -> tuple[str, Any]:
        return f"save/{size}/s3/{i}.bin", ContentFile(data)

    def cleanup(prepared: tuple[str, Any]) -> None:
        if len(data) >= MIB:  # moto keeps objects in memory
            remote.delete(prepared[0])

    return Case("s3storage", lambda p: remote.save(*p), prepare, cleanup)


def rtt_case(bench: Bench) -> Case:
    from django.core.cache import caches

    cache = caches["default"]
    return Case("redis_round_trip", lambda i: cache.get("bench:missing-key"))


def publish_case(bench: Bench) -> Case:
    """Send one transfer message as ``save()`` does, and nothing else."""
    from queued_storage import enqueue

    storage = bench.storage
    return Case(
        "celery_publish",
        lambda i: enqueue.send(storage, f"save/publish/{i}.bin", "0" * 16, None),
    )


def count(bench: Bench, label: str, size: str, data: bytes) -> dict[str, Any]:
    """Count the round trips of one save of a queued variant."""
    from django.db import connections

    variant = QueuedVariant(bench, label, size, data)
    prepared = variant.prepare(10**6)
    connection = connections[variant.settings[3]]
    queries: list[str] = []

    def record(execute: Any, sql: str, *args: Any) -> Any:
        queries.append(sql.split(None, 1)[0].upper())
        return execute(sql, *args)

    try:
        with (
            redis_round_trips() as redis,
            s3_requests(*remote_clients(bench.remote)) as s3,
            connection.execute_wrapper(record),
        ):
            variant.run(prepared)
    finally:
        variant.cleanup(prepared)
    return {
        "redis_round_trips": redis[0], "s3_requests": s3, "sql": queries,
        "sql_statements": len(queries),
    }  # fmt: skip


def run(bench: Bench) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for size, nbytes, reps, budget in sizes(bench):
        data = os.urandom(nbytes)
        cases = [plain_case(bench, size, data), s3_case(bench, size, data)]
        cases += [
            QueuedVariant(bench, label, size, data).case() for label in QUEUED_VARIANTS
        ]
        if nbytes <= MIB:
            cases += [rtt_case(bench), publish_case(bench)]
        timed = interleave(cases, reps, budget=budget)
        for shared in ("redis_round_trip", "celery_publish"):
            if shared not in timed:
                timed[shared] = results["10KiB"]["timings"][shared]
        base, rtt = median_ms(timed["filesystem"]), median_ms(timed["redis_round_trip"])
        derived = {}
        for label in [*QUEUED_VARIANTS, "s3storage"]:
            extra = median_ms(timed[label]) - base
            derived[label] = {
                "ratio": median_ms(timed[label]) / base,
                "overhead_ms": extra,
                "overhead_round_trips": extra / rtt,
            }
        results[size] = {
            "bytes": nbytes,
            # What Celery's apply_async() of the message costs by itself.
            "publish_round_trips": median_ms(timed["celery_publish"]) / rtt,
            "timings": timed,
            "versus_filesystem": derived,
            "counts": {
                label: count(bench, label, size, data[:KIB])
                for label in QUEUED_VARIANTS
            }
            if size == "10KiB"
            else {},
        }
        bench.purge_queue()
    clear_outbox()
    results["dispatch_latency"] = dispatch_latency(bench)
    return results


def clear_outbox() -> None:
    """Take this section's saves out of the outbox: no worker is to send them."""
    from queued_storage.models import StoredFile

    for alias in ("default", "plain"):
        StoredFile.objects.using(alias).filter(name__startswith="save/").delete()


def dispatch_latency(bench: Bench) -> dict[str, Any]:
    """Time from each save's commit to the start of its transfer, in ms.

    A real worker node (prefork, two processes) runs the dispatcher in its
    thread; each save is in the default configuration, outside a
    transaction, so it has committed when ``save()`` returns. The saves come
    at random moments, about ten a second, as uploads do. The worker records
    when each transfer task starts.
    """
    import json
    import random
    import time

    from django.core.files.base import ContentFile

    from benchmarks.celery_app import START_MARKS, STARTS

    count = bench.pick(40, 300)
    marks = bench.redis_client(2)
    marks.delete(STARTS)
    flag = bench.work / START_MARKS
    flag.touch()
    storage = bench.storage
    committed: dict[str, float] = {}
    try:
        bench.start_worker()
        # Warm up: the worker's first transfers open their connections.
        warm = [
            storage.save(f"latency/warm-{i}.bin", ContentFile(b"w")) for i in range(4)
        ]
        deadline = time.monotonic() + 30
        while marks.llen(STARTS) < len(warm) and time.monotonic() < deadline:
            time.sleep(0.05)
        marks.delete(STARTS)
        # About ten saves a second, well within what the worker transfers:
        # the figure is the dispatch, not a queue building up behind it.
        for i in range(count):
            name = storage.save(f"latency/{i}.bin", ContentFile(b"l" * 1024))
            committed[name] = time.time()
            time.sleep(random.uniform(0, 0.2))  # noqa: S311 - not a secret
        deadline = time.monotonic() + 60
        while marks.llen(STARTS) < count and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        flag.unlink()
    started: dict[str, float] = {}
    for raw in marks.lrange(STARTS, 0, -1):
        name, when = json.loads(raw)
        started.setdefault(name, when)
    marks.delete(STARTS)
    samples = sorted(
        (started[name] - at) * 1000 for name, at in committed.items() if name in started
    )
    if not samples:
        return {"samples": 0, "missing": count}

    def quantile(q: float) -> float:
        return samples[min(len(samples) - 1, int(q * len(samples)))]

    return {
        "samples": len(samples),
        "missing": count - len(samples),
        "p50_ms": quantile(0.5),
        "p99_ms": quantile(0.99),
        "max_ms": samples[-1],
    }
