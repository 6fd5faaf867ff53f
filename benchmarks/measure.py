"""Timing and counting helpers shared by the benchmark sections.

Every figure is a median over many repetitions, and every subject is timed
in the same loop as its baseline, in a shuffled order, so that a noisy
machine slows both alike. Loops are bounded in count and in time.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

#: The seed of the shuffles, so that two runs time cases in the same order.
SEED = 20240601


@dataclass
class Case:
    """One thing to time: ``run(prepare(i))``, then ``cleanup(prepared)``.

    Only ``run`` is timed; ``prepare`` and ``cleanup`` build the input and
    remove what the run left behind.
    """

    name: str
    run: Callable[[Any], Any]
    prepare: Callable[[int], Any] = lambda i: i
    cleanup: Callable[[Any], None] = lambda prepared: None
    samples: list[float] = field(default_factory=list)


def summary(samples: list[float]) -> dict[str, Any]:
    """Return the median, the 10th and 90th percentiles and the count, in ms."""
    if not samples:
        return {"n": 0, "median_ms": None, "p10_ms": None, "p90_ms": None}
    ordered = sorted(samples)
    last = len(ordered) - 1
    return {
        "n": len(ordered),
        "median_ms": statistics.median(ordered) * 1e3,
        "p10_ms": ordered[round(0.1 * last)] * 1e3,
        "p90_ms": ordered[round(0.9 * last)] * 1e3,
    }


def interleave(
    cases: list[Case], reps: int, *, budget: float, min_reps: int = 3
) -> dict[str, dict[str, Any]]:
    """Time every case *reps* times, shuffled within each repetition.

    Stop early, after at least *min_reps* repetitions, once *budget* seconds
    have passed. Return :func:`summary` of each case by name.
    """
    shuffle = random.Random(SEED).shuffle  # noqa: S311 - not for security
    deadline = time.monotonic() + budget
    for i in range(reps):
        order = list(cases)
        shuffle(order)
        for case in order:
            prepared = case.prepare(i)
            start = time.perf_counter()
            case.run(prepared)
            case.samples.append(time.perf_counter() - start)
            case.cleanup(prepared)
        if i + 1 >= min_reps and time.monotonic() > deadline:
            break
    return {case.name: summary(case.samples) for case in cases}


def median_ms(result: dict[str, Any]) -> float:
    return float(result["median_ms"])


# Counting round trips --------------------------------------------------------


@contextmanager
def redis_round_trips() -> Iterator[list[int]]:
    """Count the requests this thread writes to any Redis connection.

    A pipeline is written at once and counts as one round trip, which is what
    it costs. The count is in the first item of the yielded list.
    """
    from redis.connection import AbstractConnection

    counter, caller = [0], threading.get_ident()
    original = AbstractConnection.send_packed_command

    def send_packed_command(self: Any, *args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() == caller:
            counter[0] += 1
        return original(self, *args, **kwargs)

    AbstractConnection.send_packed_command = send_packed_command  # type: ignore[method-assign]
    try:
        yield counter
    finally:
        AbstractConnection.send_packed_command = original  # type: ignore[method-assign]


@contextmanager
def s3_requests(*clients: Any) -> Iterator[list[str]]:
    """Record the S3 operations that *clients* send, by operation name."""
    sent: list[str] = []

    def before_send(event_name: str = "", **kwargs: Any) -> None:
        sent.append(event_name.rsplit(".", 1)[-1])

    hooked = []
    for client in {id(c): c for c in clients}.values():
        client.meta.events.register("before-send.s3", before_send)
        hooked.append(client)
    try:
        yield sent
    finally:
        for client in hooked:
            client.meta.events.unregister("before-send.s3", before_send)


def remote_clients(remote: Any) -> list[Any]:
    """Return the boto3 clients an ``S3Storage`` sends requests with."""
    return [
        remote.connection.meta.client,
        remote.unsigned_connection.meta.client,
    ]
