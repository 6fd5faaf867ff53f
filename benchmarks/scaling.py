"""Section 5: save latency and worker throughput as the ledger grows.

The ledger is filled with rows of the benchmarked storage (inserted in bulk,
as years of uploads would leave them), then the save path and the worker are
measured again at each size. Flat figures mean that no step scans the table.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from .environment import Bench
from .measure import interleave, median_ms
from .save_path import KIB, QueuedVariant, plain_case, rtt_case
from .worker import throughput


def fill_ledger(bench: Bench, rows: int) -> int:
    """Add rows of the benchmarked storage until the ledger holds *rows*."""
    from queued_storage.models import StoredFile
    from queued_storage.state import Status, name_hash

    reference = bench.storage.reference
    have = StoredFile.objects.count()
    batch = []
    for i in range(have, rows):
        name = f"filler/{i // 1000:03d}/{i:07d}-{secrets.token_hex(4)}.jpg"
        batch.append(
            StoredFile(
                storage=reference,
                name=name,
                name_hash=name_hash(name),
                status=Status.TRANSFERRED,
                version=secrets.token_hex(8),
                size=10 * KIB,
                host="filler",
            )
        )
        if len(batch) == 5000:
            StoredFile.objects.bulk_create(batch)
            batch = []
    StoredFile.objects.bulk_create(batch)
    return StoredFile.objects.count()


def run(bench: Bench) -> dict[str, Any]:
    bench.start_worker()
    data = os.urandom(10 * KIB)
    levels = bench.pick([1_000, 10_000], [1_000, 10_000, 100_000])
    files = bench.pick(100, 300)
    results = []
    for level in levels:
        rows = fill_ledger(bench, level)
        label = f"scale{level}"
        cases = [
            plain_case(bench, label, data),
            QueuedVariant(bench, "queued_state_check", label, data).case(),
            QueuedVariant(bench, "queued_remote_check", label, data).case(),
            rtt_case(bench),
        ]
        timed = interleave(cases, bench.pick(40, 300), budget=bench.pick(6, 45))
        bench.purge_queue()
        rate = throughput(bench, f"scale/{level}", files, data)
        results.append(
            {
                "ledger_rows": rows,
                "timings": timed,
                "worker_files_per_s": rate,
            }
        )
    first, last = results[0], results[-1]

    def grows(result: dict[str, Any], label: str) -> float:
        return median_ms(result["timings"][label]) / median_ms(
            result["timings"]["filesystem"]
        )

    return {
        "levels": results,
        "files_per_level": files,
        # Above 1 means slower at the largest ledger than at the smallest.
        "save_latency_growth": {
            label: grows(last, label) / grows(first, label)
            for label in ("queued_state_check", "queued_remote_check")
        },
        "worker_throughput_growth": first["worker_files_per_s"]
        / last["worker_files_per_s"],
    }
