"""The baseline of the worker and the import: ``put_object`` loops in processes.

*N* processes, each with its own boto3 client, put their share of the
objects one after another, as *N* worker processes would. Each first puts
one object to warm its client up, then waits for the start signal; the time
runs from the signal until the last process has put its last object.
With files, each loop reads the file before putting it, as a transfer does.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from typing import Any

from .environment import Bench

#: How long a loop process may take to start and warm up.
START_TIMEOUT = 120.0


def _loop(
    endpoint: str,
    bucket: str,
    jobs: list[tuple[str, str | None]],
    data: bytes,
    ready: Any,
    go: Any,
    results: Any,
) -> None:
    """Put every ``(key, path)`` of *jobs*; the body is *data*, or the file."""
    import boto3

    from tests.services import base

    client = boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name=base.AWS_REGION,
        aws_access_key_id=base.AWS_ACCESS_KEY_ID,
        aws_secret_access_key=base.AWS_SECRET_ACCESS_KEY,
    )  # fmt: skip
    client.put_object(Bucket=bucket, Key=f"warm-up/{os.getpid()}", Body=b"w")
    ready.put(os.getpid())
    go.wait()
    for key, path in jobs:
        if path is None:
            body = data
        else:
            with open(path, "rb") as handle:
                body = handle.read()
        client.put_object(Bucket=bucket, Key=key, Body=body)
    results.put(time.monotonic())


def put_loops(
    bench: Bench,
    jobs: list[tuple[str, str | None]],
    processes: int,
    data: bytes = b"",
) -> float:
    """Put *jobs* (``(key, path or None)``) from *processes* loops; return seconds."""
    context = multiprocessing.get_context("spawn")
    ready, results, go = context.Queue(), context.Queue(), context.Event()
    shares = [jobs[i::processes] for i in range(processes)]
    loops = [
        context.Process(
            target=_loop,
            args=(
                bench.s3.endpoint_url,
                bench.remote.bucket_name,
                share,
                data,
                ready,
                go,
                results,
            ),
            daemon=True,
        )  # fmt: skip
        for share in shares
    ]
    for loop in loops:
        loop.start()
    try:
        for _ in loops:
            ready.get(timeout=START_TIMEOUT)
        start = time.monotonic()
        go.set()
        limit = 60.0 + 0.1 * len(jobs)
        ends = [results.get(timeout=limit) for _ in loops]
    finally:
        for loop in loops:
            loop.join(timeout=10)
            if loop.is_alive():
                loop.kill()
    return max(ends) - start
