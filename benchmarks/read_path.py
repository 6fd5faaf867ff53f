"""Section 2: reads of transferred files, through the proxy and on the remote.

The files are put on the S3 endpoint and recorded as transferred, as a worker
would leave them. Each proxy call is timed in the same loop as the same call
on the remote storage; the round trips of one call of each are counted.
"""

from __future__ import annotations

import secrets
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

FILES = 100
BODY = b"r" * 1024


def transferred_files(bench: Bench, *storages: Any) -> list[str]:
    """Put *FILES* files on the remote; record them transferred in *storages*."""
    from queued_storage.state import FileState, Status

    remote, client = bench.remote, bench.s3_client()
    names = [f"read/{i:03d}-{secrets.token_hex(4)}.txt" for i in range(FILES)]
    for name in names:
        key = remote._normalize_name(name)
        client.put_object(Bucket=remote.bucket_name, Key=key, Body=BODY)
        state = FileState(Status.TRANSFERRED, secrets.token_hex(8), len(BODY))
        for storage in storages:
            storage.state.record(name, state)
    return names


def behind_a_cdn(bench: Bench) -> Any:
    """Return a queued storage whose remote serves URLs from a custom domain."""
    from queued_storage.backends import QueuedStorage

    return QueuedStorage(
        local="django.core.files.storage.FileSystemStorage",
        local_options={"location": str(bench.work / "local")},
        remote="storages.backends.s3.S3Storage",
        remote_options={"custom_domain": "cdn.example.test"},
    )


def batch_cases(storage: Any, names: list[str], suffix: str = "") -> list[Case]:
    def one_by_one(i: int) -> None:
        for name in names:
            storage.url(name)

    def remote_only(i: int) -> None:
        for name in names:
            storage.remote.url(name)

    return [
        Case(f"urls_batch{suffix}", lambda i: storage.urls(names)),
        Case(f"url_loop{suffix}", one_by_one),
        Case(f"remote_url_loop{suffix}", remote_only),
    ]


def counted(bench: Bench, call: Any) -> dict[str, Any]:
    from django.db import connection

    queries: list[str] = []

    def record(execute: Any, sql: str, *args: Any) -> Any:
        queries.append(sql.split(None, 1)[0].upper())
        return execute(sql, *args)

    with (
        redis_round_trips() as redis,
        s3_requests(*remote_clients(bench.remote)) as s3,
        connection.execute_wrapper(record),
    ):
        call()
    return {"redis_round_trips": redis[0], "s3_requests": s3, "sql": queries}


def run(bench: Bench) -> dict[str, Any]:
    from django.core.cache import caches

    storage, remote, cdn = bench.storage, bench.remote, behind_a_cdn(bench)
    names = transferred_files(bench, storage, cdn)
    cache = caches["default"]

    def pick(i: int) -> str:
        return names[i % FILES]

    single = []
    for method in ("url", "exists", "size"):
        single.append(Case(f"proxy_{method}", getattr(storage, method), pick))
        single.append(Case(f"remote_{method}", getattr(remote, method), pick))
    single.append(Case("redis_round_trip", lambda i: cache.get("bench:missing-key")))
    timed = interleave(single, bench.pick(60, 600), budget=bench.pick(8, 60))

    batch = batch_cases(storage, names) + batch_cases(cdn, names, "_custom_domain")
    batched = interleave(batch, bench.pick(10, 100), budget=bench.pick(10, 90))

    counts = {}
    for method in ("url", "exists", "size"):
        counts[f"proxy_{method}"] = counted(
            bench, lambda m=method: getattr(storage, m)(names[0])
        )
        counts[f"remote_{method}"] = counted(
            bench, lambda m=method: getattr(remote, m)(names[0])
        )
    counts["urls_batch"] = counted(bench, lambda: storage.urls(names))
    # A state the cache lost: read from the ledger once, then cached again.
    cache.delete(storage.state.key(names[1]))
    counts["proxy_url_cache_miss"] = counted(bench, lambda: storage.url(names[1]))

    versus = {
        method: median_ms(timed[f"proxy_{method}"])
        / median_ms(timed[f"remote_{method}"])
        for method in ("url", "exists", "size")
    }
    return {
        "files": FILES,
        "timings": {**timed, **batched},
        "proxy_versus_remote": versus,
        "urls_speedup": median_ms(batched["url_loop"])
        / median_ms(batched["urls_batch"]),
        "urls_speedup_custom_domain": median_ms(batched["url_loop_custom_domain"])
        / median_ms(batched["urls_batch_custom_domain"]),
        # What urls() costs over the remote storage's own url() of each name.
        "urls_versus_remote_urls": {
            kind: median_ms(batched[f"urls_batch{suffix}"])
            / median_ms(batched[f"remote_url_loop{suffix}"])
            for kind, suffix in (("s3", ""), ("custom_domain", "_custom_domain"))
        },
        "counts": counts,
    }
