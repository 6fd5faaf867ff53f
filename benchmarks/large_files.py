"""Section 6: large files, against boto3's own uploads, and many at once.

One large file is uploaded in rounds by ``transfer_file()`` (the worker's
own step, MD5-verified), by boto3's ``upload_file()`` and by
``S3Storage.save()``, each in a fresh process (``benchmarks.memory``) that
also reports its peak RSS rise. Every round runs the three in a rotated
order, so that a slower spell of the shared machine falls on each alike;
the figure is the median time of each, and the ratio of the fastest
baseline's median time to the transfer's.

Then several large files are transferred at once by the benchmark's worker
(prefork, two processes), and the resident size of its processes is sampled
throughout: the rise of each process stays below what one transfer holds
in memory, so the worker's memory is bounded by its concurrency, not by the
number or size of the files. The files are sparse: they take no disk space
and are read as zeros.
"""

from __future__ import annotations

import json
import os
import secrets
import statistics
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from .environment import ROOT, Bench
from .memory import MODES

MIB = 1024**2
GIB = 1024**3
BASELINES = ("boto3_upload_file", "s3storage_save")


def upload(bench: Bench, mode: str, path: Path) -> dict[str, Any]:
    """Upload *path* in a fresh process as *mode* does; remove it again."""
    command = [sys.executable, "-m", "benchmarks.memory", mode, str(path)]
    done = subprocess.run(  # noqa: S603 - this interpreter, fixed arguments
        command, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{done.stderr[-3000:]}")
    remote, client = bench.remote, bench.s3_client()
    for name in (path.name, f"warm-{path.name}"):
        key = remote._normalize_name(name)
        client.delete_object(Bucket=remote.bucket_name, Key=key)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def one_file(bench: Bench, size: int, rounds: int) -> dict[str, Any]:
    directory = bench.work / "large"
    directory.mkdir(exist_ok=True)
    big = directory / f"large-{size // MIB}MiB.bin"
    with open(big, "wb") as handle:
        handle.truncate(size)
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    try:
        for r in range(rounds):
            order = MODES[r % len(MODES) :] + MODES[: r % len(MODES)]
            for mode in order:
                runs[mode].append(upload(bench, mode, big))
    finally:
        big.unlink()
    modes = {}
    for mode, results in runs.items():
        seconds = statistics.median(r["seconds"] for r in results)
        modes[mode] = {
            "seconds": [r["seconds"] for r in results],
            "median_seconds": seconds,
            "mib_per_s": size / MIB / seconds,
            "peak_rise_mib": max(r["peak_rise_mib"] for r in results),
        }
    fastest = min(BASELINES, key=lambda mode: modes[mode]["median_seconds"])
    return {
        "file_bytes": size,
        "rounds": rounds,
        "modes": modes,
        "fastest_baseline": fastest,
        # Above 1 means faster than the fastest baseline.
        "ratio": modes[fastest]["median_seconds"]
        / modes["transfer_file"]["median_seconds"],
    }


# Many at once ----------------------------------------------------------------


def _rss(pid: int) -> int:
    """Return the resident size of process *pid* in bytes (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    found = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as kids:
                found.extend(int(kid) for kid in kids.read().split())
    except OSError:
        pass
    return found


class Sampler(threading.Thread):
    """Sample the resident size of a process and its children until stopped."""

    def __init__(self, pid: int, every: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.halt = threading.Event()
        self.baseline: dict[int, int] = {}
        self.peak: dict[int, int] = {}
        self.peak_total = 0

    def sample(self) -> dict[int, int]:
        pids = [self.pid, *_children(self.pid)]
        return {pid: _rss(pid) for pid in pids}

    def run(self) -> None:
        while not self.halt.is_set():
            found = self.sample()
            for pid, rss in found.items():
                self.peak[pid] = max(self.peak.get(pid, 0), rss)
            self.peak_total = max(self.peak_total, sum(found.values()))
            self.halt.wait(self.every)


def many_at_once(bench: Bench, count: int, size: int) -> dict[str, Any]:
    """Transfer *count* sparse files of *size* bytes through the worker at once."""
    from queued_storage.state import FileState, Status
    from queued_storage.transfer_s3 import IN_FLIGHT

    from .worker import throughput, transfer_all

    worker = bench.start_worker()
    # Both processes load their modules and clients before the baseline.
    throughput(bench, f"many-warm-up-{secrets.token_hex(3)}", 20, b"w" * 1024)
    storage = bench.storage
    folder = f"many-{secrets.token_hex(3)}"
    (bench.work / "local" / folder).mkdir(parents=True)
    pending = {}
    for i in range(count):
        name = f"{folder}/{i:02d}.bin"
        with open(bench.work / "local" / name, "wb") as handle:
            handle.truncate(size)
        version = secrets.token_hex(8)
        storage.state.record(name, FileState(Status.PENDING, version, size))
        pending[name] = version
    sampler = Sampler(worker.pid)
    sampler.baseline = sampler.sample()
    before_total = sum(sampler.baseline.values())
    sampler.start()
    try:
        # At least 1 MiB/s, however loaded the machine.
        seconds = transfer_all(bench, pending, 120 + count * size / MIB)
    finally:
        sampler.halt.set()
        sampler.join()
    rises = {
        pid: (peak - sampler.baseline.get(pid, peak)) / MIB
        for pid, peak in sampler.peak.items()
    }
    client = bench.s3_client()
    for name in pending:
        client.delete_object(
            Bucket=bench.remote.bucket_name, Key=bench.remote._normalize_name(name)
        )
        storage.local.delete(name)
    concurrency = len(sampler.baseline) - 1
    return {
        "files": count,
        "file_bytes": size,
        "seconds": seconds,
        "worker_processes": concurrency,
        "in_flight_limit_mib": IN_FLIGHT / MIB,
        "peak_rise_per_process_mib": rises,
        "largest_process_rise_mib": max(rises.values()),
        "total_peak_rise_mib": (sampler.peak_total - before_total) / MIB,
        "bound_mib": concurrency * IN_FLIGHT / MIB,
    }


def run(bench: Bench) -> dict[str, Any]:
    size = bench.pick(16 * MIB, GIB)
    rounds = bench.pick(1, 3)
    single = one_file(bench, size, rounds)
    many = many_at_once(bench, bench.pick(2, 8), bench.pick(16 * MIB, 256 * MIB))
    return {**single, "many_at_once": many}
